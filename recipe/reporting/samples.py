"""The report's Samples section: a few generated completions per evaluated model and
benchmark, with their verdicts and failure kinds.

Read from eval/summary.json and eval/<benchmark>/results.jsonl (the evaluated model),
and eval/checkpoints.json with eval/checkpoints/<stage>_<step>/<benchmark>/results.jsonl
(the checkpoint sweep)."""

from __future__ import annotations

import os
from typing import Any

from recipe.reporting.blocks import Block, excerpt, read_json, read_jsonl

PER_BENCHMARK = 3  # completions shown per model and benchmark


def pick(results: list[dict], n: int = PER_BENCHMARK) -> list[dict]:
  """Up to n results that show the range of verdicts: a passing sample first, then one
  per failure kind, then the rest in file order."""
  chosen: list[dict] = []
  passing = [r for r in results if r.get("passed")]
  if passing:
    chosen.append(passing[0])
  seen = set()
  for r in results:
    kind = failure_kind(r)
    if not r.get("passed") and kind not in seen:
      seen.add(kind)
      chosen.append(r)
  for r in results:
    if r not in chosen:
      chosen.append(r)
  return chosen[:n]


def failure_kind(result: dict) -> str:
  """'passed', or the failure's kind (the text before its first ':')."""
  if result.get("passed"):
    return "passed"
  return (str(result.get("failure") or "failed").split(":")[0]) or "failed"


def section(workdir: str) -> list[Block]:
  blocks: list[Block] = [("h", 2, "Samples")]
  summary = read_json(os.path.join(workdir, "eval", "summary.json"))
  if summary is None:
    return blocks + [("p", "No eval/summary.json: the eval stage has not run.")]
  models: list[tuple[str, str]] = [("evaluated model", os.path.join(workdir, "eval"))]
  for entry in read_json(os.path.join(workdir, "eval", "checkpoints.json")) or []:
    directory = os.path.join(workdir, "eval", "checkpoints", str(entry["model"]).replace(":", "_"))
    if os.path.isdir(directory):
      models.append((str(entry["model"]), directory))
  any_shown = False
  for label, directory in models:
    for benchmark in sorted(b for b, v in summary.items() if isinstance(v, dict)):
      results = list(read_jsonl(os.path.join(directory, benchmark, "results.jsonl")))
      if not results:
        continue
      any_shown = True
      blocks.append(("h", 3, f"{label}: {benchmark}"))
      blocks.append(("p", f"{len(results)} samples; {sum(bool(r.get('passed')) for r in results)} "
                          f"passed. Shown: {min(PER_BENCHMARK, len(results))} "
                          f"({os.path.relpath(os.path.join(directory, benchmark, 'results.jsonl'), workdir)} "
                          "has them all)."))
      for r in pick(results):
        blocks += [("p", f"`{r.get('task_id')}` sample {r.get('sample_index', 0)}: "
                         f"**{failure_kind(r)}**" + _duration(r)),
                   ("pre", excerpt(r.get("completion"), lines=10))]
  if not any_shown:
    blocks.append(("p", "No results.jsonl with samples under eval/."))
  return blocks


def _duration(result: dict[str, Any]) -> str:
  d = result.get("duration_s")
  return f" ({float(d):.2f} s)" if isinstance(d, (int, float)) else ""
