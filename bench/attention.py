"""Attention kernels head to head: forward and forward+backward time and TFLOP/s.

Times causal multi-head self-attention (no segment ids, no dropout) at phi-1's shapes
(batch 8, 32 heads x 64, bf16) for each sequence length, for:

  pallas      phi_jax's flash-attention kernel (phi_jax.kernels.flash_attention)
  jax_pallas  the Pallas Triton attention bundled with jax
              (jax.experimental.pallas.ops.gpu.attention.mha; GPU; interpret mode on CPU)
  cudnn       jax.nn.dot_product_attention(implementation='cudnn') (CUDA GPU only)
  xla         phi_jax.attention.xla_attention (plain jnp; what 'xla' runs in the model)

Each function is compiled once, then timed `--repeats` times (median). TFLOP/s counts
4·B·H·T·S·D for the forward (QK^T and PV) halved for causal masking, and 2.5x that
again for the backward (5 matmuls against 2: FlashAttention's convention; the
recomputation is not counted). `max err` is the largest |out - xla out| relative to
max |xla out|, so a fast but wrong kernel shows. Unavailable implementations (no GPU,
no cuDNN, out of memory) are skipped with the reason.

    .venv/bin/python bench/attention.py                        # GPU: phi-1 shapes, T=512..4096
    .venv/bin/python bench/attention.py --seq=2048 --impls=pallas,cudnn
    .venv/bin/python bench/attention.py --small --no_record    # CPU smoke run (interpret mode)
    .venv/bin/python bench/attention.py --seq=2048 --choices=phi_jax/attention_choices.json
    .venv/bin/python bench/attention.py --seq=2048 --dropout=0.1 --impls=pallas,xla \
        --choices=phi_jax/attention_choices.json     # attention='auto' with dropout
    .venv/bin/python bench/attention.py --tune --seq=1024,2048 --choices=...  # pallas tiles

Results go to a table and, on a GPU/TPU, one dated row per (implementation, length)
appended to BENCHMARKS.md (not with --dropout: those rows only feed --choices, what
attention='auto' picks per device kind, phi_jax/attention_choices.py). CPU timings (Pallas interpret mode) mean nothing and are
never recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from bench import record  # noqa: E402  pylint: disable=g-import-not-at-top

SECTION = "## bench/attention.py: causal attention kernels, forward and forward+backward"
COLUMNS = ("date", "machine", "jax", "impl", "batch", "seq", "heads", "head_dim", "dtype",
           "fwd ms", "fwd TFLOP/s", "fwd+bwd ms", "fwd+bwd TFLOP/s", "fwd+bwd vs xla",
           "max err")
INTRO = """
Causal self-attention, no segment ids or dropout, compiled once and timed `repeats`
times (median). TFLOP/s: forward 2·B·H·T²·D (causal half of 4·B·H·T²·D), backward
2.5x the forward (recomputation not counted); `fwd+bwd vs xla` = xla time / this
time (> 1: faster than plain XLA); `max err` = max |out - xla out| / max |xla out|.

