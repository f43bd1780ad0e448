"""Batched greedy decoding: phi_jax vs transformers.generate, and the cost of an unused budget.

Builds one random transformers PhiForCausalLM of a shape preset, saves it to a
temporary directory, loads it into phi_jax with `phi_jax.from_pretrained`, and
measures, in one run:

1. throughput (`bench/compare.py`): greedy generation of exactly `--new_tokens` tokens
   (end-of-text disabled) for the same batch of random prompts on both sides, each
   warmed up once (phi_jax: compiled), then timed in alternating rounds (`--repeats`
   per side, 5 or more unless `--reduced`); tok/s = batch * new_tokens / seconds, the
   row gives median [min, max] of each side and of the per-round ratio.
2. budget (`--budgets=64,2000`; off by default): phi_jax generating the same
   `--stop_after` greedy tokens per row, ended by a per-row stop string, with two
   max_new_tokens budgets, alternated the same way: the time should follow the tokens
   generated, not the budget (ratio near 1). Stop strings need text: a tokenizer that
   maps every id to its own character stands in for one.

Threads (`--threads`): `all` (default) gives both sides every core this process may
use (torch.set_num_threads, XLA's CPU client as it starts); `1` pins the process to
one core and limits XLA's CPU client (`compare.limit_to_one_thread`) and torch to one
thread each. The row records which.

The reference is `transformers`' default `generate`: dynamic KV cache, no
torch.compile, and the attention implementation transformers picks for the model
(`config._attn_implementation`; with torch 2.x that is `sdpa`,
torch.nn.functional.scaled_dot_product_attention), recorded in the row.

    .venv/bin/python bench/generate.py --batch=8 --prompt_len=512 --new_tokens=512 --check
    .venv/bin/python bench/generate.py --size=phi1-small --batch=1 --new_tokens=64 --repeats=2 --reduced
    .venv/bin/python bench/generate.py --size=phi1 --dtype=bfloat16 --batch=32   # GPU

phi_jax runs on JAX's default backend (the GPU when there is one); transformers runs
on CUDA when torch sees it, else on the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from bench import compare  # noqa: E402  pylint: disable=g-import-not-at-top

GOAL = 2.0  # phi_jax tok/s over transformers tok/s, at the tiny shape, batch 8, 512/512

SECTION = ("## bench/generate.py: greedy generation, phi_jax vs transformers.generate "
           "(alternated, median [min, max])")
SECTION_INTRO = f"""
Greedy decoding of exactly `new` tokens (end-of-text disabled) for a batch of random
prompts of `prompt` tokens on a random PhiForCausalLM of the shape `size`
(bench/generate.py: SIZES), phi_jax against `transformers.generate` (its default:
dynamic cache, no torch.compile; `attention`: the implementation transformers used).
Both warmed up, then timed in alternating rounds (bench/compare.py). tok/s = batch *
new / seconds, median [min, max] over the rounds; ratio = phi_jax / transformers per
round (> 1: phi_jax is faster); goal: ratio median >= {GOAL:g} (set for the tiny shape at
batch 8, prompt 512, 512 new tokens). `check`: both produced identical tokens in fp32
before timing. Load: the 1-minute load average before/after on a machine shared with
other work (2 cores, load well above 2 means the sides waited for the CPU).
"""
COLUMNS = compare.COMMON_COLUMNS + (
    "jax", "torch", "transformers", "attention", "size", "batch", "prompt", "new", "dtype",
    "check", "phi_jax tok/s", "transformers tok/s", "ratio", "goal")

BUDGET_SECTION = ("## bench/generate.py: the cost of an unused max_new_tokens "
                  "(alternated, median [min, max])")
BUDGET_INTRO = """
phi_jax generating the same `stop` greedy tokens per row (ended by per-row stop
strings) with max_new_tokens `low` and `high`, alternated (bench/compare.py); ratio =
seconds at `high` / seconds at `low` per round (1: an unused budget costs nothing).
"""
BUDGET_COLUMNS = compare.COMMON_COLUMNS + (
    "jax", "size", "batch", "prompt", "dtype", "stop", "low", "high", "low s", "high s",
    "high/low")

# Sections of the earlier method (torch on one thread while XLA used every core, 2-3
# repeats, no spread): a new CPU row supersedes their CPU rows.
OLD_SECTIONS = (
    "## bench/generate.py: batched greedy generation, phi_jax vs transformers",
    "## bench/generate.py: greedy decoding, phi_jax vs transformers, and the cost of an "
    "unused max_new_tokens",
)

# transformers PhiConfig fields of each shape preset, named after what they are.
SIZES = {
    # configs/tiny.py's model: 4 layers, d_model 256, 4 heads, vocab 1024, rotary 32
    "tiny": dict(vocab_size=1024, hidden_size=256, num_hidden_layers=4,
                 num_attention_heads=4, intermediate_size=1024, partial_rotary_factor=0.5),
    # a 12-layer, 768-wide model (GPT-2 small's width and depth), CodeGen vocabulary
    "d768-l12": dict(vocab_size=51200, hidden_size=768, num_hidden_layers=12,
                     num_attention_heads=12, intermediate_size=3072,
                     partial_rotary_factor=0.5),
    # phi-1-small (350M; the paper's Section 2.3): 20 layers, d 1024, 16 heads of 64
    "phi1-small": dict(vocab_size=51200, hidden_size=1024, num_hidden_layers=20,
                       num_attention_heads=16, intermediate_size=4096,
                       partial_rotary_factor=0.5),
    # microsoft/phi-1 (1.3B): 24 layers, d 2048, 32 heads of 64
    "phi1": dict(vocab_size=51200, hidden_size=2048, num_hidden_layers=24,
                 num_attention_heads=32, intermediate_size=8192, partial_rotary_factor=0.5),
}


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", choices=sorted(SIZES), default="tiny",
                      help="model shape preset (bench/generate.py: SIZES)")
  parser.add_argument("--batch", type=int, default=8, help="prompts per batch")
  parser.add_argument("--prompt_len", type=int, default=512, help="tokens per prompt")
  parser.add_argument("--new_tokens", type=int, default=512, help="tokens generated per prompt")
  parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                      help="compute and parameter dtype of both sides")
  parser.add_argument("--repeats", type=int, default=compare.MIN_REPEATS,
                      help="timed runs per side")
  parser.add_argument("--reduced", action="store_true",
                      help=f"allow --repeats below {compare.MIN_REPEATS} (the row says so)")
  parser.add_argument("--threads", choices=("all", "1"), default="all",
                      help="all: both sides on every usable core; 1: one core, one thread each")
  parser.add_argument("--chunk_size", type=int, default=16,
                      help="phi_jax decode steps per jitted call")
  parser.add_argument("--check", action="store_true",
                      help="first verify that both sides generate identical tokens in fp32")
  parser.add_argument("--stop_after", type=int, default=39,
                      help="tokens per row before its stop string, in the budget measurement")
  parser.add_argument("--budgets", default="",
                      help="two max_new_tokens budgets to compare (comma-separated, e.g. "
                      "64,2000); '' (default) skips the budget measurement")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no_record", action="store_true",
                      help="print the results but do not append rows to BENCHMARKS.md")
  args = parser.parse_args(argv)
  if args.prompt_len + args.new_tokens > 2048:
    parser.error("--prompt_len + --new_tokens must be <= 2048 (max_position_embeddings)")
  for name in ("batch", "prompt_len", "new_tokens", "repeats", "chunk_size", "stop_after"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1")
  if args.repeats < compare.MIN_REPEATS and not args.reduced:
    parser.error(f"--repeats below {compare.MIN_REPEATS} needs --reduced")
  try:
    args.budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
  except ValueError:
    parser.error(f"--budgets must be comma-separated integers, got {args.budgets!r}")
  if args.budgets and (len(args.budgets) != 2 or min(args.budgets) < args.stop_after):
    parser.error(f"--budgets needs two values >= --stop_after ({args.stop_after})")
  return args


def build_hf_model(size: str, seed: int):
  """A random transformers PhiForCausalLM (fp32, eval mode) of a shape preset."""
  import torch
  from transformers import PhiConfig, PhiForCausalLM

  config = PhiConfig(max_position_embeddings=2048, hidden_act="gelu_new", pad_token_id=None,
                     bos_token_id=None, eos_token_id=None, **SIZES[size])
  torch.manual_seed(seed)
  return PhiForCausalLM(config).eval()


def torch_device():
  import torch
  return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def hf_generate(model, prompts, new_tokens: int) -> list[list[int]]:
  """transformers greedy generation of exactly new_tokens tokens per prompt."""
  import torch
  device = next(model.parameters()).device
  ids = torch.tensor(prompts, device=device)
  with torch.inference_mode():
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                         max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                         eos_token_id=None, pad_token_id=0)
  if device.type == "cuda":
    torch.cuda.synchronize()
  return out[:, ids.shape[1]:].tolist()


def jax_generate(model, prompts, new_tokens: int, chunk_size: int) -> list[list[int]]:
  """phi_jax greedy generation of exactly new_tokens tokens per prompt (one batch)."""
  import phi_jax
  outs = phi_jax.generate(model, prompts, max_new_tokens=new_tokens, eos_token_id=None,
                          batch_size=len(prompts), chunk_size=chunk_size)
  return [o.tokens for o in outs]  # host lists: the device work has finished


def check_identical(hf_model, directory, prompts, args) -> str:
  """Compares fp32 greedy tokens of both sides; raises SystemExit on a mismatch."""
  import phi_jax
  import torch
  hf_fp32 = hf_model.to(device=torch_device(), dtype=torch.float32)
  jax_fp32 = phi_jax.from_pretrained(directory, dtype="float32")
  want = hf_generate(hf_fp32, prompts, args.new_tokens)
  got = jax_generate(jax_fp32, prompts, args.new_tokens, args.chunk_size)
  mismatches = [(row, next(i for i, (a, b) in enumerate(zip(w, g)) if a != b))
                for row, (w, g) in enumerate(zip(want, got)) if w != g]
  if mismatches:
    row, step = mismatches[0]
    with torch.inference_mode():  # how close was the decision where they diverged?
      ids = torch.tensor([prompts[row] + want[row][:step]], device=hf_fp32.device)
      top2 = hf_fp32(ids).logits[0, -1].float().topk(2).values.tolist()
    sys.exit(f"--check failed: {len(mismatches)}/{len(prompts)} rows differ; row {row} first "
             f"differs at step {step} (transformers {want[row][step]}, phi_jax "
             f"{got[row][step]}; transformers' top-2 logit gap there: "
             f"{top2[0] - top2[1]:.3g})")
  return f"ok ({len(prompts)}x{args.new_tokens} tokens)"


class CharTokenizer:
  """Stands in for a tokenizer in the budget measurement: id i is the character
  U+0100 + i, so any window of a row's ids is a stop string found exactly there."""

  def __init__(self, vocab_size: int):
    self.vocab_size = vocab_size
    self.eos_id = None

  def decode(self, ids) -> str:
    return "".join(chr(0x100 + i) for i in ids)


