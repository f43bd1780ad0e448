"""The report's Decontamination section: per corpus and benchmark what each check
flagged and (when pruning) removed, the flagged records, example pairs per AST match-rate
band, and Table 3's layout for this run's model with the paper's rows beside it.

Read from decontaminate/summary.json, decontaminate/<corpus>/{report.json,matches.jsonl}
and eval/<benchmark>/results.jsonl (the pass rates); recipe/paper.py gives the paper's."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from recipe.reporting.blocks import Block, excerpt, fmt, read_json, read_jsonl, where

MATCHES_LISTED = 10


def pruned_corpora(summary: Mapping[str, Any], config: Mapping[str, Any] | None) -> set[str]:
  """The corpora whose flagged records the training data left out: those the run's
  config.decontaminate prunes (the tokenizer and datasets read it; the decontaminate
  stage's files are the same either way)."""
  from data_pipeline.decontaminate.config import DecontConfig  # pylint: disable=g-import-not-at-top
  section_config = dict((config or {}).get("decontaminate") or {})
  settings = DecontConfig.from_mapping(
      {k: v for k, v in section_config.items() if k in DecontConfig.__dataclass_fields__})
  return set(settings.pruned(list(summary.get("corpora") or {})))


def eval_results(workdir: str, benchmark: str) -> dict[str, list[bool]]:
  """task_id -> whether each of its samples passed, for the evaluated model."""
  passed: dict[str, list[bool]] = {}
  for row in read_jsonl(os.path.join(workdir, "eval", benchmark, "results.jsonl")):
    passed.setdefault(row["task_id"], []).append(bool(row["passed"]))
  return passed


def _similar_union(reports: Mapping[str, Any]) -> dict[str, dict[float, set[str]]]:
  """benchmark -> tau -> the problems similar to a record of any checked corpus."""
  out: dict[str, dict[float, set[str]]] = {}
  for report in reports.values():
    for benchmark, by_tau in report.get("similar", {}).items():
      for tau, ids in by_tau.items():
        out.setdefault(benchmark, {}).setdefault(float(tau), set()).update(ids)
  return out


def _matched_records(workdir: str, dataset: str, limit: int) -> list[dict]:
  """The first `limit` records of a corpus that a check flagged (matches.jsonl)."""
  rows = []
  for row in read_jsonl(os.path.join(workdir, "decontaminate", dataset, "matches.jsonl")):
    if row.get("flags"):
      rows.append(row)
      if len(rows) >= limit:
        break
  return rows


def section(workdir: str, config: Mapping[str, Any] | None) -> list[Block]:
  summary = read_json(os.path.join(workdir, "decontaminate", "summary.json"))
  blocks: list[Block] = [("h", 2, "Decontamination")]
  if summary is None:
    return blocks + [("p", "No decontaminate/summary.json: the decontaminate stage has not "
                           "run.")]
  corpora = summary.get("corpora", {})
  pruned = pruned_corpora(summary, config)
  if pruned:
    blocks.append(("p", "The training data was pruned: the tokenizer and datasets read the "
                        f"kept records of {', '.join(sorted(pruned))} "
                        "(config.decontaminate.prune)."))
  else:
    blocks.append(("p", "An analysis, as the paper's phi-1: nothing was removed from the "
                        "training data (config.decontaminate.prune is off). \"flagged\" "
                        "counts the records a pruning would remove."))
  unavailable = summary.get("unavailable") or {}
  if unavailable:
    blocks.append(("p", "Not checked (no data): " + ", ".join(
        f"{name} ({why})" for name, why in sorted(unavailable.items())) + "."))
  rows = []
  for dataset, result in sorted(corpora.items()):
    rows.append((dataset, f"{fmt(result.get('records'))} records", fmt(result.get("removed")),
                 str(result.get("removed") if dataset in pruned else 0),
                 ", ".join(f"{k} {v}" for k, v in sorted(result.get("flagged_by", {}).items()))
                 or "-"))
  blocks.append(("table", ("corpus", "checked", "flagged", "removed from training",
                           "flagged by check"), rows))
  reports = {dataset: read_json(os.path.join(workdir, "decontaminate", dataset, "report.json"))
             or {} for dataset in corpora}
  blocks += _bands(reports)
  for dataset in sorted(corpora):
    matches = _matched_records(workdir, dataset, MATCHES_LISTED)
    if not matches:
      continue
    blocks += [("h", 3, f"Similar records: {dataset}"),
               ("p", f"The first {len(matches)} flagged records "
                     f"(decontaminate/{dataset}/matches.jsonl lists them all)."),
               ("table", ("record", "where", "flags", "nearest problem (AST tau)",
                          "removed from training"),
                [(str(m["id"]), where(m.get("where"), workdir), ", ".join(m["flags"]),
                  ", ".join(f"{t} ({tau:.2f})" for t, tau in sorted(
                      (m.get("ast_similar") or {}).items(), key=lambda kv: -kv[1])[:2]) or "-",
                  "yes" if dataset in pruned and m.get("removed") else "no")
                 for m in matches])]
  blocks += _examples(workdir, reports)
  blocks += _table3(workdir, reports)
  return blocks


def _bands(reports: Mapping[str, Any]) -> list[Block]:
  """Records within each AST match-rate tau, per corpus (cumulative: tau 0.8 counts those
  of 0.95 too)."""
  taus = sorted({float(t) for r in reports.values()
                 for t in ((r.get("summary") or {}).get("ast_within_tau") or {})}, reverse=True)
  if not taus:
    return []
  rows = []
  for dataset, report in sorted(reports.items()):
    within = (report.get("summary") or {}).get("ast_within_tau") or {}
    rows.append((dataset,) + tuple(fmt(within.get(_key(within, tau))) for tau in taus))
  return [("p", "Records within AST match rate tau of some benchmark problem:"),
          ("table", ("corpus",) + tuple(f"tau >= {tau:g}" for tau in taus), rows)]


def _key(mapping: Mapping[str, Any], tau: float) -> str | None:
  for key in mapping:
    if abs(float(key) - tau) < 1e-9:
      return key
  return None


def _examples(workdir: str, reports: Mapping[str, Any]) -> list[Block]:
  """One pair (training record, benchmark problem) per match-rate band and corpus, as
  the paper's Appendix C shows them."""
  blocks: list[Block] = []
  for dataset, report in sorted(reports.items()):
    examples = report.get("examples") or {}
    pairs = []
    for band in sorted(examples, key=float, reverse=True):
      if examples[band]:
        pairs.append((band, examples[band][0]))
    if not pairs:
      continue
    blocks.append(("h", 3, f"Example pairs by match rate: {dataset}"))
    for band, pair in pairs:
      blocks += [("p", f"Band tau >= {float(band):g}: `{pair.get('task_id')}` and the record at "
                       f"`{where(pair.get('where'), workdir)}`, AST match rate "
                       f"{float(pair.get('tau')):.2f}."),
                 ("pre", excerpt(pair.get("benchmark_code"), lines=8)),
                 ("pre", excerpt(pair.get("sample_code"), lines=8))]
  return blocks


def _table3(workdir: str, reports: Mapping[str, Any]) -> list[Block]:
  from data_pipeline.decontaminate import report as decont_report  # pylint: disable=g-import-not-at-top
  from recipe import paper  # pylint: disable=g-import-not-at-top
  blocks: list[Block] = []
  for benchmark, similar in sorted(_similar_union(reports).items()):
    passed = eval_results(workdir, benchmark)
    task_ids = sorted(passed) if passed else []
    if not task_ids:
      blocks += [("h", 3, f"Table 3 layout: {benchmark}"),
                 ("p", "Similar problems per tau: " + ", ".join(
                     f"{tau:g}: {len(ids)}" for tau, ids in sorted(similar.items(), reverse=True))
                  + " (no evaluation results for the pass rates).")]
      continue
    rows3 = decont_report.table3(similar, task_ids, {"this run": passed})
    table = []
    for r in rows3:
      theirs = {name: (n, rates) for name, n, rates in paper.table3_rows(r["tau"])}
      n, rates = theirs.get(r["set"], (None, ()))
      rate = r["pass_rate"]["this run"]
      table.append((f"{r['tau']:g}" if r["set"] == "similar" else "", r["set"],
                    str(r["problems"]), "-" if rate is None else f"{100 * rate:.1f}%",
                    fmt(n),
                    *([f"{v:.1f}%" for v in rates[:2]] if rates else ["-", "-"])))
    blocks += [("h", 3, f"Table 3 layout: {benchmark}, similar vs non-similar problems"),
               ("p", f"Similar: some record of the checked corpora within AST match rate tau "
                     f"of the problem; pass rates of this run's evaluated model over the "
                     f"{len(task_ids)} evaluated problems. The paper's columns ({paper.CITATION}, "
                     "Table 3) are for CodeExercises against all 164 HumanEval problems "
                     "at 1.3B parameters."),
               ("table", ("tau", "", "problems", "pass rate (this run)", "paper: problems",
                          "paper: phi-1", "paper: phi-1 retrained on pruned data"), table)]
  return blocks