""" + record.table_header(COLUMNS)
IMPLEMENTATIONS = ("pallas", "jax_pallas", "cudnn", "xla")


@dataclasses.dataclass
class Result:
  impl: str
  seq: int
  fwd_s: float | None = None
  fwd_bwd_s: float | None = None
  max_err: float | None = None
  skipped: str = ""  # why it did not run


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--seq", default="512,1024,2048,4096",
                      help="comma-separated sequence lengths")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--heads", type=int, default=32)
  parser.add_argument("--head_dim", type=int, default=64)
  parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
  parser.add_argument("--impls", default=",".join(IMPLEMENTATIONS),
                      help=f"comma-separated subset of {IMPLEMENTATIONS}")
  parser.add_argument("--repeats", type=int, default=20, help="timed runs (median)")
  parser.add_argument("--block_q", type=int, default=0,
                      help="phi_jax pallas: query tile rows (0: its defaults; with --block_kv)")
  parser.add_argument("--block_kv", type=int, default=0,
                      help="phi_jax pallas: key tile rows (0: its defaults)")
  parser.add_argument("--warps", type=int, default=0,
                      help="phi_jax pallas: Triton warps of all three kernels (0: defaults)")
  parser.add_argument("--stages", type=int, default=0,
                      help="phi_jax pallas: Triton num_stages (0: the default)")
  parser.add_argument("--small", action="store_true",
                      help="CPU smoke sizes: batch 1, 2 heads, 2 repeats, seq 128,256 (unless "
                      "--seq is given)")
  parser.add_argument("--no_record", action="store_true",
                      help="print the table but do not append rows to BENCHMARKS.md")
  parser.add_argument("--dropout", type=float, default=0.0,
                      help="attention dropout rate (implementations without it are skipped)")
  parser.add_argument("--choices", default="",
                      help="write the fastest implementation at --choice_seq for this device "
                      "kind into this attention-choices JSON (phi_jax/attention_choices.py): "
                      "'train_dropout' with --dropout, else 'train' (fwd+bwd) and 'prefill' "
                      "(fwd); with --tune, the fastest pallas tiles per head_dim and seq")
  parser.add_argument("--choice_seq", type=int, default=2048,
                      help="the length whose timings decide --choices (default: phi-1's)")
  parser.add_argument("--tune", action="store_true",
                      help="time phi_jax pallas fwd+bwd over block_q x block_kv in --tiles "
                      "at each --seq instead of comparing implementations")
  parser.add_argument("--tiles", default="32,64,128",
                      help="--tune: the tile sizes tried for block_q and block_kv")
  args = parser.parse_args(argv)
  if args.small:
    args.batch, args.heads, args.repeats = 1, 2, 2
    if args.seq == parser.get_default("seq"):  # an explicit --seq is kept
      args.seq = "128,256"
  args.seq = [int(s) for s in args.seq.split(",") if s]
  args.tiles = [int(s) for s in args.tiles.split(",") if s]
  if not 0.0 <= args.dropout < 1.0:
    parser.error("--dropout: a rate in [0, 1)")
  args.impls = [s for s in args.impls.split(",") if s]
  for name in args.impls:
    if name not in IMPLEMENTATIONS:
      parser.error(f"--impls: unknown implementation {name!r}; known: {IMPLEMENTATIONS}")
  if bool(args.block_q) != bool(args.block_kv):
    parser.error("--block_q and --block_kv: set both or neither")
  for name in ("batch", "heads", "head_dim", "repeats"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1")
  if not args.seq or min(args.seq) < 1:
    parser.error("--seq: give positive lengths")
  return args


def forward_flops(batch: int, seq: int, heads: int, head_dim: int) -> float:
  """Causal forward FLOPs: 4·B·H·T²·D (QK^T and PV), halved by the causal mask."""
  return 4.0 * batch * heads * seq * seq * head_dim / 2


def attention_fn(name: str, args: argparse.Namespace, platform: str):
  """(q, k, v) -> out [B, T, H, D] for an implementation, or a str saying why not."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from phi_jax import attention, kernels  # pylint: disable=g-import-not-at-top

  if name == "pallas":
    blocks = (kernels.BlockSizes.uniform(args.block_q, args.block_kv) if args.block_q
              else kernels.default_block_sizes(platform, args.head_dim))
    if args.warps:
      blocks = dataclasses.replace(blocks, warps_fwd=args.warps, warps_dkv=args.warps,
                                   warps_dq=args.warps)
    if args.stages:
      blocks = dataclasses.replace(blocks, num_stages=args.stages)
    rng = jax.random.key(0) if args.dropout else None
    return lambda q, k, v: kernels.flash_attention(q, k, v, block_sizes=blocks,
                                                   dropout_rate=args.dropout, dropout_rng=rng)
  if name == "xla":
    rng = jax.random.key(0) if args.dropout else None

    def xla(q, k, v):
      ones = jnp.ones(q.shape[:2], jnp.int32)
      return attention.xla_attention(q, k, v, q_segment_ids=ones, kv_segment_ids=ones,
                                     dropout_rate=args.dropout, dropout_rng=rng)
    return xla
  if args.dropout:
    return "no attention dropout"
  if name == "cudnn":
    if platform != "gpu":
      return f"needs a CUDA GPU with cuDNN (backend: {platform})"
    return lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True,
                                                        implementation="cudnn")
  if name == "jax_pallas":
    if platform == "tpu":
      return "a Triton (GPU) kernel; no TPU lowering"
    from jax.experimental.pallas.ops.gpu import attention as jax_attention  # pylint: disable=g-import-not-at-top
    scale = args.head_dim ** -0.5
    return lambda q, k, v: jax_attention.mha(q, k, v, None, sm_scale=scale, causal=True,
                                             interpret=platform == "cpu")
  raise ValueError(name)


