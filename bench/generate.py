"""Batched greedy decoding: phi_jax vs transformers, and the cost of an unused budget.

Builds one random transformers PhiForCausalLM, saves it to a temporary directory,
loads it into phi_jax with `phi_jax.from_pretrained`, and measures, in one run:

1. throughput: greedy generation of exactly `--new_tokens` tokens (end-of-text
   disabled) for the same batch of random prompts on both sides. Each side is warmed
   up once (for phi_jax: compiled), then the sides are timed alternately `--repeats`
   times (so a change in the machine's load hits both); tok/s is batch * new_tokens /
   the median seconds.
2. budget: phi_jax generating the same `--stop_after` greedy tokens per row, ended by
   a per-row stop string, with max_new_tokens 64 and 2000 (`--budgets`): the time
   should follow the tokens generated, not the budget (ratio near 1). Stop strings
   need text: a tokenizer that maps every id to its own character stands in for one.

The result is printed as a table and appended as a dated row to BENCHMARKS.md.

    .venv/bin/python bench/generate.py                       # tiny model, CPU
    .venv/bin/python bench/generate.py --size=small --batch=16 --check
    .venv/bin/python bench/generate.py --size=phi1 --dtype=bfloat16 --batch=32   # GPU

phi_jax runs on JAX's default backend (the GPU when there is one); transformers runs
on CUDA when torch sees it, else on the CPU. transformers uses its default
`generate` (dynamic KV cache, eager attention; no torch.compile).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from bench import record  # noqa: E402  pylint: disable=g-import-not-at-top

SECTION = ("## bench/generate.py: greedy decoding, phi_jax vs transformers, and the cost "
           "of an unused max_new_tokens")
SECTION_INTRO = """
Greedy decoding of exactly `new` tokens (end-of-text disabled) for a batch of random
prompts of `prompt` tokens on a random PhiForCausalLM of the given size, after one
warm-up (compile) run; the two sides are timed alternately. tok/s = batch * new /
median seconds over `repeats` runs; ratio = phi_jax tok/s / transformers tok/s (> 1:
phi_jax is faster). `check` says whether both produced identical tokens in fp32 before
timing (`--check`). budget: phi_jax's seconds to generate the same `stop` tokens per
row (ended by per-row stop strings) with max_new_tokens 64 and 2000, and their ratio
(1: an unused budget costs nothing).

"""
COLUMNS = ("date", "machine", "jax", "torch", "size", "batch", "prompt", "new", "dtype",
           "repeats", "phi_jax tok/s", "transformers tok/s", "ratio", "check", "stop",
           "budget 64 s", "budget 2000 s", "2000/64")
SECTION_INTRO += record.table_header(COLUMNS)

# transformers PhiConfig fields of each size; every size uses the CodeGen vocabulary.
SIZES = {
    "tiny": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                 intermediate_size=1024),
    "small": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072),
    "phi1": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32,
                 intermediate_size=8192),  # microsoft/phi-1, 1.3B
}


@dataclasses.dataclass
class Result:
  phi_jax_tok_s: float
  transformers_tok_s: float
  phi_jax_seconds: list[float]
  transformers_seconds: list[float]
  check: str
  budget_seconds: dict[int, float]  # max_new_tokens -> median seconds ({} if skipped)

  @property
  def ratio(self) -> float:
    return self.phi_jax_tok_s / self.transformers_tok_s


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", choices=sorted(SIZES), default="tiny",
                      help="model size preset (phi1 = the 1.3B phi-1 config)")
  parser.add_argument("--batch", type=int, default=8, help="prompts per batch")
  parser.add_argument("--prompt_len", type=int, default=64, help="tokens per prompt")
  parser.add_argument("--new_tokens", type=int, default=128, help="tokens generated per prompt")
  parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                      help="compute and parameter dtype of both sides")
  parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (median)")
  parser.add_argument("--chunk_size", type=int, default=16,
                      help="phi_jax decode steps per jitted call")
  parser.add_argument("--check", action="store_true",
                      help="first verify that both sides generate identical tokens in fp32")
  parser.add_argument("--torch_threads", type=int, default=0,
                      help="torch intra-op threads (0: torch's default). On a CPU shared "
                      "with other work, OpenMP threads that wait for each other can make "
                      "transformers many times slower; 1 avoids that")
  parser.add_argument("--stop_after", type=int, default=39,
                      help="tokens per row before its stop string, in the budget measurement")
  parser.add_argument("--budgets", default="64,2000",
                      help="two max_new_tokens budgets to compare (comma-separated); "
                      "'' skips the budget measurement")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no_record", action="store_true",
                      help="print the table but do not append a row to BENCHMARKS.md")
  args = parser.parse_args(argv)
  if args.prompt_len + args.new_tokens > 2048:
    parser.error("--prompt_len + --new_tokens must be <= 2048 (max_position_embeddings)")
  if args.torch_threads < 0:
    parser.error("--torch_threads must be >= 0")
  for name in ("batch", "prompt_len", "new_tokens", "repeats", "chunk_size", "stop_after"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1")
  try:
    args.budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
  except ValueError:
    parser.error(f"--budgets must be comma-separated integers, got {args.budgets!r}")
  if args.budgets and (len(args.budgets) != 2 or min(args.budgets) < args.stop_after):
    parser.error(f"--budgets needs two values >= --stop_after ({args.stop_after})")
  return args


def build_hf_model(size: str, seed: int):
  """A random transformers PhiForCausalLM (fp32, eval mode) of a size preset."""
  import torch
  from transformers import PhiConfig, PhiForCausalLM

  config = PhiConfig(vocab_size=51200, partial_rotary_factor=0.5, max_position_embeddings=2048,
                     hidden_act="gelu_new", pad_token_id=None, bos_token_id=None,
                     eos_token_id=None, **SIZES[size])
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


def time_alternately(fns, repeats: int) -> list[list[float]]:
  """Seconds of `repeats` runs of each fn, the fns taking turns (fair under drift)."""
  seconds = [[] for _ in fns]
  for _ in range(repeats):
    for fn, times in zip(fns, seconds):
      start = time.perf_counter()
      fn()
      times.append(time.perf_counter() - start)
  return seconds


class CharTokenizer:
  """Stands in for a tokenizer in the budget measurement: id i is the character
  U+0100 + i, so any window of a row's ids is a stop string found exactly there."""

  def __init__(self, vocab_size: int):
    self.vocab_size = vocab_size
    self.eos_id = None

  def decode(self, ids) -> str:
    return "".join(chr(0x100 + i) for i in ids)


