"""What phi_jax's Pallas GPU kernels need from an SM, compiled ahead of time without a GPU.

Lowers phi_jax's flash attention (forward, dK/dV and dQ kernels) for CUDA at phi-1's
shapes, compiles each Triton kernel with the `triton` package for the chosen
architecture (`phi_jax.kernels.triton_aot`), and reports per kernel: registers per
thread, register spills, shared memory and programs per SM. By default it compiles
the default block sizes (`kernels.DEFAULT_BLOCK_SIZES['gpu']`); `--sweep` also compiles
a grid of candidate tiles and warp counts, the data the defaults were chosen from
(largest tiles that never spill; docs/attention.md).

    .venv/bin/python bench/triton_resources.py                 # defaults, sm_90, head_dim 64
    .venv/bin/python bench/triton_resources.py --sweep --capability=90,80
    .venv/bin/python bench/triton_resources.py --head_dim=128 --variants=plain

Runs on any machine (no GPU or CUDA driver needed). Each compiled kernel is a row of
the printed table and of BENCHMARKS.md (unless --no_record). These are compiler
outputs, not timings: speed needs the GPU (bench/attention.py). XLA compiles the same
Triton IR with its own pinned Triton, so the numbers are a close estimate, not exact.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from bench import record  # noqa: E402  pylint: disable=g-import-not-at-top

SECTION = "## bench/triton_resources.py: Pallas GPU kernels compiled ahead of time"
COLUMNS = ("date", "machine", "jax", "triton", "arch", "seq", "head_dim", "dtype",
           "variant", "kernel", "tile (q x kv)", "warps", "stages", "registers",
           "spill st/ld B", "shared KiB", "programs/SM", "default")
INTRO = """
Each of phi_jax's three flash-attention kernels (fwd, dkv, dq), lowered for CUDA at
batch 8 x 32 heads and compiled by the `triton` package for the named architecture, on
a machine without a GPU. registers: per thread (255 is ptxas's cap); spill st/ld:
bytes per thread stored to / loaded from local memory because registers ran out;
programs/SM: resident programs per SM by registers, shared memory and threads. Variant:
`plain` (causal only), `dropout` (attention dropout, as phi-1 trains), `segments`
(packed documents), `both`. Compiler outputs, not timings; XLA's own Triton may differ.

""" + record.table_header(COLUMNS)

VARIANTS = {"plain": (False, False), "dropout": (False, True), "segments": (True, False),
            "both": (True, True)}  # name -> (segment ids, dropout)
# Sweep candidates: (q rows, kv rows) per kernel, compiled side by side at each warp count.
FORWARD_TILES = ((64, 64), (128, 32), (128, 64), (128, 128))
DKV_TILES = ((32, 64), (64, 64), (32, 128), (64, 128))
DQ_TILES = ((64, 64), (128, 32), (128, 64), (64, 128))
KERNELS = ("fwd", "dkv", "dq")


@dataclasses.dataclass(frozen=True)
class Row:
  capability: int
  variant: str
  kernel: str
  tile: tuple[int, int]
  default: bool
  resources: object  # triton_aot.KernelResources


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--capability", default="90",
                      help="comma-separated compute capabilities (90 = H100/H200, 80 = A100)")
  parser.add_argument("--seq", type=int, default=2048)
  parser.add_argument("--head_dim", type=int, default=64)
  parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
  parser.add_argument("--variants", default="plain,dropout,both",
                      help=f"comma-separated subset of {tuple(VARIANTS)}")
  parser.add_argument("--sweep", action="store_true",
                      help="also compile the candidate tiles at 4 and 8 warps")
  parser.add_argument("--stages", type=int, default=2, help="Triton num_stages for the sweep")
  parser.add_argument("--no_record", action="store_true",
                      help="print the table but do not append rows to BENCHMARKS.md")
  args = parser.parse_args(argv)
  from phi_jax.kernels import triton_aot  # pylint: disable=g-import-not-at-top
  try:
    args.capability = [int(c) for c in args.capability.split(",") if c]
  except ValueError:
    parser.error(f"--capability: integers like 90,80, got {args.capability!r}")
  for capability in args.capability:
    if capability not in triton_aot.SM_LIMITS:
      parser.error(f"--capability {capability}: known {sorted(triton_aot.SM_LIMITS)}")
  args.variants = [v for v in args.variants.split(",") if v]
  for name in args.variants:
    if name not in VARIANTS:
      parser.error(f"--variants: unknown {name!r}; known: {tuple(VARIANTS)}")
  return args


def candidates(args: argparse.Namespace):
  """(BlockSizes, is_default) pairs to compile; a sweep zips the three kernels' tiles."""
  from phi_jax import kernels  # pylint: disable=g-import-not-at-top
  default = kernels.default_block_sizes("gpu", args.head_dim)
  out = [(default, True)]
  if args.sweep:
    for warps, tiles in itertools.product((4, 8), zip(FORWARD_TILES, DKV_TILES, DQ_TILES)):
      (bq, bk), (bq_dkv, bk_dkv), (bq_dq, bk_dq) = tiles
      out.append((kernels.BlockSizes(
          block_q=bq, block_kv=bk, block_q_dkv=bq_dkv, block_kv_dkv=bk_dkv, block_q_dq=bq_dq,
          block_kv_dq=bk_dq, warps_fwd=warps, warps_dkv=warps, warps_dq=warps,
          num_stages=args.stages), False))
  return out


def compile_variant(blocks, variant: str, args: argparse.Namespace) -> list:
  """KernelResources of fwd, dkv, dq (per capability) for one BlockSizes and variant."""
  from phi_jax.kernels import triton_aot  # pylint: disable=g-import-not-at-top

  segments, dropout = VARIANTS[variant]
  fn, shapes = triton_aot.flash_attention_gradient(
      seq=args.seq, head_dim=args.head_dim, dtype=args.dtype, segments=segments,
      dropout=dropout, block_sizes=blocks)
  return triton_aot.compile_all(fn, *shapes, capabilities=args.capability)


def _tile(blocks, kernel: str) -> tuple[int, int]:
  return {"fwd": (blocks.block_q, blocks.block_kv),
          "dkv": (blocks.block_q_dkv, blocks.block_kv_dkv),
          "dq": (blocks.block_q_dq, blocks.block_kv_dq)}[kernel]


def run(args: argparse.Namespace) -> list[Row]:
  rows = []
  for variant in args.variants:
    for blocks, is_default in candidates(args):
      for resources in compile_variant(blocks, variant, args):
        kernel = resources.name.rsplit("_", 1)[-1]
        row = Row(resources.capability, variant, kernel, _tile(blocks, kernel), is_default,
                  resources)
        rows.append(row)
        print("  " + " | ".join(str(c) for c in _cells(row)), flush=True)
  return rows


def _cells(row: Row) -> list[str]:
  r = row.resources
  return [f"sm_{row.capability}", row.variant, row.kernel, f"{row.tile[0]} x {row.tile[1]}",
          str(r.num_warps), str(r.num_stages), str(r.registers),
          f"{r.spill_store_bytes}/{r.spill_load_bytes}", f"{r.shared_bytes / 1024:.1f}",
          str(r.programs_per_sm), "yes" if row.default else "-"]


def main(argv=None) -> list[Row]:
  args = parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top

  from phi_jax.kernels import triton_aot  # pylint: disable=g-import-not-at-top
  triton_version = triton_aot.triton_version()
  machine = record.cpu_description()
  print(f"Triton {triton_version} ahead-of-time compilation on {machine}: "
        f"seq {args.seq}, head_dim {args.head_dim}, {args.dtype}")
  print("  " + " | ".join(COLUMNS[4:5] + COLUMNS[8:]))
  rows = run(args)
  problems = [p for row in rows if row.default for p in row.resources.problems()]
  print("\ndefault block sizes: " + ("; ".join(problems) if problems else
                                     "no spills, shared memory within limits"))
  if args.no_record:
    return rows
  for row in rows:
    line = record.markdown_row([record.now(), machine, jax.__version__, triton_version]
                               + _cells(row)[:1] + [args.seq, args.head_dim, args.dtype]
                               + _cells(row)[1:])
    record.append_row(SECTION, INTRO, line)
  print(f"appended {len(rows)} rows to {record.BENCHMARKS_FILE}")
  return rows


if __name__ == "__main__":
  main()
