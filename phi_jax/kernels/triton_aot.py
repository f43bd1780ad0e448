"""Compile phi_jax's Pallas GPU kernels ahead of time, on any machine (no GPU, no driver).

On a GPU, a Pallas kernel reaches XLA as Triton IR inside a custom call
(`__gpu$xla.gpu.triton`), and XLA compiles it with its own copy of Triton when the
program is compiled. Without a GPU that step never runs: a kernel that Triton rejects,
that spills registers, or that needs more shared memory than the chip has would only
show up on the first GPU it meets. This module closes that gap:

1. `triton_kernels(fn, *args)` lowers `fn` for CUDA from any host
   (`jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",))`) and pulls out every
   Triton kernel: its name, Triton IR (text), `num_warps` and `num_stages`.
2. `compile_kernel(kernel, capability)` compiles that IR with the open-source `triton`
   package (requirements-triton.txt pins it; `make test` installs it into TRITON_DIR,
   and it runs in a child process, see triton_worker.py) down to PTX and a cubin for
   the named architecture (sm_80, sm_90, ...), and reports the resources: registers per
   thread, spill bytes, shared memory, and how many programs fit on one SM.

Caveat: XLA compiles with its own pinned Triton, not the `triton` wheel, so register and
spill counts here are a close estimate of what runs, not the exact number (same
frontend IR, same passes up to version drift; ptxas versions may differ too).
`phi_jax.compile_only` runs XLA's own compiler for a described GPU, which shows that
XLA accepts the kernels and that they fit its shared memory, but reports no registers.
Speed is not measured here at all: that needs the GPU (bench/attention.py).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence

import jax

TRITON_CALL_TARGET = "__gpu$xla.gpu.triton"

# Per-SM limits of the architectures phi_jax targets (CUDA programming guide, "Technical
# Specifications per Compute Capability"): shared memory one program may use (opt-in
# maximum) and per SM, 32-bit registers per SM, resident threads per SM.
SM_LIMITS = {
    80: dict(shared_per_program=163 * 1024, shared_per_sm=164 * 1024,
             registers_per_sm=65536, threads_per_sm=2048),  # A100
    86: dict(shared_per_program=99 * 1024, shared_per_sm=100 * 1024,
             registers_per_sm=65536, threads_per_sm=1536),  # RTX 30xx, A10, A40
    89: dict(shared_per_program=99 * 1024, shared_per_sm=100 * 1024,
             registers_per_sm=65536, threads_per_sm=1536),  # L4, L40, RTX 40xx
    90: dict(shared_per_program=227 * 1024, shared_per_sm=228 * 1024,
             registers_per_sm=65536, threads_per_sm=2048),  # H100, H200
}
_REGISTER_ALLOCATION_UNIT = 256  # registers are allocated per warp in units of 256
_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "triton_worker.py")
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Where `make test` installs the `triton` package: outside the venv's site-packages, since
# torch imports triton whenever it can, and triton next to TensorFlow in one process
# crashes. Only triton_worker.py's process puts it on its path.
TRITON_DIR = os.environ.get("PHI_JAX_TRITON_DIR", os.path.join(_REPO_ROOT, ".venv", "triton"))


@dataclasses.dataclass(frozen=True)
class TritonKernel:
  """One Pallas kernel as XLA would receive it on a GPU.

  Attributes:
    name: the kernel's name (`pallas_call(name=...)`).
    ir: its Triton IR, MLIR text (`tt` dialect).
    num_warps, num_stages: the launch and pipelining parameters it was lowered with.
  """

  name: str
  ir: str
  num_warps: int
  num_stages: int


@dataclasses.dataclass(frozen=True)
class KernelResources:
  """What one compiled kernel needs from an SM.

  Attributes:
    name, num_warps, num_stages: as in `TritonKernel`.
    capability: the compute capability compiled for (90 = sm_90, H100).
    registers: 32-bit registers per thread (ptxas caps them at 255).
    spill_store_bytes, spill_load_bytes: register spills to local memory per thread
      (0 for a kernel that fits in registers).
    shared_bytes: shared memory per program (Triton's staging buffers for the dots and
      the software pipeline).
    programs_per_sm: how many programs (CUDA blocks) can be resident on one SM, limited
      by registers, shared memory and threads.
  """

  name: str
  capability: int
  num_warps: int
  num_stages: int
  registers: int
  spill_store_bytes: int
  spill_load_bytes: int
  shared_bytes: int
  programs_per_sm: int

  def problems(self) -> list[str]:
    """Why this kernel would fail or run badly on its architecture (empty: none)."""
    out = []
    limit = SM_LIMITS[self.capability]["shared_per_program"]
    if self.shared_bytes > limit:
      out.append(f"{self.name}: needs {self.shared_bytes} B of shared memory, over "
                 f"sm_{self.capability}'s {limit} B per program (it would not launch)")
    if self.spill_store_bytes or self.spill_load_bytes:
      out.append(f"{self.name}: spills registers ({self.spill_store_bytes} B stored, "
                 f"{self.spill_load_bytes} B loaded per thread) with {self.num_warps} warps "
                 f"on sm_{self.capability}")
    if self.programs_per_sm < 1:
      out.append(f"{self.name}: not even one program fits on an sm_{self.capability} SM")
    return out


def triton_version() -> str:
  """The version of the `triton` package in TRITON_DIR (read without importing it), or
  an ImportError saying how to install it."""
  for dist in importlib.metadata.distributions(path=[TRITON_DIR]):
    if dist.metadata["Name"] == "triton":
      return dist.version
  raise ImportError(f"ahead-of-time Triton compilation needs the `triton` package in "
                    f"{TRITON_DIR}: `make test` installs it there (requirements-triton.txt), "
                    f"or `pip install --no-deps --target {TRITON_DIR} -r requirements-triton.txt`")


def triton_kernels(fn: Callable, *args) -> list[TritonKernel]:
  """The Triton kernels XLA would compile for `fn(*args)` on a CUDA GPU, in program order.

  Args:
    fn: any jax-traceable function (jit, grad, vmap... of code using Pallas kernels).
      Kernels that pick their backend from the device must be told it explicitly
      (phi_jax's `flash_attention(platform='gpu')`): on a CPU host they would otherwise
      choose interpret mode, which lowers to plain XLA ops.
    *args: arrays or `jax.ShapeDtypeStruct`s.
  """
  from jax._src.lib.mlir import ir  # pylint: disable=g-import-not-at-top
  from jaxlib.triton import dialect as triton_dialect  # pylint: disable=g-import-not-at-top

  lowered = jax.jit(fn).trace(*args).lower(lowering_platforms=("cuda",))
  module = lowered.compiler_ir("stablehlo")
  kernels = []

  def visit(op):
    if op.name == "stablehlo.custom_call" and (
        ir.StringAttr(op.attributes["call_target_name"]).value == TRITON_CALL_TARGET):
      config = ir.DictAttr(op.attributes["mhlo.backend_config"])
      bytecode = ir.StringAttr(config["ir"]).value_bytes
      with ir.Context() as context:
        triton_dialect.register_dialect(context)
        text = str(ir.Module.parse(bytecode))
      kernels.append(TritonKernel(
          name=ir.StringAttr(config["name"]).value, ir=text,
          num_warps=ir.IntegerAttr(config["num_warps"]).value,
          num_stages=ir.IntegerAttr(config["num_stages"]).value))
    for region in op.regions:
      for block in region.blocks:
        for child in block.operations:
          visit(child.operation)

  visit(module.operation)
  return kernels


def _programs_per_sm(capability: int, num_warps: int, registers: int, shared: int) -> int:
  limits = SM_LIMITS[capability]
  threads = 32 * num_warps
  per_warp = -(-registers * 32 // _REGISTER_ALLOCATION_UNIT) * _REGISTER_ALLOCATION_UNIT
  by_registers = limits["registers_per_sm"] // (per_warp * num_warps)
  by_threads = limits["threads_per_sm"] // threads
  by_shared = limits["shared_per_sm"] // shared if shared else by_threads
  return min(by_registers, by_threads, by_shared)


def compile_kernel(kernel: TritonKernel, capability: int = 90) -> KernelResources:
  """Compiles `kernel` with the `triton` package for sm_<capability>; its resources.

  Triton runs in a child process (`triton_worker.py`): its native library must not
  share a process with jaxlib's or TensorFlow's. Raises RuntimeError with Triton's or
  ptxas's message when the kernel does not compile (as it would fail inside XLA).
  """
  if capability not in SM_LIMITS:
    raise ValueError(f"compile_kernel: capability {capability} not in {sorted(SM_LIMITS)}")
  triton_version()
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, f"{kernel.name}.ttir")  # triton.compile picks the
    with open(path, "w") as f:                       # frontend from the suffix
      f.write(kernel.ir)
    env = dict(os.environ, PYTHONPATH=TRITON_DIR)
    result = subprocess.run(
        [sys.executable, _WORKER, path, str(capability), str(kernel.num_warps),
         str(kernel.num_stages)], capture_output=True, text=True, check=False, env=env)
  if result.returncode:
    raise RuntimeError(f"Triton could not compile {kernel.name} for sm_{capability} "
                       f"({kernel.num_warps} warps, {kernel.num_stages} stages):\n"
                       f"{result.stderr.strip()[-3000:]}")
  try:
    report = json.loads(result.stdout.strip().splitlines()[-1])
  except (IndexError, json.JSONDecodeError) as e:
    raise RuntimeError(f"triton_worker printed no JSON report for {kernel.name}: "
                       f"{result.stdout[-500:]!r} {result.stderr[-500:]!r}") from e
  return KernelResources(
      name=kernel.name, capability=capability, num_warps=kernel.num_warps,
      num_stages=kernel.num_stages,
      programs_per_sm=_programs_per_sm(capability, kernel.num_warps, report["registers"],
                                       report["shared_bytes"]),
      **report)


def flash_attention_gradient(*, seq: int = 2048, head_dim: int = 64, dtype="bfloat16",
                             segments: bool = False, dropout: bool = False,
                             block_sizes=None, batch: int = 8, heads: int = 32,
                             platform: str = "gpu"):
  """(fn, args): the gradient of phi_jax's flash attention w.r.t. q, k, v, at phi-1's
  batch x heads by default; lowering it yields the forward, dK/dV and dQ kernels.

  segments: pass segment ids; dropout: attention dropout 0.1 (as phi-1 pretrains);
  platform: the kernel variant, 'gpu' (Triton) or 'tpu' (Mosaic).
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from phi_jax import kernels  # pylint: disable=g-import-not-at-top

  qkv = jax.ShapeDtypeStruct((batch, seq, heads, head_dim), jnp.dtype(dtype))
  segment_ids = jax.ShapeDtypeStruct((batch, seq), jnp.int32)

  def loss(q, k, v, segment_ids):
    out = kernels.flash_attention(
        q, k, v, q_segment_ids=segment_ids if segments else None,
        kv_segment_ids=segment_ids if segments else None, platform=platform,
        dropout_rate=0.1 if dropout else 0.0,
        dropout_rng=jax.random.key(0) if dropout else None, block_sizes=block_sizes)
    return out.astype(jnp.float32).sum()

  return jax.grad(loss, argnums=(0, 1, 2)), (qkv, qkv, qkv, segment_ids)


def compile_all(fn: Callable, *args,
                capabilities: Sequence[int] = (90,)) -> list[KernelResources]:
  """`compile_kernel` for every Triton kernel of `fn(*args)` and every capability."""
  kernels = triton_kernels(fn, *args)
  if not kernels:
    raise ValueError("compile_all: the function lowers to no Triton kernel (did the "
                     "kernel choose interpret mode? pass platform='gpu')")
  return [compile_kernel(k, c) for c in capabilities for k in kernels]