def budget_seconds(model, prompts, args) -> dict[int, float]:
  """Median seconds to generate the same --stop_after greedy tokens per row (per-row
  stop strings) with each max_new_tokens budget; checks every row stops there."""
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
    return got

  for budget in args.budgets:
    run(budget)  # warm-up: compiles
  fns = [functools.partial(run, budget) for budget in args.budgets]
  seconds = time_alternately(fns, args.repeats)
  return {b: statistics.median(s) for b, s in zip(args.budgets, seconds)}


def machine_description() -> str:
  """The accelerator phi_jax runs on, or the CPU (model, cores, load) and torch threads."""
  import jax
  import torch
  device = jax.devices()[0]
  if device.platform != "cpu":
    return f"{len(jax.devices())}x {device.device_kind}"
  return f"{record.cpu_description()}; torch threads {torch.get_num_threads()}"


def run(args: argparse.Namespace) -> Result:
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

  run_jax = lambda: jax_generate(jax_model, prompts, args.new_tokens, args.chunk_size)
  run_hf = lambda: hf_generate(hf_model, prompts, args.new_tokens)
  start = time.perf_counter()
  lengths = {len(t) for t in run_jax()}
  print(f"phi_jax warm-up (compile + 1 run): {time.perf_counter() - start:.1f}s")
  start = time.perf_counter()
  lengths |= {len(t) for t in run_hf()}
  print(f"transformers warm-up: {time.perf_counter() - start:.1f}s")
  assert lengths == {args.new_tokens}, lengths
  jax_seconds, hf_seconds = time_alternately([run_jax, run_hf], args.repeats)
  budgets = budget_seconds(jax_model, prompts, args) if args.budgets else {}
  tokens = args.batch * args.new_tokens
  return Result(phi_jax_tok_s=tokens / statistics.median(jax_seconds),
                transformers_tok_s=tokens / statistics.median(hf_seconds),
                phi_jax_seconds=jax_seconds, transformers_seconds=hf_seconds, check=check,
                budget_seconds=budgets)


def table_row(args: argparse.Namespace, result: Result, machine: str) -> str:
  import jax
  import torch
  return record.markdown_row([
      record.now(),
      machine + (f"; torch on {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
      jax.__version__, torch.__version__, args.size, args.batch, args.prompt_len,
      args.new_tokens, args.dtype, args.repeats, f"{result.phi_jax_tok_s:.1f}",
      f"{result.transformers_tok_s:.1f}", f"{result.ratio:.2f}", result.check,
      *budget_cells(args, result),
  ])


def budget_cells(args: argparse.Namespace, result: Result) -> list[str]:
  """stop, the two budgets' seconds and their ratio ('-' when not measured)."""
  if not result.budget_seconds:
    return ["-"] * 4
  low, high = (result.budget_seconds[b] for b in args.budgets)
  return [str(args.stop_after), f"{low:.2f}", f"{high:.2f}", f"{high / low:.2f}"]


def print_table(args: argparse.Namespace, result: Result) -> None:
  import jax
  print()
  print(f"size={args.size} batch={args.batch} prompt_len={args.prompt_len} "
        f"new_tokens={args.new_tokens} dtype={args.dtype} repeats={args.repeats}")
  print(f"phi_jax on {jax.devices()[0].device_kind}; transformers on {torch_device()}")
  print(f"{'':14}{'tok/s':>10}{'median s':>10}   runs (s)")
  for name, tok_s, seconds in (
      ("phi_jax", result.phi_jax_tok_s, result.phi_jax_seconds),
      ("transformers", result.transformers_tok_s, result.transformers_seconds)):
    runs = ", ".join(f"{s:.2f}" for s in seconds)
    print(f"{name:14}{tok_s:10.1f}{statistics.median(seconds):10.2f}   {runs}")
  print(f"ratio phi_jax / transformers: {result.ratio:.2f}   check: {result.check}")
  if result.budget_seconds:
    stop, low, high, ratio = budget_cells(args, result)
    print(f"budget: {stop} tokens per row in {low} s with max_new_tokens {args.budgets[0]}, "
          f"{high} s with {args.budgets[1]}: ratio {ratio}")


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.torch_threads:
    import torch
    torch.set_num_threads(args.torch_threads)  # before the row records the thread count
  # Other work on a CPU host skews both sides; the row records the load at the start.
  machine = machine_description()
  result = run(args)
  print_table(args, result)
  if not args.no_record:
    row = table_row(args, result, machine)
    record.append_row(SECTION, SECTION_INTRO, row)
    print(f"\nappended to {record.BENCHMARKS_FILE}:\n{row}")


if __name__ == "__main__":
  main()
