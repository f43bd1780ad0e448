"""The report's Data section: what the data stage did to the files, as funnels.

Read from data/stats.json (each data step's summary), data/quality/scores.jsonl and
data/curated/code.jsonl (the examples), and decontaminate/summary.json (the
decontamination row of the funnel)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from recipe.reporting import decontamination, plots
from recipe.reporting.blocks import (Block, count, excerpt, fmt, read_json, read_jsonl, rel,
                                     scalar_rows, tokens)

CODE_DATASET = "phi1_filtered_code"  # the dataset the curated code becomes
EXAMPLES = 3  # kept and dropped documents shown
CLASSIFIER_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc")


def section(workdir: str, out_dir: str, config: Mapping[str, Any] | None) -> list[Block]:
  stats = read_json(os.path.join(workdir, "data", "stats.json"))
  blocks: list[Block] = [("h", 2, "Data")]
  if stats is None:
    return blocks + [("p", "No data/stats.json: the data stage has not completed.")]
  steps = stats.get("steps", {})
  blocks += _code_funnel(workdir, out_dir, steps, config)
  blocks += _classifier(workdir, out_dir, steps.get("classify"), steps.get("annotate"))
  blocks += _exercise_funnel(out_dir, steps.get("exercises"))
  blocks += _datasets(steps.get("datasets"))
  blocks += _other_steps(workdir, steps)
  return blocks


def code_funnel_rows(workdir: str, steps: Mapping[str, Any],
                     config: Mapping[str, Any] | None) -> list[tuple[str, str, int, int]]:
  """(stage, reason, files dropped, files remaining) from the sources to the datasets:
  each curate step's drops by reason, the quality classifier, decontamination (what it
  removed from training; flagged records stay unless pruning is on) and the dataset."""
  rows: list[tuple[str, str, int, int]] = []
  curate = steps.get("curate") or {}
  chain = curate.get("stats") or []
  sources = [s for s in chain if str(s.get("name", "")).startswith("source:")]
  remaining = sum(int(s.get("out", 0)) for s in sources)
  rows.append(("sources", "files read", 0, remaining))
  for step in chain:
    if step in sources:
      continue
    dropped = step.get("dropped") or {}
    if not dropped:
      rows.append((step["name"], "-", 0, int(step["out"])))
    for reason, n in sorted(dropped.items(), key=lambda kv: -kv[1]):
      remaining -= int(n)
      rows.append((step["name"], reason, int(n), remaining))
    remaining = int(step["out"])
  classify = steps.get("classify")
  if classify:
    documents, kept = int(classify["documents"]), int(classify["kept"])
    rows.append(("quality classifier", "score below the keep threshold", documents - kept, kept))
    remaining = kept
  decont = (read_json(os.path.join(workdir, "decontaminate", "summary.json")) or {})
  corpus = (decont.get("corpora") or {}).get(CODE_DATASET)
  if corpus is not None:
    removed = (int(corpus.get("removed") or 0)
               if CODE_DATASET in decontamination.pruned_corpora(decont, config) else 0)
    flagged = int(corpus.get("removed") or 0)
    reason = (f"similar to a benchmark ({flagged} flagged)" if removed
              else f"none removed: analysis only ({flagged} flagged)")
    remaining -= removed
    rows.append(("decontamination", reason, removed, remaining))
  dataset = ((steps.get("datasets") or {}).get("datasets") or {}).get(CODE_DATASET)
  if dataset:
    docs = sum(int(v or 0) for v in (dataset.get("documents") or {}).values())
    rows.append(("dataset " + CODE_DATASET, "documents tokenized", remaining - docs, docs))
  return rows


def _code_funnel(workdir: str, out_dir: str, steps: Mapping[str, Any],
                 config: Mapping[str, Any] | None) -> list[Block]:
  curate = steps.get("curate") or {}
  chain = curate.get("stats") or []
  blocks: list[Block] = [("h", 3, "Code: from files to tokens")]
  sources = [s for s in chain if str(s.get("name", "")).startswith("source:")]
  if sources:
    blocks.append(("table", ("source", "files read", "after its own checks"),
                   [(s["name"][len("source:"):], count(s.get("in"), "files"),
                     count(s.get("out"), "files")) for s in sources]))
  rows = code_funnel_rows(workdir, steps, config)
  if len(sources) > 1:
    blocks.append(("p", "The steps after the sources count all sources together."))
  blocks.append(("table", ("stage", "reason", "dropped", "remaining"),
                 [(stage, reason, count(n, "files") if n else "-", count(left, "files"))
                  for stage, reason, n, left in rows]))
  dataset = ((steps.get("datasets") or {}).get("datasets") or {}).get(CODE_DATASET)
  if dataset:
    train, validation = (dataset.get("tokens") or {}).get("train"), (
        dataset.get("tokens") or {}).get("validation")
    blocks.append(("p", f"Tokens out: {tokens(train)} for training and {tokens(validation)} "
                        f"held out ({CODE_DATASET})."))
  stages, left = _funnel_points(rows)
  if plots.funnel(os.path.join(out_dir, "data_funnel.png"), stages, left,
                  "curated code: files remaining after each stage", "files"):
    blocks.append(("img", "data_funnel.png", "code funnel"))
  return blocks


def _funnel_points(rows) -> tuple[list[str], list[int]]:
  """One bar per stage: what remains after it."""
  stages: list[str] = []
  left: list[int] = []
  for stage, _, _, remaining in rows:
    if stages and stages[-1] == stage:
      left[-1] = remaining
    else:
      stages.append(stage)
      left.append(remaining)
  return stages, left


def _classifier(workdir: str, out_dir: str, classify: Mapping[str, Any] | None,
                annotate: Mapping[str, Any] | None) -> list[Block]:
  if not classify:
    return []
  report = classify.get("report") or {}
  held_out = report.get("held_out") or {}
  baseline = report.get("majority_baseline") or {}
  blocks: list[Block] = [("h", 3, "Quality classifier")]
  if annotate:
    blocks.append(("p", f"Labels: {count(annotate.get('labelled'), 'documents')} annotated by "
                        f"`{annotate.get('annotator')}` ({fmt(annotate.get('positives'))} "
                        f"educational, {fmt(annotate.get('negatives'))} not) at threshold "
                        f"{fmt(annotate.get('threshold'))}."))
  if held_out:
    blocks += [("p", f"A {report.get('model', 'classifier')} trained on "
                     f"{count(report.get('train_size'), 'labels')}, measured on "
                     f"{count(report.get('test_size'), 'held-out labels')}, beside the "
                     "constant predictor of the majority class:"),
               ("table", ("metric", "classifier (held out)", "majority baseline"),
                [(m, fmt(held_out.get(m)), fmt(baseline.get(m))) for m in CLASSIFIER_METRICS
                 if m in held_out])]
  histogram = classify.get("histogram") or {}
  edges = histogram.get("bin_edges")
  if edges:
    series = {"all documents": (histogram.get("classifier") or {}).get("counts")}
    annotated = histogram.get("annotated_classifier") or {}
    for label, name in (("label_1", "annotated educational"), ("label_0", "annotated not")):
      if annotated.get(label) is not None:
        series[name] = annotated[label]
    if plots.histogram(os.path.join(out_dir, "quality_scores.png"), edges, series,
                       "quality classifier: P(educational) per document", "score",
                       histogram.get("threshold")):
      blocks.append(("img", "quality_scores.png", "quality score histogram"))
  blocks.append(("p", f"Kept {count(classify.get('kept'), 'documents')} of "
                      f"{count(classify.get('documents'), 'documents')} "
                      f"(score >= {fmt(histogram.get('threshold'))})."))
  blocks += _examples(workdir, histogram.get("threshold"))
  return blocks


def _examples(workdir: str, threshold: float | None) -> list[Block]:
  """The highest-scored kept and the lowest-scored dropped documents, first lines."""
  if threshold is None:
    return []
  scores = {row["id"]: float(row["score"]) for row in read_jsonl(
      os.path.join(workdir, "data", "quality", "scores.jsonl"))}
  if not scores:
    return []
  ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
  kept = [i for i, s in ranked if s >= threshold][:EXAMPLES]
  dropped = [i for i, s in reversed(ranked) if s < threshold][:EXAMPLES]
  wanted = set(kept) | set(dropped)
  texts = {}
  for row in read_jsonl(os.path.join(workdir, "data", "curated", "code.jsonl")):
    if row.get("id") in wanted:
      texts[row["id"]] = row
      if len(texts) == len(wanted):
        break
  blocks: list[Block] = []
  for title, ids in (("Kept (highest scores)", kept), ("Dropped (lowest scores)", dropped)):
    shown = [i for i in ids if i in texts]
    if not shown:
      continue
    blocks.append(("p", f"**{title}**"))
    for i in shown:
      blocks += [("p", f"score {scores[i]:.3f} · `{rel(texts[i].get('origin'), workdir)}`"),
                 ("pre", excerpt(texts[i].get("text"), skip_comments=True))]
  return blocks


def _exercise_funnel(out_dir: str, exercises: Mapping[str, Any] | None) -> list[Block]:
  if not exercises:
    return []
  stats = exercises.get("stats") or {}
  blocks: list[Block] = [("h", 3, "Exercises mined from the curated code"),
                         ("p", f"Candidate functions of {count((stats.get('extra') or {}).get('files'), 'files')}; "
                               f"{count(exercises.get('exercises'), 'exercises')} kept.")]
  if stats:
    remaining = int(stats.get("in", 0))
    rows = [("candidate functions", "-", "-", count(remaining, "functions"))]
    stages, left = ["candidates"], [remaining]
    for reason, n in sorted((stats.get("dropped") or {}).items(), key=lambda kv: -kv[1]):
      remaining -= int(n)
      rows.append(("check", reason, count(n, "functions"), count(remaining, "functions")))
      stages.append(reason)
      left.append(remaining)
    blocks.append(("table", ("stage", "reason", "dropped", "remaining"), rows))
    if plots.funnel(os.path.join(out_dir, "exercise_funnel.png"), stages, left,
                    "mined exercises: functions remaining after each check", "functions"):
      blocks.append(("img", "exercise_funnel.png", "exercise funnel"))
  return blocks


def _datasets(datasets: Mapping[str, Any] | None) -> list[Block]:
  if not datasets:
    return []
  found = datasets.get("datasets") or {}
  rows = []
  for name, d in sorted(found.items()):
    docs, toks = d.get("documents") or {}, d.get("tokens") or {}
    rows.append((name, count(docs.get("train"), "documents"), tokens(toks.get("train")),
                 count(docs.get("validation"), "documents"), tokens(toks.get("validation"))))
  blocks: list[Block] = [("h", 3, "Datasets"),
                         ("table", ("dataset", "train", "train tokens", "validation",
                                    "validation tokens"), rows)]
  empty = datasets.get("empty") or []
  if empty:
    blocks.append(("p", "Not built (no records): " + ", ".join(f"`{e}`" for e in empty) + "."))
  return blocks


def _other_steps(workdir: str, steps: Mapping[str, Any]) -> list[Block]:
  """The remaining steps' scalar outputs (the embedder, the tokenizer)."""
  blocks: list[Block] = []
  for name in sorted(steps):
    if name in ("curate", "classify", "annotate", "exercises", "datasets"):
      continue
    rows = scalar_rows(steps[name] or {}, workdir)
    if rows:
      blocks += [("h", 3, f"Step `{name}`"), ("table", ("field", "value"), rows)]
  return blocks