def _median_seconds(fn, operands, repeats: int) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  jax.block_until_ready(fn(*operands))  # compile + warm up
  seconds = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*operands))
    seconds.append(time.perf_counter() - start)
  return statistics.median(seconds)


def run_one(name: str, seq: int, args: argparse.Namespace, platform: str,
            reference_out) -> tuple[Result, object]:
  """Times one implementation at one length; returns its Result and its output."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  fn = attention_fn(name, args, platform)
  if isinstance(fn, str):
    return Result(name, seq, skipped=fn), None
  keys = jax.random.split(jax.random.key(seq), 4)
  shape = (args.batch, seq, args.heads, args.head_dim)
  q, k, v, do = (jax.random.normal(key, shape, jnp.dtype(args.dtype)) for key in keys)
  forward = jax.jit(fn)

  @jax.jit
  def forward_backward(q, k, v, do):
    out, vjp = jax.vjp(fn, q, k, v)
    return out, vjp(do)

  try:
    fwd_s = _median_seconds(forward, (q, k, v), args.repeats)
    fwd_bwd_s = _median_seconds(forward_backward, (q, k, v, do), args.repeats)
    out = forward(q, k, v)
  except Exception as e:  # pylint: disable=broad-except  (OOM, no cuDNN, lowering errors)
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return Result(name, seq, skipped=f"{type(e).__name__}: {message[:160]}"), None
  max_err = None
  if reference_out is not None and not args.dropout:  # dropout masks differ
    want = reference_out.astype(jnp.float32)
    max_err = float(jnp.max(jnp.abs(out.astype(jnp.float32) - want)) /
                    jnp.maximum(jnp.max(jnp.abs(want)), 1e-30))
  return Result(name, seq, fwd_s=fwd_s, fwd_bwd_s=fwd_bwd_s, max_err=max_err), out


def run(args: argparse.Namespace, platform: str) -> list[Result]:
  results = []
  order = ["xla"] + [n for n in args.impls if n != "xla"]  # xla first: the reference
  for seq in args.seq:
    reference = None
    for name in order:
      result, out = run_one(name, seq, args, platform, reference)
      if name == "xla":
        reference = out
        if "xla" not in args.impls:
          continue
      results.append(result)
      print(f"  seq {seq:5d} {name:10s} " + (
          f"skipped: {result.skipped}" if result.skipped else
          f"fwd {result.fwd_s * 1e3:9.3f} ms  fwd+bwd {result.fwd_bwd_s * 1e3:9.3f} ms"),
            flush=True)
  return results


def _cells(result: Result, args: argparse.Namespace, xla_fwd_bwd: float | None) -> list[str]:
  if result.skipped:
    return ["-", "-", "-", "-", "-", "-"]
  flops = forward_flops(args.batch, result.seq, args.heads, args.head_dim)
  speedup = f"{xla_fwd_bwd / result.fwd_bwd_s:.2f}" if xla_fwd_bwd else "-"
  return [f"{result.fwd_s * 1e3:.3f}", f"{flops / result.fwd_s / 1e12:.1f}",
          f"{result.fwd_bwd_s * 1e3:.3f}", f"{3.5 * flops / result.fwd_bwd_s / 1e12:.1f}",
          speedup, "-" if result.max_err is None else f"{result.max_err:.1e}"]


def _xla_times(results: list[Result]) -> dict[int, float]:
  return {r.seq: r.fwd_bwd_s for r in results if r.impl == "xla" and not r.skipped}


def print_table(results: list[Result], args: argparse.Namespace) -> None:
  names = COLUMNS[3:4] + COLUMNS[5:6] + COLUMNS[9:]
  print()
  print(f"batch={args.batch} heads={args.heads} head_dim={args.head_dim} dtype={args.dtype} "
        f"causal, median of {args.repeats}")
  print(" | ".join(f"{n:>15}" for n in names))
  xla = _xla_times(results)
  for r in results:
    cells = [r.impl, str(r.seq)] + _cells(r, args, xla.get(r.seq))
    print(" | ".join(f"{c:>15}" for c in cells) + (f"   skipped: {r.skipped}" if r.skipped else ""))


def table_rows(results: list[Result], args: argparse.Namespace, machine: str) -> list[str]:
  """BENCHMARKS.md rows of the implementations that ran."""
  import jax  # pylint: disable=g-import-not-at-top
  xla = _xla_times(results)
  return [record.markdown_row([record.now(), machine, jax.__version__, r.impl, args.batch,
                               r.seq, args.heads, args.head_dim, args.dtype]
                              + _cells(r, args, xla.get(r.seq)))
          for r in results if not r.skipped]


def machine_description() -> str:
  import jax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  if device.platform == "cpu":
    return record.cpu_description()
  return f"1x {device.device_kind}"


def write_choices(results: list[Result], args: argparse.Namespace, device_kind: str) -> None:
  """The fastest implementation at --choice_seq (else the longest length measured) into
  --choices: 'train_dropout' (fwd+bwd) with --dropout, else 'train' (fwd+bwd) and
  'prefill' (fwd)."""
  from phi_jax import attention_choices  # pylint: disable=g-import-not-at-top
  ran = [r for r in results if not r.skipped and r.impl in attention_choices.IMPLEMENTATIONS]
  if not ran:
    print("--choices: nothing ran; nothing written")
    return
  lengths = {r.seq for r in ran}
  seq = args.choice_seq if args.choice_seq in lengths else max(lengths)
  ran = [r for r in ran if r.seq == seq]
  shape = (f"batch {args.batch}, seq {seq}, {args.heads} heads x {args.head_dim}, "
           f"{args.dtype}, causal" + (f", dropout {args.dropout}" if args.dropout else ""))
  situations = ({"train_dropout": "fwd_bwd_s"} if args.dropout
                else {"train": "fwd_bwd_s", "prefill": "fwd_s"})
  for situation, field in situations.items():
    chosen = attention_choices.record(device_kind, situation,
                                      {r.impl: getattr(r, field) for r in ran}, shape,
                                      path=args.choices)
    print(f"--choices: {device_kind} / {situation}: {chosen} ({args.choices})")


def tune(args: argparse.Namespace, platform: str, device_kind: str) -> dict:
  """phi_jax pallas fwd+bwd at each --seq over block_q x block_kv in --tiles; the
  fastest per length go to --choices (when given). Returns {seq: (bq, bkv, seconds)}."""
  from phi_jax import attention_choices  # pylint: disable=g-import-not-at-top
  best = {}
  for seq in args.seq:
    timings = {}
    for block_q in args.tiles:
      for block_kv in args.tiles:
        if block_q > seq or block_kv > seq:
          continue
        tiled = argparse.Namespace(**{**vars(args), "block_q": block_q, "block_kv": block_kv})
        result, _ = run_one("pallas", seq, tiled, platform, None)
        label = f"{block_q}x{block_kv}"
        print(f"  seq {seq:5d} tiles {label:8s} " + (
            f"skipped: {result.skipped}" if result.skipped
            else f"fwd+bwd {result.fwd_bwd_s * 1e3:9.3f} ms"), flush=True)
        if not result.skipped:
          timings[label] = result.fwd_bwd_s
    if not timings:
      continue
    label = min(timings, key=timings.get)
    block_q, block_kv = (int(x) for x in label.split("x"))
    best[seq] = (block_q, block_kv, timings[label])
    if args.choices:
      attention_choices.record_tiles(device_kind, args.head_dim, seq, block_q, block_kv,
                                     timings, dropout=args.dropout > 0, path=args.choices)
      print(f"--choices: {device_kind} tiles head_dim {args.head_dim}, seq {seq}: {label}")
  return best


def main(argv=None) -> list[Result]:
  args = parse_args(argv)
  from phi_jax.kernels.flash_attention import default_platform  # pylint: disable=g-import-not-at-top
  platform = default_platform()
  machine = machine_description()
  print(f"attention benchmark on {machine} (platform {platform})")
  if platform == "cpu":
    print("CPU: phi_jax's Pallas kernel runs in interpret mode; the timings only show "
          "that the script works and are not recorded.")
    if (args.batch, args.heads) != (1, 2):  # phi-1 shapes would take hours in interpret mode
      print("CPU: running the --small smoke shapes instead of phi-1's")
      args = parse_args([*(argv or sys.argv[1:]), "--small"])
  import jax  # pylint: disable=g-import-not-at-top
  device_kind = jax.devices()[0].device_kind
  if args.tune:
    tune(args, platform, device_kind)
    return []
  results = run(args, platform)
  print_table(results, args)
  if args.choices:
    write_choices(results, args, device_kind)
  if platform == "cpu" or args.no_record or args.dropout:
    return results
  for row in table_rows(results, args, machine):
    record.append_row(SECTION, INTRO, row)
    print(f"appended to {record.BENCHMARKS_FILE}: {row}")
  return results


if __name__ == "__main__":
  main()
