"""HumanEval+ and MBPP+ (EvalPlus, Liu et al. 2023): the same problems, many more tests.

EvalPlus's released files (HumanEvalPlus-v0.1.10.jsonl, MbppPlus-v0.2.0.jsonl, from the
evalplus/humanevalplus_release and mbppplus_release GitHub releases; the user passes the
path) hold, per problem: task_id, prompt, entry_point, canonical_solution, base_input (the
original benchmark's test inputs), plus_input (EvalPlus's added inputs) and atol. There
are no expected outputs: the reference solution's outputs on the same inputs are the
oracle, and its run time sets each input's time limit; the candidate's inputs together
get at most min(60 s, the sum of those limits) + 1 s, as in EvalPlus (see
`_evalplus_check.py`). Before a problem's samples run, `prepare` runs its reference once
in the sandbox (as EvalPlus computes expected outputs once per problem) and each
sample's program carries the result, so the reference does not run again per sample; a
problem whose reference fails gets no oracle, and its programs run the reference and
report why. The evaluator gives each program the wall clock both runs may take
(`timeout_s`), whatever its own per-program timeout.

Benchmarks: `humaneval+` and `mbpp+` test on base + plus inputs (EvalPlus's "plus"
score); `humaneval+base` and `mbpp+base` on the base inputs only (its "base" score).
Prompts are the files' `prompt` (HumanEval+: signature and docstring, continued by the
model; MBPP+: a docstring with the description and one assert, after which the model
writes the function); stop sequences are HumanEval's and MBPP's.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from eval.benchmarks import _evalplus_check
from eval.benchmarks.base import Benchmark, Problem, embedded_source, read_rows
from eval.benchmarks.humaneval import HumanEval
from eval.benchmarks.mbpp import MBPP

FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "base_input", "plus_input")
# evalplus/evaluate.py's defaults (v0.3): per input, max(4 s, 4 x the reference's time)
MIN_TIME_LIMIT_S = 4.0
TIME_LIMIT_FACTOR = 4.0
# evalplus/eval/__init__.py untrusted_check: a task's candidate gets
# min(EVALPLUS_TIMEOUT_PER_TASK = 60 s, the sum of its inputs' limits) + 1 s in all
TASK_TIME_LIMIT_S = 60.0
STARTUP_S = 5.0  # the program's start and its compiles, beside the two timed phases
# stdout kept from an oracle program: the pickled outputs of every input, in base64
ORACLE_OUTPUT_KB = 256 << 10


class _EvalPlus(Benchmark):
  """One EvalPlus dataset; `plus` chooses base + plus inputs (True) or base inputs only."""

  dataset: str = ""  # 'humaneval' or 'mbpp': which of EvalPlus's oracles apply
  release_file: str = ""
  plus: bool = True
  fixed_limits = False  # each input's limit comes from timing the reference on this machine

  def __init__(self, min_time_limit_s: float = MIN_TIME_LIMIT_S,
               time_limit_factor: float = TIME_LIMIT_FACTOR,
               task_time_limit_s: float = TASK_TIME_LIMIT_S):
    if min_time_limit_s <= 0 or time_limit_factor <= 0 or task_time_limit_s <= 0:
      raise ValueError(f"{self.name}: time limits must be positive, got min_time_limit_s="
                       f"{min_time_limit_s}, time_limit_factor={time_limit_factor}, "
                       f"task_time_limit_s={task_time_limit_s}")
    self.min_time_limit_s = min_time_limit_s
    self.time_limit_factor = time_limit_factor
    self.task_time_limit_s = task_time_limit_s
    self._oracles: dict[str, str] = {}  # task_id -> print_oracle's output (`prepare`)

  def load(self, path: str | None = None) -> list[Problem]:
    problems = []
    for where, row in read_rows(self.name, path, FIELDS, f"EvalPlus's {self.release_file}"):
      for field in ("base_input", "plus_input"):
        if not isinstance(row[field], list):
          raise ValueError(f"{where}: {field} must be a list of argument lists")
      inputs = row["base_input"] + (row["plus_input"] if self.plus else [])
      test = json.dumps({"inputs": inputs, "atol": float(row.get("atol") or 0)})
      problems.append(Problem(task_id=row["task_id"], prompt=row["prompt"], test=test,
                              entry_point=row["entry_point"],
                              canonical_solution=row["canonical_solution"]))
    if not problems:
      raise ValueError(f"{path}: no problems")
    return problems

  def timeout_s(self, problem: Problem) -> float:
    # the reference's run (capped at the task limit), then the candidate's (the task
    # limit + 1 s at most, as in EvalPlus), then start-up
    del problem
    return 2 * self.task_time_limit_s + 1.0 + STARTUP_S

  def _arguments(self, problem: Problem) -> str:
    """The keyword arguments `check` and `print_oracle` share, as Python source."""
    test = json.loads(problem.test)
    return (f"dataset={self.dataset!r}, task_id={problem.task_id!r}, "
            f"entry_point={problem.entry_point!r}, "
            f"reference={problem.prompt + problem.canonical_solution!r}, "
            f"inputs_json={json.dumps(test['inputs'])!r}, "
            f"min_time_limit_s={self.min_time_limit_s!r}, "
            f"time_limit_factor={self.time_limit_factor!r}, "
            f"task_time_limit_s={self.task_time_limit_s!r}")

  def oracle_program(self, problem: Problem) -> str:
    """The program that runs the reference on every input and prints the oracle."""
    return (embedded_source("_evalplus_check.py") + "\n\n"
            + f"print_oracle({self._arguments(problem)})\n")

  def prepare(self, problems: Sequence[Problem], sandbox, workers: int | None = None) -> None:
    """Runs each problem's reference once (`oracle_program`) and keeps the oracles that
    `program` hands the samples' programs."""
    limits = dataclasses.replace(
        sandbox.limits, timeout_s=self.task_time_limit_s + STARTUP_S,
        cpu_s=max(sandbox.limits.cpu_s, int(self.task_time_limit_s + STARTUP_S)),
        max_output_kb=ORACLE_OUTPUT_KB)
    outcomes = sandbox.with_limits(limits).run_many(
        [self.oracle_program(p) for p in problems], workers=workers)
    for problem, outcome in zip(problems, outcomes):
      line = outcome.stdout_tail.rstrip("\n").rpartition("\n")[2]
      if outcome.passed and line.startswith(_evalplus_check.ORACLE_MARK):
        self._oracles[problem.task_id] = line[len(_evalplus_check.ORACLE_MARK):]

  def program(self, problem: Problem, completion: str) -> str:
    test = json.loads(problem.test)
    oracle = self._oracles.get(problem.task_id, "")
    call = (f"check({self._arguments(problem)}, "
            f"candidate={problem.prompt + completion!r}, atol={test['atol']!r}, "
            f"oracle={oracle!r})\n")
    return embedded_source("_evalplus_check.py") + "\n\n" + call


class HumanEvalPlus(_EvalPlus):
  name = "humaneval+"
  dataset = "humaneval"
  release_file = "HumanEvalPlus-v0.1.10.jsonl"
  stop = HumanEval.stop


class HumanEvalPlusBase(HumanEvalPlus):
  name = "humaneval+base"
  plus = False


class MBPPPlus(_EvalPlus):
  name = "mbpp+"
  dataset = "mbpp"
  release_file = "MbppPlus-v0.2.0.jsonl"
  stop = MBPP.stop


class MBPPPlusBase(MBPPPlus):
  name = "mbpp+base"
  plus = False
