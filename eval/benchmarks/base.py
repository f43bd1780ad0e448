"""What a benchmark is: problems, how to prompt them, how to test a completion.

Adding a benchmark is one module with a `Benchmark` subclass: `load()` returns the
problems, `program()` turns a problem and a completion into the Python program whose
successful run means the completion is correct.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import os
from collections.abc import Iterator, Sequence

from phi_jax.jsonl import read_jsonl


@dataclasses.dataclass(frozen=True)
class Problem:
  task_id: str
  prompt: str  # the text the model continues
  test: str  # test code (benchmark-specific; see Benchmark.program)
  entry_point: str = ""  # the function under test, where the benchmark names one
  canonical_solution: str | None = None  # a completion known to pass
  setup: str = ""  # code to run before the program (imports, fixtures)
  suffix: str = ""  # infilling: the text after the middle (the completion fills the gap)


class Benchmark(abc.ABC):
  """A code-generation benchmark scored by executing tests."""

  name: str = ""
  # stop sequences that end a completion (the model would start a new top-level block)
  stop: Sequence[str] = ()
  # the completion fills the gap between a problem's prompt and its suffix: generation
  # prompts the model in the fill-in-the-middle format (phi_jax.fim)
  infilling: bool = False
  # the language of its programs, which the sandbox runs (eval/languages.py)
  language: str = "python"
  # its problems come with reference solutions (bits per byte scores them)
  reference_solutions: bool = True
  # its time limits are fixed numbers (set on some machine), which the evaluator scales
  # by a machine-speed probe (eval/speed.py); False: the benchmark times its programs
  # against its own reference solutions on this machine (EvalPlus)
  fixed_limits: bool = True

  @abc.abstractmethod
  def load(self, path: str | None = None) -> list[Problem]:
    """The problems, from `path` or the benchmark's default source."""

  @abc.abstractmethod
  def program(self, problem: Problem, completion: str) -> str:
    """The program that exits normally iff the completion passes the tests."""

  def prepare(self, problems: Sequence[Problem], sandbox, workers: int | None = None) -> None:
    """Work done once per problem before its samples' programs are built and run, in
    `sandbox` (an `eval.sandbox.Sandbox`) with up to `workers` programs at once: EvalPlus
    runs each reference solution once here. Nothing by default."""
    del problems, sandbox, workers

  def timeout_s(self, problem: Problem) -> float:
    """The wall clock a program of `problem` may need when each of its tests runs up to
    the benchmark's own time limit, start-up included: the evaluator raises the
    sandbox's per-program timeout to it, so that tests within their limits are never
    cut off by the sandbox. 0 = the benchmark has no per-test limits (the sandbox's
    timeout governs)."""
    del problem
    return 0.0

  def time_scaled(self, factor: float) -> Benchmark:
    """This benchmark with its own per-test time limits multiplied by `factor` (a slower
    machine: eval/speed.py); the sandbox's limit is scaled by the evaluator. Itself
    when it has none."""
    del factor
    return self


  def breakdown(self, results: Sequence[dict]) -> dict | None:
    """Pass rates by a property of the problems, from the result rows ({"task_id",
    "passed", ...}), for the report beside the overall pass@k (long-context: by length
    and depth); None = the benchmark has none."""
    del results
    return None


def truncate_at_stop(completion: str, stop: Sequence[str]) -> str:
  """The completion up to the earliest stop sequence (for samples from elsewhere)."""
  cut = min((i for i in (completion.find(s) for s in stop) if i >= 0), default=-1)
  return completion if cut < 0 else completion[:cut]


def read_rows(benchmark: str, path: str | None, fields: Sequence[str],
              source: str) -> Iterator[tuple[str, dict]]:
  """(where, row) for each line of a local JSONL benchmark file; `where` is 'path:line'.

  Args:
    benchmark: the benchmark's name, for messages.
    path: the file the user gave; None is an error naming `source` (nothing is downloaded).
    fields: the fields every row must have.
    source: what the file is and where it is published.
  """
  if path is None:
    raise FileNotFoundError(f"{benchmark}: pass the path of {source}; nothing is downloaded")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{benchmark} data: no file {path}")
  for number, row in read_jsonl(path):
    missing = set(fields) - set(row)
    if missing:
      raise ValueError(f"{path}:{number}: missing field(s) {sorted(missing)}")
    yield f"{path}:{number}", row


@functools.cache
def embedded_source(file_name: str) -> str:
  """The text of a module of this package that programs embed (a checker run in-sandbox)."""
  with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), file_name),
            encoding="utf-8") as f:
    return f.read()
