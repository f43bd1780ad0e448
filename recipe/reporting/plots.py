"""The report's plots as PNG files without metadata (the same data gives the same bytes)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

from phi_jax import atomic


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _save(fig, path: str) -> None:
  buffer = io.BytesIO()
  fig.tight_layout()
  fig.savefig(buffer, format="png", metadata={"Software": None})
  atomic.write_bytes(path, buffer.getvalue())
  _pyplot().close(fig)


def lines(path: str, series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
          title: str, ylabel: str, xlabel: str = "step") -> bool:
  """Line plot of (label, xs, ys) series; False (nothing written) when all are empty."""
  series = [(label, x, y) for label, x, y in series if len(x)]
  if not series:
    return False
  fig, ax = _pyplot().subplots(figsize=(6.4, 3.6), dpi=100)
  for label, x, y in series:
    ax.plot(x, y, label=label, marker="o" if len(x) < 30 else None, markersize=3)
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend()
  _save(fig, path)
  return True


def funnel(path: str, stages: Sequence[str], remaining: Sequence[int], title: str,
           unit: str) -> bool:
  """Horizontal bars of what remains after each stage, first stage on top."""
  if not stages:
    return False
  fig, ax = _pyplot().subplots(figsize=(6.4, 0.6 + 0.32 * len(stages)), dpi=100)
  ys = list(range(len(stages)))[::-1]
  ax.barh(ys, remaining, color="#4c72b0")
  top = max(remaining) if remaining else 0
  for y, value in zip(ys, remaining):
    ax.text(value + 0.01 * max(top, 1), y, f"{value:,}", va="center", fontsize=8)
  ax.set_yticks(ys, list(stages), fontsize=8)
  ax.set_xlim(0, max(top, 1) * 1.15)
  ax.set_xlabel(unit)
  ax.set_title(title)
  ax.grid(axis="x", alpha=0.3)
  _save(fig, path)
  return True


def bars(path: str, labels: Sequence[str], values: Sequence[float], title: str,
         ylabel: str, ylim: tuple[float, float] | None = None) -> bool:
  """One bar per label."""
  if not labels:
    return False
  fig, ax = _pyplot().subplots(figsize=(6.4, 3.2), dpi=100)
  ax.bar(range(len(labels)), values, color="#55a868")
  ax.set_xticks(range(len(labels)), list(labels), rotation=30, ha="right", fontsize=8)
  if ylim is not None:
    ax.set_ylim(*ylim)
  ax.set_title(title)
  ax.set_ylabel(ylabel)
  ax.grid(axis="y", alpha=0.3)
  _save(fig, path)
  return True


def histogram(path: str, edges: Sequence[float], counts: dict[str, Sequence[int]],
              title: str, xlabel: str, threshold: float | None = None) -> bool:
  """Step histograms over shared bin edges, one per key of `counts`, with the decision
  threshold as a vertical line."""
  counts = {k: v for k, v in counts.items() if v is not None and len(v) == len(edges) - 1}
  if not counts:
    return False
  fig, ax = _pyplot().subplots(figsize=(6.4, 3.2), dpi=100)
  for label, values in counts.items():
    ax.stairs(values, edges, label=label, fill=len(counts) == 1, alpha=0.8)
  if threshold is not None:
    ax.axvline(threshold, color="k", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("documents")
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  _save(fig, path)
  return True


def heatmap(path: str, values: Sequence[Sequence[float]], rows: Sequence[str],
            columns: Sequence[str], title: str, ylabel: str, xlabel: str) -> None:
  """A heat map of values in [0, 1] (rows x columns), each cell labelled in %."""
  fig, ax = _pyplot().subplots(figsize=(1.2 * len(columns) + 2.5, 0.6 * len(rows) + 1.8),
                               dpi=100)
  image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
  ax.set_xticks(range(len(columns)), list(columns))
  ax.set_yticks(range(len(rows)), list(rows))
  for i, row in enumerate(values):
    for j, value in enumerate(row):
      if math.isfinite(value):
        ax.text(j, i, f"{100 * value:.0f}%", ha="center", va="center",
                color="black" if value > 0.5 else "white")
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  fig.colorbar(image, ax=ax, label="pass rate")
  _save(fig, path)
