"""The decontamination report: report.json and report.md (phi-1's Table 3 and Appendix C).

For each tau of the report, a benchmark problem is "similar" when some training record
reaches an AST match rate >= tau with it, "non-similar" otherwise. Given evaluation
results (eval/run.py's results.jsonl: one row per sample, {"task_id", "passed", ...}),
a problem's pass rate is its fraction of passing samples (pass@1 for one greedy sample)
and a set's pass rate the mean over its problems that have results; the table lays
these out like the paper's Table 3, one column per results file:

    | tau  |             | problems | phi-1 | phi-1 pruned |
    | 0.95 | similar     |       71 | 81.7% |        74.6% |
    |      | non-similar |       93 | 26.9% |        32.3% |
    |      | total       |      164 | 50.6% |        50.6% |

Example pairs (a record's code unit and the benchmark function it matched) are shown
for each band of match rates [tau_i, tau_(i-1)), like the paper's Appendix C.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

from data_pipeline.decontaminate.config import PRUNE_FIELDS
from phi_jax import atomic
from phi_jax.jsonl import read_jsonl

_NEAREST_ORDER = ("ast", "ngram", "embedding")


def nearest(verdict) -> dict[str, Any]:
  """The benchmark problem a removed record is nearest to, by the first check (AST, then
  n-gram, then embedding) that flagged it."""
  for check in _NEAREST_ORDER:
    if check in verdict.flags:
      score = verdict.scores[check]
      return {"benchmark": score["benchmark"], "task_id": score["task_id"], "by": check}
  return {}


def read_results(path: str) -> dict[str, list[bool]]:
  """task_id -> the `passed` of each of its samples, from an evaluation results.jsonl.

  Raises:
    ValueError: a line without a string task_id and a boolean passed (names file:line).
  """
  passed: dict[str, list[bool]] = {}
  for number, row in read_jsonl(path):
    if not isinstance(row.get("task_id"), str) or not isinstance(row.get("passed"), bool):
      raise ValueError(f"{path}:{number}: expected an evaluation result with a string "
                       "'task_id' and a boolean 'passed' (eval/run.py's results.jsonl)")
    passed.setdefault(row["task_id"], []).append(row["passed"])
  if not passed:
    raise ValueError(f"{path}: no results")
  return passed


def _pass_rate(passed: Mapping[str, list[bool]], task_ids: Sequence[str]) -> float | None:
  rates = [sum(passed[t]) / len(passed[t]) for t in task_ids if t in passed]
  return sum(rates) / len(rates) if rates else None


def table3(similar: Mapping[float, set[str]], task_ids: Sequence[str],
           results: Mapping[str, Mapping[str, list[bool]]]) -> list[dict[str, Any]]:
  """Rows of Table 3 for one benchmark: for each tau, similar / non-similar / total.

  Args:
    similar: tau -> the task ids of the similar problems.
    task_ids: all the benchmark's problems.
    results: label -> task_id -> passed of each sample.
  """
  rows = []
  for tau in sorted(similar, reverse=True):
    near = [t for t in task_ids if t in similar[tau]]
    far = [t for t in task_ids if t not in similar[tau]]
    for name, ids in (("similar", near), ("non-similar", far), ("total", list(task_ids))):
      rows.append({"tau": tau, "set": name, "problems": len(ids),
                   "pass_rate": {label: _pass_rate(r, ids) for label, r in results.items()},
                   "with_results": {label: sum(t in r for t in ids)
                                    for label, r in results.items()}})
  return rows


def _percent(value: float | None) -> str:
  return "-" if value is None else f"{100 * value:.1f}%"


def _table3_md(rows: Sequence[dict], labels: Sequence[str]) -> list[str]:
  lines = ["| tau | | problem count |" + "".join(f" {label} |" for label in labels),
           "|---|---|---:|" + "---:|" * len(labels)]
  for row in rows:
    tau = f"{row['tau']:g}" if row["set"] == "similar" else ""
    rates = "".join(f" {_percent(row['pass_rate'][label])} |" for label in labels)
    lines.append(f"| {tau} | {row['set']} | {row['problems']} |{rates}")
  return lines


def _counts_md(summary: Mapping[str, Any]) -> list[str]:
  lines = ["| check | flagged | among the removed | decides |", "|---|---:|---:|---|"]
  for check in summary["checks"]:
    lines.append(f"| {check} | {summary['flagged_by'].get(check, 0)} | "
                 f"{summary['removed_by'].get(check, 0)} | "
                 f"{'yes' if check in summary['deciding_checks'] else 'no (reported only)'} |")
  return lines


def _fence(code: str) -> list[str]:
  return ["```python", code.rstrip("\n"), "```"]


def write_report(tally, out_dir: str, *, unavailable: Mapping[str, str],
                 results: Mapping[str, Mapping[str, list[bool]]]) -> dict:
  """Writes report.json and report.md from a prune.Tally; returns the summary."""
  d, config = tally.d, tally.d.config
  benchmarks: dict[str, list[str]] = {}
  for target in d.targets:
    benchmarks.setdefault(target.benchmark, []).append(target.task_id)
  similar = {name: {tau: {d.targets[t].task_id for t, best in tally.target_tau.items()
                          if best >= tau and d.targets[t].benchmark == name}
                    for tau in tally.taus} for name in benchmarks}
  summary = {
      "records": tally.records, "kept": tally.kept, "removed": tally.removed,
      "checks": list(config.checks), "deciding_checks": d.deciding_checks(),
      "flagged_by": dict(tally.flagged), "removed_by": dict(tally.removed_by),
      "prune_tau": config.prune_tau,
      "removed_at_tau": {f"{tau:g}": tally.removed_at[tau] for tau in tally.taus},
      "ast_within_tau": {f"{tau:g}": tally.ast_at[tau] for tau in tally.taus},
      "similar_problems": {name: {f"{tau:g}": len(s) for tau, s in by_tau.items()}
                           for name, by_tau in similar.items()},
      "bad_input": dict(tally.bad), "unparsable": tally.unparsable, "no_code": tally.no_code,
      "benchmarks": {name: len(ids) for name, ids in benchmarks.items()},
      "unavailable_benchmarks": dict(unavailable),
      "out_dir": out_dir,
  }
  if d.embedding is not None:
    self_d = d.embedding.self_distances()
    summary["embedding"] = {
        "model": d.embedding.source, "informative": d.embedding.informative,
        "decides": d.embed_decides, "threshold": config.embed_threshold,
        "problems_within_threshold": len(tally.embed_targets),
        "benchmark_nearest_other_median": float(sorted(self_d)[len(self_d) // 2])}
  if d.ast is not None:
    summary["ast"] = {"exact_distances": d.ast_computed, "pairs_pruned_by_bounds": d.ast_pruned}
  tables = {name: table3(similar[name], ids, {label: {t: p for t, p in r.items()
                                                      if t in set(ids)}
                                              for label, r in results.items()})
            for name, ids in benchmarks.items()}
  report = {
      "summary": summary,
      # what the checks computed with; the recipe's pruning fields are not theirs
      "config": {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                 if f.name not in PRUNE_FIELDS},
      "similar": {name: {f"{tau:g}": sorted(s) for tau, s in by_tau.items()}
                  for name, by_tau in similar.items()},
      "ngram_problems": dict(tally.ngram_targets),
      "embedding_problems": tally.embed_targets,
      "table3": tables,
      "examples": {f"{tau:g}": ex for tau, ex in tally.examples.items()},
      "bad_input_listed": tally.bad_listed, "unparsable_listed": tally.unparsable_listed,
  }
  atomic.write_json(report, os.path.join(out_dir, "report.json"))
  atomic.write_text(os.path.join(out_dir, "report.md"),
                    "\n".join(_markdown(report, list(results))) + "\n")
  return summary


def _markdown(report: Mapping[str, Any], labels: Sequence[str]) -> list[str]:
  summary, config = report["summary"], report["config"]
  lines = ["# Decontamination report", "",
           f"{summary['records']} records: {summary['kept']} kept, {summary['removed']} "
           f"removed (AST match rate >= {config['prune_tau']:g}, n-gram: "
           f"{config['ngram_n']} {config['ngram_unit']} x {config['ngram_min_matches']}"
           + (f", embedding L2 <= {config['embed_threshold']:g}"
              if "embedding" in summary["deciding_checks"] else "") + ").",
           "", "Benchmarks: " + ", ".join(f"{n} ({k} problems)"
                                          for n, k in summary["benchmarks"].items()) + "."]
  for name, why in summary["unavailable_benchmarks"].items():
    lines.append(f"**{name} was not checked**: {why}")
  lines += ["", "## Records flagged by each check", ""] + _counts_md(summary)
  emb = summary.get("embedding")
  if emb:
    verdict = ("informative" if emb["informative"] else
               "UNINFORMATIVE (a randomly initialised model: random features)")
    lines += ["", f"Embedding model: {emb['model']}: {verdict}; "
              f"{'decides' if emb['decides'] else 'reported only'}. Distinct benchmark "
              f"problems lie a median {emb['benchmark_nearest_other_median']:.3f} from "
              f"their nearest other problem (the scale of the threshold "
              f"{emb['threshold']:g})."]
  if "ast" in summary:
    lines += ["", f"AST: {summary['ast']['exact_distances']} exact tree edit distances; "
              f"{summary['ast']['pairs_pruned_by_bounds']} pairs ruled out by the "
              "size/histogram bounds."]
  lines += ["", "## Pruning by AST match rate", "",
            "| tau | records within tau | records removed pruning at tau | "
            + " | ".join(f"similar {n} problems" for n in summary["benchmarks"]) + " |",
            "|---:|---:|---:|" + "---:|" * len(summary["benchmarks"])]
  for tau, n in summary["ast_within_tau"].items():
    similar = " | ".join(str(summary["similar_problems"][b][tau]) for b in summary["benchmarks"])
    lines.append(f"| {tau} | {n} | {summary['removed_at_tau'][tau]} | {similar} |")
  for name, rows in report["table3"].items():
    lines += ["", f"## Table 3: {name} pass rates on similar and non-similar problems", ""]
    if not labels:
      lines += ["(pass --results=results.jsonl of an evaluation for the pass rates)", ""]
    lines += _table3_md(rows, labels)
    partial = [f"{label}: {rows[-1]['with_results'][label]} of {rows[-1]['problems']}"
               for label in labels if rows and rows[-1]["with_results"][label]
               < rows[-1]["problems"]]
    if partial:
      lines += ["", "Pass rates are over the problems with results (" + ", ".join(partial)
                + " problems evaluated)."]
  lines += ["", "## Example pairs (Appendix C)"]
  for tau, examples in report["examples"].items():
    for ex in examples:
      lines += ["", f"### tau {ex['tau']:.3f} (band >= {tau}): record {ex['id']} "
                f"({ex['where']}) vs {ex['task_id']}", ""]
      lines += _fence(ex["sample_code"]) + [""] + _fence(ex["benchmark_code"])
  bad = summary["bad_input"]
  if bad or report["unparsable_listed"]:
    lines += ["", "## Bad input", "",
              f"Skipped lines/records: {sum(bad.values())} "
              f"({', '.join(f'{k}: {v}' for k, v in bad.items()) or 'none'}); records whose "
              f"code does not parse (kept out of the AST check only): {summary['unparsable']}.",
              ""]
    lines += [f"- {line}" for line in report["bad_input_listed"] + report["unparsable_listed"]]
  return lines