def budget_result(model, prompts, args, threads: str) -> compare.Result:
  """The same --stop_after greedy tokens per row (per-row stop strings) under each
  max_new_tokens budget, alternated; checks every row stops there."""
  from phi_jax import sampling
  tokenizer = CharTokenizer(model.config.vocab_size)
  greedy = sampling.SamplingParams()
  n = args.stop_after
  first = sampling.generate_tokens(model, prompts, [greedy] * len(prompts),
                                   max_new_tokens=n, batch_size=len(prompts),
                                   chunk_size=args.chunk_size)
  stops = []
  for completion in first:
    text = tokenizer.decode(completion.tokens)
    # The shortest tail of the first n tokens that appears nowhere before it.
    width = next(w for w in range(1, n + 1) if text.find(text[n - w:]) == n - w)
    stops.append([text[n - width:]])

  def run(budget):
    outs = sampling.generate_tokens(model, prompts, [greedy] * len(prompts),
                                    max_new_tokens=budget, stop=stops, tokenizer=tokenizer,
                                    batch_size=len(prompts), chunk_size=args.chunk_size)
    got = [o.tokens for o in outs]
    assert got == [c.tokens for c in first], "a budget changed the generated tokens"

  low, high = args.budgets
  # a = the high budget, b = the low one: the ratio is low's rate / ... inverted below
  return compare.compare(
      compare.Side(f"budget {high}", functools.partial(run, high), threads),
      compare.Side(f"budget {low}", functools.partial(run, low), threads),
      work=len(prompts) * n, repeats=args.repeats, reduced=args.reduced)


