"""Where generation's time goes: prefill vs decode, phi_jax and transformers.generate.

    .venv/bin/python bench/profile_generate.py [--size tiny] [--batch 8] [--prompt_len 512]
                                               [--new_tokens 512] [--dtype float32]
                                               [--threads all|1] [--repeats 3] [--ops 20]

Same model and prompts as bench/generate.py. Each side generates 1 token (the prefill
and one step) and `--new_tokens` tokens, alternated (bench/compare.py, `--repeats`
rounds); the decode cost per token is (seconds(new) - seconds(1)) / (new - 1), medians.
Prints the split; it appends no row (it explains the rows of bench/generate.py).

`--ops N` then traces one more phi_jax generation with `jax.profiler` and prints the N
XLA operations that took the most time in it (grouped by the name XLA gave them, less
the numeric suffix: `dot` is a dot the runtime runs itself, `ynn_fusion` one run by
YNNPACK, `slice_bitcast_fusion` a copied slice...), in ms per generated token, with how
many ran per token. On the CPU the ops of one step can run on different threads at
once, so their sum can exceed the step's wall time.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from bench import compare, generate  # noqa: E402  pylint: disable=g-import-not-at-top


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--size", choices=sorted(generate.SIZES), default="tiny")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--prompt_len", type=int, default=512)
  parser.add_argument("--new_tokens", type=int, default=512)
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--chunk_size", type=int, default=16)
  parser.add_argument("--ops", type=int, default=0,
                      help="also print the N most costly XLA ops of one traced phi_jax run")
  parser.add_argument("--threads", choices=("all", "1"), default="all",
                      help="both sides on every core, or both on one pinned core with one "
                           "thread each (as bench/generate.py --threads)")
  args = parser.parse_args(argv)
  pinned = compare.limit_to_one_thread() if args.threads == "1" else "every core"
  import numpy as np  # pylint: disable=g-import-not-at-top
  import phi_jax  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1 if args.threads == "1" else len(os.sched_getaffinity(0)))
  hf_model = generate.build_hf_model(args.size, 0)
  prompts = np.random.default_rng(0).integers(
      0, hf_model.config.vocab_size, (args.batch, args.prompt_len)).tolist()
  with tempfile.TemporaryDirectory() as directory:
    hf_model.save_pretrained(directory)
    jax_model = phi_jax.from_pretrained(directory, dtype=args.dtype, param_dtype=args.dtype)
  hf_model = hf_model.to(dtype=getattr(torch, args.dtype))
  sides = {
      "phi_jax": lambda n: generate.jax_generate(jax_model, prompts, n, args.chunk_size),
      "transformers": lambda n: generate.hf_generate(hf_model, prompts, n),
  }
  load = compare.load_average()
  timings = compare.alternate(
      [(f"{name} {n}", (lambda f=f, n=n: f(n))) for name, f in sides.items()
       for n in (1, args.new_tokens)], repeats=args.repeats, progress=True)
  print(f"\nsize={args.size} batch={args.batch} prompt={args.prompt_len} "
        f"new={args.new_tokens} dtype={args.dtype} threads {args.threads} ({pinned}) "
        f"load before/after {load:.1f} / "
        f"{compare.load_average():.1f}; medians of {args.repeats}")
  for name in sides:
    one = compare.Spread.of(timings.seconds[f"{name} 1"]).median
    full = compare.Spread.of(timings.seconds[f"{name} {args.new_tokens}"]).median
    per_token = (full - one) / (args.new_tokens - 1)
    print(f"{name:14} prefill + 1 step {one:7.3f} s   all {full:7.2f} s   decode "
          f"{per_token * 1e3:6.2f} ms per step ({args.batch / per_token:7.0f} tok/s); "
          f"prefill share {one / full:.0%}")
  if args.ops:
    print_ops(lambda: sides["phi_jax"](args.new_tokens), args.batch * args.new_tokens,
              args.new_tokens, args.ops)


def print_ops(run, tokens: int, steps: int, top: int) -> None:
  """Traces run() and prints its `top` costliest XLA ops per generated step."""
  import jax  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as directory:
    jax.profiler.start_trace(directory, create_perfetto_trace=True)
    run()
    jax.profiler.stop_trace()
    trace_path, = glob.glob(os.path.join(directory, "**", "perfetto_trace.json.gz"),
                            recursive=True)
    with gzip.open(trace_path) as f:
      events = json.load(f)["traceEvents"]
  micros, counts = collections.Counter(), collections.Counter()
  for event in events:
    name = event.get("name", "")
    # XLA's ops only: not Python frames ($...), the runtime's own spans or waits
    if event.get("ph") != "X" or name.startswith(("$", "end: ")) or re.search(
        r"Thunk|Pjit|Slinky|PjRt|ParseArguments|DevicePut", name):
      continue
    op = re.sub(r"\.\d+$", "", name)
    micros[op] += event.get("dur", 0)
    counts[op] += 1
  total = sum(micros.values())
  print(f"\nXLA ops of one phi_jax run ({tokens} tokens, {steps} steps; traced, so slower "
        f"than untraced): {total / steps / 1e3:.2f} ms of op time per step")
  for op, micro in micros.most_common(top):
    print(f"{micro / steps / 1e3:8.3f} ms per step ({micro / total:4.0%})  "
          f"{counts[op] / steps:6.1f} per step  {op}")


if __name__ == "__main__":
  main()
