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

import contextlib
import io
import json
import os
import re
import sys

_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_REGISTERS = re.compile(r"Used (\d+) registers")


def resources_from_ptxas_log(log: str) -> tuple[int, int, int]:
  """(registers, spill store bytes, spill load bytes) from a `ptxas -v` log."""
  registers, spills = _REGISTERS.search(log), _SPILLS.search(log)
  if not registers or not spills:
    raise RuntimeError(f"ptxas printed no resource report:\n{log[-2000:]}")
  return int(registers.group(1)), int(spills.group(1)), int(spills.group(2))


def compile_ir(path: str, capability: int, num_warps: int, num_stages: int) -> dict:
  """Compiles the Triton IR file at `path` (suffix .ttir) for sm_<capability>.

  Registers and spills come from the `ptxas -v` run inside triton's own compilation
  (its exact flags), whose log triton prints when TRITON_DUMP_PTXAS_LOG is set; always
  compiling (no cache hit) guarantees that run happens.
  """
  # triton >= 3.9 warns when this is unset; fused multiply-add is what XLA's Triton does.
  os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
  os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
  os.environ["TRITON_ALWAYS_COMPILE"] = "1"
  import triton  # pylint: disable=g-import-not-at-top
  from triton.backends.compiler import GPUTarget  # pylint: disable=g-import-not-at-top

  log = io.StringIO()
  with contextlib.redirect_stdout(log):
    compiled = triton.compile(path, target=GPUTarget("cuda", capability, 32),
                              options=dict(num_warps=num_warps, num_stages=num_stages))
  registers, spill_stores, spill_loads = resources_from_ptxas_log(log.getvalue())
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
