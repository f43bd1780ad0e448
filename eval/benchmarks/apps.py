"""APPS (Hendrycks et al. 2021): competitive-programming problems with stdin/stdout and
call-based tests, in three difficulty levels.

Data, from the path the user passes (nothing is downloaded), in either public form:

- JSONL, one problem a line (the `test.jsonl` of the Hugging Face dataset
  `codeparrot/apps`): problem_id, question, starter_code, difficulty ('introductory',
  'interview' or 'competition'), solutions (a JSON string: a list of programs) and
  input_output (a JSON string: {"inputs": [...], "outputs": [...], "fn_name"?: str});
- the original release's folder (APPS.tar.gz's `test/`): one folder per problem, named
  by its id, with question.txt, input_output.json, metadata.json ({"difficulty", "url"}),
  and optionally solutions.json and starter_code.py.

Benchmarks: `apps` (all problems), `apps-introductory`, `apps-interview` and
`apps-competition`. The prompt is the APPS paper's: "\\nQUESTION:\\n" + question, the
starter code, "Use Call-Based format" or "Use Standard Input format", "\\nANSWER:\\n";
the completion is the whole program. Each test case runs with a 4 s limit (APPS's
testing_util timeout); see `_apps_check.py` for how outputs are compared.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from eval.benchmarks.base import Benchmark, Problem, embedded_source, read_rows

FIELDS = ("problem_id", "question", "input_output", "difficulty")
DIFFICULTIES = ("introductory", "interview", "competition")
TIME_LIMIT_S = 4.0


def _decoded(value, what: str, where: str):
  """APPS stores lists and dicts as JSON strings; either form is accepted."""
  if isinstance(value, str):
    try:
      return json.loads(value) if value.strip() else None
    except json.JSONDecodeError as e:
      raise ValueError(f"{where}: {what} is not valid JSON ({e})") from None
  return value


def _folder_rows(path: str) -> Iterator[tuple[str, dict]]:
  """(where, row) of the original release's per-problem folders, in the JSONL's fields."""
  names = sorted((n for n in os.listdir(path) if n.isdigit()), key=int)
  if not names:
    raise ValueError(f"{path}: no problem folders (named by problem id) in it")
  for name in names:
    folder = os.path.join(path, name)

    def text(file_name, required=True, folder=folder):
      file_path = os.path.join(folder, file_name)
      if not os.path.isfile(file_path):
        if required:
          raise ValueError(f"{folder}: no {file_name}")
        return ""
      with open(file_path, encoding="utf-8") as f:
        return f.read()

    metadata = _decoded(text("metadata.json"), "metadata.json", folder) or {}
    yield folder, {"problem_id": int(name), "question": text("question.txt"),
                   "input_output": text("input_output.json"),
                   "solutions": text("solutions.json", required=False),
                   "starter_code": text("starter_code.py", required=False),
                   "difficulty": metadata.get("difficulty")}


def prompt_for(question: str, starter_code: str, call_based: bool) -> str:
  """The APPS paper's prompt (its generate_gpt_codes.py)."""
  text = "\nQUESTION:\n" + question
  if starter_code:
    text += "\n" + starter_code
  text += "\nUse Call-Based format" if call_based else "\nUse Standard Input format"
  return text + "\nANSWER:\n"


class APPS(Benchmark):
  """APPS problems of one difficulty (`difficulty`), or all of them (None)."""

  name = "apps"
  difficulty: str | None = None
  stop = ("\nQUESTION:", "\nANSWER:")

  def __init__(self, time_limit_s: float = TIME_LIMIT_S):
    if time_limit_s <= 0:
      raise ValueError(f"{self.name}: time_limit_s must be positive, got {time_limit_s}")
    self.time_limit_s = time_limit_s

  def load(self, path: str | None = None) -> list[Problem]:
    source = ("the APPS test split: JSONL (the codeparrot/apps dataset's test.jsonl) or the "
              "original release's test/ folder")
    rows = (_folder_rows(path) if path is not None and os.path.isdir(path)
            else read_rows(self.name, path, FIELDS, source))
    problems = []
    for where, row in rows:
      if row["difficulty"] not in DIFFICULTIES:
        raise ValueError(f"{where}: difficulty {row['difficulty']!r} is not one of "
                         f"{DIFFICULTIES}")
      if self.difficulty is not None and row["difficulty"] != self.difficulty:
        continue
      tests = _decoded(row["input_output"], "input_output", where)
      if (not isinstance(tests, dict) or not isinstance(tests.get("inputs"), list)
          or not isinstance(tests.get("outputs"), list)
          or len(tests["inputs"]) != len(tests["outputs"]) or not tests["inputs"]):
        raise ValueError(f"{where}: input_output must hold equally long, non-empty "
                         "'inputs' and 'outputs' lists")
      solutions = _decoded(row.get("solutions") or "", "solutions", where) or []
      starter_code = row.get("starter_code") or ""
      problems.append(Problem(
          task_id=f"APPS/{row['problem_id']}",
          prompt=prompt_for(row["question"], starter_code, bool(tests.get("fn_name"))),
          test=json.dumps({k: tests[k] for k in ("inputs", "outputs", "fn_name") if k in tests}),
          entry_point=tests.get("fn_name") or "",
          canonical_solution=solutions[0] if solutions else None))
    if not problems:
      raise ValueError(f"{path}: no {self.difficulty or ''} problems".replace("  ", " "))
    return problems

  def timeout_s(self, problem: Problem) -> float:
    # each test case's limit plus 1 s to feed it and compare, plus 5 s to start: the
    # global timeout of the APPS-derived harnesses (e.g. LiveCodeBench's)
    return (self.time_limit_s + 1.0) * len(json.loads(problem.test)["inputs"]) + 5.0

  def time_scaled(self, factor: float) -> APPS:
    return self if factor == 1 else type(self)(time_limit_s=self.time_limit_s * factor)

  def program(self, problem: Problem, completion: str) -> str:
    call = (f"check(candidate={completion!r}, tests_json={problem.test!r}, "
            f"time_limit_s={self.time_limit_s!r})\n")
    return embedded_source("_apps_check.py") + "\n\n" + call


class APPSIntroductory(APPS):
  name = "apps-introductory"
  difficulty = "introductory"


class APPSInterview(APPS):
  name = "apps-interview"
  difficulty = "interview"


class APPSCompetition(APPS):
  name = "apps-competition"
  difficulty = "competition"
