"""The backend a program is traced for: jax's default backend, unless told otherwise.

Code that picks an implementation by backend (the `auto` attention choice, the Pallas
kernel's Triton/Mosaic/interpret variant) asks `target.backend()` instead of
`jax.default_backend()`, so a program can be traced and compiled on this machine for
devices it does not have (`phi_jax.compile_only`):

    with target.compiling_for("gpu"):
      jax.jit(step).lower(*args_on_compile_only_gpu_devices).compile()
"""

from __future__ import annotations

import contextlib
import contextvars

import jax

_BACKENDS = ("cpu", "gpu", "tpu")
_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "phi_jax_target_backend", default=None)


def backend() -> str:
  """'cpu', 'gpu' or 'tpu': the `compiling_for` backend if one is set, else jax's default
  backend ('cuda' and 'rocm' count as 'gpu')."""
  chosen = _TARGET.get() or jax.default_backend()
  return "gpu" if chosen in ("cuda", "rocm") else chosen


@contextlib.contextmanager
def compiling_for(name: str):
  """Within the block, `backend()` is `name` ('cpu', 'gpu' or 'tpu'). Only tracing sees
  it: jit's cache does not, so trace (lower) inside the block."""
  if name not in _BACKENDS:
    raise ValueError(f"compiling_for: backend {name!r} is not one of {_BACKENDS}")
  token = _TARGET.set(name)
  try:
    yield
  finally:
    _TARGET.reset(token)
