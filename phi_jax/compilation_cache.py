"""JAX's persistent compilation cache: compiled programs kept on disk between processes.

A training step of phi-1 or the server's decode steps take seconds to minutes to
compile on a GPU or TPU, and every process start compiles them again. With a cache
directory, XLA's output is stored under a key of the program, the compiler options,
the devices and the jax/jaxlib version, and a later process with the same key loads it
instead of compiling (a changed program or upgrade is simply a new key). Safe to share
between the processes of a job and between runs; delete the directory to reclaim space.

`enable(directory)` applies to the compilations after it (the runner and
`phi-jax-serve` call it at start-up, before any).
"""

from __future__ import annotations

import os

import jax
from jax.experimental.compilation_cache import compilation_cache as jax_cache

# Programs that compile faster than this are not stored (JAX's own default): the many
# small helper jits would fill the directory and cost more to read than to compile.
MIN_COMPILE_TIME_S = 1.0


def enable(directory: str, *, min_compile_time_s: float = MIN_COMPILE_TIME_S) -> str:
  """Stores and reuses this process's compiled programs under `directory` (created when
  missing). Returns the absolute directory; OSError naming it when it cannot be used."""
  if min_compile_time_s < 0:
    raise ValueError(f"min_compile_time_s must be >= 0, got {min_compile_time_s}")
  path = os.path.abspath(os.path.expanduser(directory))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise OSError(e.errno, f"compilation cache {path}: cannot create it: "
                           f"{e.strerror or e}") from e
  if not os.access(path, os.W_OK | os.X_OK):
    raise PermissionError(f"compilation cache {path}: the directory is not writable")
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
  # JAX decides once per process whether it uses the cache, at its first compilation;
  # a reset makes the next compilation decide again, with this directory.
  jax_cache.reset_cache()
  return path


def directory() -> str | None:
  """The directory in use, or None when the cache is off."""
  return jax.config.jax_compilation_cache_dir or None
