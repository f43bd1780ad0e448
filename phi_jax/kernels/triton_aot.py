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
   package (requirements-test.txt pins it) down to PTX and a cubin for the named
   architecture (sm_80, sm_90, ...), and reports the cubin's resources: registers per
   thread, spill bytes, shared memory, and how many programs fit on one SM.

Caveat: XLA compiles with its own pinned Triton, not the `triton` wheel, so register and
spill counts here are a close estimate of what runs, not the exact number (same
frontend IR, same passes up to version drift; ptxas versions may differ too). Speed is
not measured here at all: that needs the GPU (bench/attention.py).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
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


def require_triton():
  """The `triton` module, or an ImportError saying how to install it."""
  try:
    import triton  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("ahead-of-time Triton compilation needs the `triton` package "
                      "(pinned in requirements-test.txt: `make test` installs it)") from e
  return triton


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


_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def _ptxas_report(ptx: str, capability: int) -> tuple[int, int, int]:
  """(registers, spill store bytes, spill load bytes) from `ptxas -v` on `ptx`, with the
  ptxas that triton itself uses for this architecture."""
  from triton.backends.nvidia import compiler as nvidia  # pylint: disable=g-import-not-at-top

  ptxas = nvidia.get_ptxas(capability).path
  arch = nvidia.sm_arch_from_capability(capability)
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "kernel.ptx")
    with open(path, "w") as f:
      f.write(ptx)
    result = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", path, "-o",
                             os.path.join(tmp, "kernel.cubin")],
                            capture_output=True, text=True, check=False)
  log = result.stdout + result.stderr
  registers, spills = _REGISTERS.search(log), _SPILLS.search(log)
  if result.returncode or not registers or not spills:
    raise RuntimeError(f"ptxas ({ptxas}, {arch}) failed or printed no resource report:\n"
                       f"{log[-2000:]}")
  return int(registers.group(1)), int(spills.group(1)), int(spills.group(2))


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

  Raises whatever Triton raises when it cannot compile the IR (that is the point:
  such a kernel would fail the same way inside XLA).
  """
  if capability not in SM_LIMITS:
    raise ValueError(f"compile_kernel: capability {capability} not in {sorted(SM_LIMITS)}")
  triton = require_triton()
  from triton.backends.compiler import GPUTarget  # pylint: disable=g-import-not-at-top

  # triton >= 3.9 warns when this is unset; fused multiply-add is what XLA's Triton does.
  os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, f"{kernel.name}.ttir")  # triton.compile picks the
    with open(path, "w") as f:                       # frontend from the suffix
      f.write(kernel.ir)
    compiled = triton.compile(path, target=GPUTarget("cuda", capability, 32),
                              options=dict(num_warps=kernel.num_warps,
                                           num_stages=kernel.num_stages))
  registers, spill_stores, spill_loads = _ptxas_report(compiled.asm["ptx"], capability)
  shared = int(compiled.metadata.shared)
  return KernelResources(
      name=kernel.name, capability=capability, num_warps=kernel.num_warps,
      num_stages=kernel.num_stages, registers=registers, spill_store_bytes=spill_stores,
      spill_load_bytes=spill_loads, shared_bytes=shared,
      programs_per_sm=_programs_per_sm(capability, kernel.num_warps, registers, shared))


def compile_all(fn: Callable, *args,
                capabilities: Sequence[int] = (90,)) -> list[KernelResources]:
  """`compile_kernel` for every Triton kernel of `fn(*args)` and every capability."""
  kernels = triton_kernels(fn, *args)
  if not kernels:
    raise ValueError("compile_all: the function lowers to no Triton kernel (did the "
                     "kernel choose interpret mode? pass platform='gpu')")
  return [compile_kernel(k, c) for c in capabilities for k in kernels]