def transformers_attention(hf_model) -> str:
  return getattr(hf_model.config, "_attn_implementation", None) or "eager"


def run(args: argparse.Namespace, threads: dict[str, str]):
  """(throughput Result, check, attention implementation, budget Result or None)."""
  import numpy as np
  import phi_jax
  import torch

  hf_model = build_hf_model(args.size, args.seed)
  prompts = np.random.default_rng(args.seed).integers(
      0, hf_model.config.vocab_size, (args.batch, args.prompt_len)).tolist()
  with tempfile.TemporaryDirectory(prefix="bench_generate_") as directory:
    hf_model.save_pretrained(directory)
    check = check_identical(hf_model, directory, prompts, args) if args.check else "-"
    jax_model = phi_jax.from_pretrained(directory, dtype=args.dtype, param_dtype=args.dtype)
  hf_model = hf_model.to(device=torch_device(), dtype=getattr(torch, args.dtype))
  attention = transformers_attention(hf_model)

  def run_jax():
    assert {len(t) for t in jax_generate(jax_model, prompts, args.new_tokens,
                                         args.chunk_size)} == {args.new_tokens}

  def run_hf():
    assert {len(t) for t in hf_generate(hf_model, prompts, args.new_tokens)} == {
        args.new_tokens}

  start = time.perf_counter()
  result = compare.compare(
      compare.Side("phi_jax", run_jax, threads["phi_jax"]),
      compare.Side("transformers", run_hf, threads["transformers"]),
      work=args.batch * args.new_tokens, repeats=args.repeats, reduced=args.reduced)
  print(f"throughput measured in {time.perf_counter() - start:.0f} s (warm-up included)")
  budgets = budget_result(jax_model, prompts, args, threads["phi_jax"]) if args.budgets else None
  return result, check, attention, budgets


