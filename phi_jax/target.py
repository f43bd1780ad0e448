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
_DEVICE_KIND: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "phi_jax_target_device_kind", default=None)


def backend() -> str:
  """'cpu', 'gpu' or 'tpu': the `compiling_for` backend if one is set, else jax's default
  backend ('cuda' and 'rocm' count as 'gpu')."""
  chosen = _TARGET.get() or jax.default_backend()
  return "gpu" if chosen in ("cuda", "rocm") else chosen


def device_kind() -> str | None:
  """The kind of device traced for ("NVIDIA H100 80GB HBM3"): the `compiling_for` one
  if given, else that of jax's first device of `backend()` (None if there is none)."""
  if _TARGET.get() is not None:
    return _DEVICE_KIND.get()
  try:
    return jax.devices()[0].device_kind
  except RuntimeError:
    return None


@contextlib.contextmanager
def compiling_for(name: str, kind: str | None = None):
  """Within the block, `backend()` is `name` ('cpu', 'gpu' or 'tpu') and `device_kind()`
  is `kind`. Only tracing sees them: jit's cache does not, so trace (lower) inside the
  block."""
  if name not in _BACKENDS:
    raise ValueError(f"compiling_for: backend {name!r} is not one of {_BACKENDS}")
  token, kind_token = _TARGET.set(name), _DEVICE_KIND.set(kind)
  try:
    yield
  finally:
    _TARGET.reset(token)
    _DEVICE_KIND.reset(kind_token)
