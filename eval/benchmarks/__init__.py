"""The benchmarks, by name."""

from eval.benchmarks.base import Benchmark, Problem, truncate_at_stop
from eval.benchmarks.humaneval import HumanEval
from eval.benchmarks.mbpp import MBPP

BENCHMARKS = {b.name: b for b in (HumanEval, MBPP)}


def get_benchmark(name: str) -> Benchmark:
  try:
    return BENCHMARKS[name]()
  except KeyError:
    raise ValueError(f"unknown benchmark {name!r}; available: {sorted(BENCHMARKS)}") from None


__all__ = ["BENCHMARKS", "Benchmark", "HumanEval", "MBPP", "Problem", "get_benchmark",
           "truncate_at_stop"]
