"""Plots of the quality filter: how the educational-value scores are distributed.

    counts = plot_scores("quality/scores.png", scores_N, threshold=0.5,
                         annotated_labels=y_M, annotated_scores=scores_M,
                         annotator_scores=annotator_M, label_threshold=0.5)

writes `quality/scores.png` and, beside it, `quality/scores.json` holding the
histogram counts drawn (the same numbers, for people and tests that would rather not
read pixels). The figure has one or two panels:

  1. the classifier's P(educational) over every scored record, the keep threshold
     marked and the kept share written on it; over it, as outlines on their own
     (right) axis, the classifier scores of the annotated records split by their
     label (how well it separates them);
  2. (when annotator scores are given) the annotator's scores of the annotated subset
     by label, with the labelling threshold.

Drawn with matplotlib's Agg canvas (no display, no pyplot state); both files are
written atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from phi_jax import atomic


def counts_path_for(png_path: str) -> str:
  """Where the histogram counts go: scores.png -> scores.json."""
  root, ext = os.path.splitext(png_path)
  return (root if ext.lower() == ".png" else png_path) + ".json"


def _scores(values, name: str) -> np.ndarray:
  array = np.asarray(values, np.float64).reshape(-1)
  if not np.isfinite(array).all() or (array.size and (array.min() < 0 or array.max() > 1)):
    raise ValueError(f"plot_scores: {name} must be finite numbers in [0, 1]")
  return array


def _histogram(values: np.ndarray, edges: np.ndarray) -> list[int]:
  return [int(c) for c in np.histogram(values, bins=edges)[0]]


def plot_scores(path: str, scores: Sequence[float], *, threshold: float,
                annotated_labels: Sequence[int] | None = None,
                annotated_scores: Sequence[float] | None = None,
                annotator_scores: Sequence[float | None] | None = None,
                label_threshold: float | None = None, bins: int = 20,
                title: str = "Educational value: classifier scores") -> dict[str, Any]:
  """Draws the score histograms to `path` (PNG) and their counts to counts_path_for(path).

  Args:
    scores: the classifier's P(educational) of every scored record [N].
    threshold: the keep threshold (records with score >= threshold are kept).
    annotated_labels: labels (1/0; None = unlabelled, left out) of the annotated
      records [M], aligned with `annotated_scores` and `annotator_scores`.
    annotated_scores: the classifier's scores of the annotated records [M].
    annotator_scores: the annotator's scores of the annotated records [M] (None for
      unlabelled ones).
    label_threshold: the annotation threshold (label = annotator score >= it).
    bins: equal-width bins over [0, 1].

  Returns:
    The counts written as JSON: {"bin_edges", "threshold", "classifier": {"counts",
    "total", "kept"}, and when given "annotated_classifier": {"label_1", "label_0"},
    "annotator": {"label_1", "label_0", "threshold"}}.
  """
  if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
    raise ValueError(f"plot_scores: bins must be a positive integer, got {bins!r}")
  if not 0 <= threshold <= 1:
    raise ValueError(f"plot_scores: threshold must be in [0, 1], got {threshold!r}")
  scores_N = _scores(scores, "scores")
  edges = np.linspace(0.0, 1.0, bins + 1)
  counts: dict[str, Any] = {
      "bin_edges": [float(e) for e in edges], "threshold": float(threshold),
      "classifier": {"counts": _histogram(scores_N, edges), "total": int(scores_N.size),
                     "kept": int((scores_N >= threshold).sum())}}
  labels_M = None
  if annotated_labels is not None:
    labels_M = np.asarray([-1 if label is None else int(label) for label in annotated_labels])
    for name, values in (("annotated_scores", annotated_scores),
                         ("annotator_scores", annotator_scores)):
      if values is not None and len(values) != len(labels_M):
        raise ValueError(f"plot_scores: {name} has {len(values)} values but annotated_labels "
                         f"has {len(labels_M)}")
  if annotated_scores is not None:
    if labels_M is None:
      raise ValueError("plot_scores: annotated_scores needs annotated_labels")
    annotated_M = _scores(annotated_scores, "annotated_scores")
    counts["annotated_classifier"] = {f"label_{k}": _histogram(annotated_M[labels_M == k], edges)
                                      for k in (1, 0)}
  if annotator_scores is not None:
    if labels_M is None:
      raise ValueError("plot_scores: annotator_scores needs annotated_labels")
    labelled = labels_M >= 0
    annotator_M = _scores([s for s, keep in zip(annotator_scores, labelled) if keep],
                          "annotator_scores (of labelled records)")
    labels_L = labels_M[labelled]
    counts["annotator"] = {f"label_{k}": _histogram(annotator_M[labels_L == k], edges)
                           for k in (1, 0)}
    counts["annotator"]["threshold"] = label_threshold
    counts["annotator"]["unlabelled"] = int((~labelled).sum())

  figure = _draw(counts, edges, title)
  buffer = io.BytesIO()
  FigureCanvasAgg(figure).print_png(buffer)
  atomic.write_json(counts, counts_path_for(path))
  atomic.write_bytes(path, buffer.getvalue())
  return counts


def _draw(counts: dict[str, Any], edges: np.ndarray, title: str) -> Figure:
  panels = 2 if "annotator" in counts else 1
  figure = Figure(figsize=(7, 3.6 * panels), dpi=100, layout="constrained")
  axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
  centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
  classifier = counts["classifier"]
  ax = axes[0]
  ax.bar(centers, classifier["counts"], width=width, color="#9ecae1", edgecolor="white",
         label=f"all scored records (n={classifier['total']})")
  kept_pct = 100.0 * classifier["kept"] / max(classifier["total"], 1)
  ax.axvline(counts["threshold"], color="black", linestyle="--",
             label=f"keep threshold {counts['threshold']:.2f}: {classifier['kept']} kept "
                   f"({kept_pct:.1f}%)")
  ax.set(title=title, xlabel="P(educational)", ylabel="records", xlim=(0, 1))
  handles, names = ax.get_legend_handles_labels()
  if "annotated_classifier" in counts:  # far fewer records: on their own axis (right)
    twin = ax.twinx()
    for key, color, name in (("label_1", "#31a354", "annotated: educational"),
                             ("label_0", "#de2d26", "annotated: not educational")):
      values = counts["annotated_classifier"][key]
      twin.stairs(values, edges, color=color, linewidth=1.5, label=f"{name} (n={sum(values)})")
    twin.set_ylabel("annotated records")
    twin.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    twin_handles, twin_names = twin.get_legend_handles_labels()
    handles, names = handles + twin_handles, names + twin_names
  ax.legend(handles, names, fontsize=8)
  if panels == 2:
    annotator = counts["annotator"]
    ax = axes[1]
    ax.bar(centers, annotator["label_1"], width=width, color="#31a354", alpha=0.8,
           label=f"label 1 (n={sum(annotator['label_1'])})")
    ax.bar(centers, annotator["label_0"], width=width, color="#de2d26", alpha=0.8,
           bottom=annotator["label_1"], label=f"label 0 (n={sum(annotator['label_0'])})")
    if annotator["threshold"] is not None:
      ax.axvline(annotator["threshold"], color="black", linestyle="--",
                 label=f"label threshold {annotator['threshold']:.2f}")
    ax.set(title=f"Annotator scores of the annotated subset "
                 f"({annotator['unlabelled']} unlabelled)",
           xlabel="annotator score", ylabel="records", xlim=(0, 1))
    ax.legend(fontsize=8)
  return figure
