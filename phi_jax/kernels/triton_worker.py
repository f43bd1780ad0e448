"""Compiles one Triton IR file with the `triton` package and prints its resources as JSON.

Run as a script by `phi_jax.kernels.triton_aot`, in a process of its own:

    python triton_worker.py KERNEL.ttir CAPABILITY NUM_WARPS NUM_STAGES

It imports nothing but the standard library and triton. Triton's native library carries
its own LLVM and MLIR, and loading it into a process that already holds jaxlib's or
TensorFlow's crashes (a segmentation fault at import, seen under pytest), so it never
shares a process with them.

Prints one JSON object: {"shared_bytes", "registers", "spill_store_bytes",
"spill_load_bytes"}. Exits non-zero, with Triton's or ptxas's message on stderr, when
the kernel does not compile.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def ptxas_report(ptx: str, capability: int) -> tuple[int, int, int]:
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


def compile_ir(path: str, capability: int, num_warps: int, num_stages: int) -> dict:
  """Compiles the Triton IR file at `path` (suffix .ttir) for sm_<capability>."""
  # triton >= 3.9 warns when this is unset; fused multiply-add is what XLA's Triton does.
  os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
  import triton  # pylint: disable=g-import-not-at-top
  from triton.backends.compiler import GPUTarget  # pylint: disable=g-import-not-at-top

  compiled = triton.compile(path, target=GPUTarget("cuda", capability, 32),
                            options=dict(num_warps=num_warps, num_stages=num_stages))
  registers, spill_stores, spill_loads = ptxas_report(compiled.asm["ptx"], capability)
  return dict(shared_bytes=int(compiled.metadata.shared), registers=registers,
              spill_store_bytes=spill_stores, spill_load_bytes=spill_loads)


def main(argv: list[str]) -> int:
  if len(argv) != 4:
    print(__doc__, file=sys.stderr)
    return 2
  path, capability, num_warps, num_stages = argv[0], *map(int, argv[1:])
  print(json.dumps(compile_ir(path, capability, num_warps, num_stages)))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
