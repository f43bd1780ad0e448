"""Benchmark bits per byte: the loss of a model on canonical solutions given their prompts.

A continuous quality signal that moves long before pass@1 does: for every problem of a
benchmark that ships a canonical solution (HumanEval's 164, MBPP's 500 test problems),
the model reads the prompt and is scored on the solution's tokens (phi_jax/bpb.py).
The problems are the evaluation's own, never training data, so this is held-out by
construction (decontamination keeps it so).

    sets = scoring_sets(["humaneval", "mbpp"], tokenizer, max_len=512, data_paths=...)
    bpb = phi_jax.bpb.bits_per_byte(phi_jax.bpb.model_nll_sums(model), sets["humaneval"], 8)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from eval.benchmarks import Problem, get_benchmark
from phi_jax import bpb as bpb_lib
from phi_jax.tokenizer import Tokenizer


def scoring_set(problems: Sequence[Problem], tokenizer: Tokenizer, max_len: int,
                limit: int = 0) -> bpb_lib.ScoringSet:
  """Prompt -> canonical solution rows of `problems` (those without a solution skipped)."""
  scored = [p for p in problems if p.canonical_solution]
  if limit:
    scored = scored[:limit]
  if not scored:
    raise ValueError("no problem with a canonical solution to score")
  contexts = tokenizer.encode_batch([p.prompt for p in scored])
  targets = tokenizer.encode_batch([p.canonical_solution for p in scored])
  sizes = [len(p.canonical_solution.encode("utf-8")) for p in scored]
  return bpb_lib.build_scoring_set(
      contexts, targets, sizes, max_len,
      cut_bytes=lambda ids: len(tokenizer.decode(ids).encode("utf-8")))


def scoring_sets(benchmarks: Sequence[str], tokenizer: Tokenizer, max_len: int, *,
                 data_paths: Mapping[str, str | None] | None = None,
                 benchmark_options: Mapping[str, Mapping] | None = None,
                 limit: int = 0) -> tuple[dict[str, bpb_lib.ScoringSet], dict[str, str]]:
  """The scoring set of each benchmark whose data loads; (sets, {benchmark: why skipped}).

  data_paths: local data per benchmark (None = its default source). benchmark_options:
  constructor options per benchmark (MBPP's prompt_format).
  """
  sets, skipped = {}, {}
  for name in benchmarks:
    benchmark = get_benchmark(name, **dict((benchmark_options or {}).get(name, {})))
    try:
      problems = benchmark.load((data_paths or {}).get(name) or None)
    except FileNotFoundError as e:
      skipped[name] = str(e)
      continue
    sets[name] = scoring_set(problems, tokenizer, max_len, limit)
  return sets, skipped


def evaluate_bpb(nll_sums: bpb_lib.NllSums, sets: Mapping[str, bpb_lib.ScoringSet],
                 batch_size: int) -> dict[str, float]:
  """{'bpb_<benchmark>': bits per byte} of one model over the scoring sets."""
  return {f"bpb_{name}": bpb_lib.bits_per_byte(nll_sums, scoring, batch_size)
          for name, scoring in sets.items()}