def describe_threads(mode: str, pinned: str) -> dict[str, str]:
  """What each side runs on, for the row (after torch's thread count is set)."""
  import jax
  import torch
  device = jax.devices()[0]
  if device.platform != "cpu":
    jax_side = f"{len(jax.devices())}x {device.device_kind}"
  elif mode == "1":
    jax_side = f"XLA CPU 1 thread ({pinned})"
  else:
    jax_side = f"XLA CPU all {len(os.sched_getaffinity(0))} cores"
  torch_side = (f"torch on {torch.cuda.get_device_name()}" if torch.cuda.is_available()
                else f"torch {torch.get_num_threads()} threads" + (f" ({pinned})" if pinned
                                                                  else ""))
  return {"phi_jax": jax_side, "transformers": torch_side}


def table_cells(args, result: compare.Result, check: str, attention: str) -> list:
  import jax
  import torch
  import transformers
  return compare.common_cells(result) + [
      jax.__version__, torch.__version__, transformers.__version__, attention, args.size,
      args.batch, args.prompt_len, args.new_tokens, args.dtype, check,
      result.rate("phi_jax").format(1), result.rate("transformers").format(1),
      result.ratio().format(2), goal(args, result)]


def goal(args, result: compare.Result) -> str:
  """The goal cell: met/MISSED at the workload the goal is set for, else '-'."""
  if (args.size, args.batch, args.prompt_len, args.new_tokens) != ("tiny", 8, 512, 512):
    return "- (the goal is set for tiny, batch 8, 512 + 512)"
  return compare.goal_cell(result, GOAL)


