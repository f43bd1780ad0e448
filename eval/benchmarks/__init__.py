"""The benchmarks, by name."""

from eval.benchmarks.base import Benchmark, Problem, truncate_at_stop
from eval.benchmarks.humaneval import HumanEval
from eval.benchmarks.mbpp import MBPP

BENCHMARKS = {b.name: b for b in (HumanEval, MBPP)}


def get_benchmark(name: str, **options) -> Benchmark:
  """The benchmark `name`, built with its options (MBPP: prompt_format)."""
  try:
    cls = BENCHMARKS[name]
  except KeyError:
    raise ValueError(f"unknown benchmark {name!r}; available: {sorted(BENCHMARKS)}") from None
  return cls(**options)


__all__ = ["BENCHMARKS", "Benchmark", "HumanEval", "MBPP", "Problem", "get_benchmark",
           "truncate_at_stop"]
