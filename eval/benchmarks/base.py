"""What a benchmark is: problems, how to prompt them, how to test a completion.

Adding a benchmark is one module with a `Benchmark` subclass: `load()` returns the
problems, `program()` turns a problem and a completion into the Python program whose
successful run means the completion is correct.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True)
class Problem:
  task_id: str
  prompt: str  # the text the model continues
  test: str  # test code (benchmark-specific; see Benchmark.program)
  entry_point: str = ""  # the function under test, where the benchmark names one
  canonical_solution: str | None = None  # a completion known to pass
  setup: str = ""  # code to run before the program (imports, fixtures)


class Benchmark(abc.ABC):
  """A code-generation benchmark scored by executing tests."""

  name: str = ""
  # stop sequences that end a completion (the model would start a new top-level block)
  stop: Sequence[str] = ()

  @abc.abstractmethod
  def load(self, path: str | None = None) -> list[Problem]:
    """The problems, from `path` or the benchmark's default source."""

  @abc.abstractmethod
  def program(self, problem: Problem, completion: str) -> str:
    """The program that exits normally iff the completion passes the tests."""


def truncate_at_stop(completion: str, stop: Sequence[str]) -> str:
  """The completion up to the earliest stop sequence (for samples from elsewhere)."""
  cut = min((i for i in (completion.find(s) for s in stop) if i >= 0), default=-1)
  return completion if cut < 0 else completion[:cut]