def budget_cells(args, result: compare.Result) -> list:
  import jax
  low, high = args.budgets
  low_s = compare.Spread.of(result.timings.seconds[f"budget {low}"])
  high_s = compare.Spread.of(result.timings.seconds[f"budget {high}"])
  # ratio() is high's rate over low's = low's seconds / high's; high/low seconds inverts it
  high_over_low = compare.Spread.of([1 / r for r in result.ratios()])
  return compare.common_cells(result) + [
      jax.__version__, args.size, args.batch, args.prompt_len, args.dtype, args.stop_after,
      low, high, low_s.format(2), high_s.format(2), high_over_low.format(2)]


def print_result(args, result: compare.Result, check: str, attention: str) -> None:
  print(f"\nsize={args.size} batch={args.batch} prompt_len={args.prompt_len} "
        f"new_tokens={args.new_tokens} dtype={args.dtype} repeats={args.repeats} "
        f"transformers attention={attention}")
  print(f"load before/after: {result.load_before:.1f} / {result.load_after:.1f}")
  for name in (result.a, result.b):
    runs = ", ".join(f"{s:.2f}" for s in result.timings.seconds[name])
    print(f"{name:14} tok/s {result.rate(name).format(1):>28}   {result.threads[name]}"
          f"   runs (s): {runs}")
  print(f"ratio phi_jax / transformers: {result.ratio().format(2)}   "
        f"{goal(args, result)}   check: {check}")


def main(argv=None) -> None:
  args = parse_args(argv)
  pinned = compare.limit_to_one_thread() if args.threads == "1" else ""
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1 if args.threads == "1" else len(os.sched_getaffinity(0)))
  threads = describe_threads(args.threads, pinned)
  result, check, attention, budgets = run(args, threads)
  print_result(args, result, check, attention)
  if budgets is not None:
    print("budget:", budget_cells(args, budgets)[-3:])
  if args.no_record:
    return
  cells = table_cells(args, result, check, attention)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.devices()[0].platform == "cpu":
    # the earlier CPU rows of this shape, dtype and thread setting are history now
    same = lambda row: (  # noqa: E731
        "NVIDIA" not in row["machine"]
        and [row[c] for c in ("size", "batch", "prompt", "new", "dtype")]
        == [str(args.size), str(args.batch), str(args.prompt_len), str(args.new_tokens),
            args.dtype]
        and ("CPU 1 thread" in row["threads"]) == (args.threads == "1"))
    try:
      compare.supersede(SECTION, f"bench/generate.py {cells[0]}", where=same)
    except ValueError:  # no section yet
      pass
  row = compare.append(SECTION, SECTION_INTRO, COLUMNS, cells)
  print(f"\nappended to {compare.record.BENCHMARKS_FILE}:\n{row}")
  if budgets is not None:
    row = compare.append(BUDGET_SECTION, BUDGET_INTRO, BUDGET_COLUMNS,
                         budget_cells(args, budgets))
    print(row)
  if jax.devices()[0].platform == "cpu":
    by = f"bench/generate.py {compare.now()}"
    for section in OLD_SECTIONS:
      try:
        compare.supersede(section, by, where=lambda row: "NVIDIA" not in row["machine"])
      except ValueError:
        pass  # the section is not in this file (e.g. a redirected one)


if __name__ == "__main__":
  main()
