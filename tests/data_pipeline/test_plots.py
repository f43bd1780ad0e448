"""data_pipeline.plots: the score histograms are a valid PNG and their counts add up."""

import json
import os

import numpy as np
import pytest
from matplotlib import image

from data_pipeline.plots import counts_path_for, plot_scores

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def brute_force_counts(values, bins):
  """Per-bin counts of values in [0, 1]: bin i holds [i/bins, (i+1)/bins), the last one
  also 1.0."""
  counts = [0] * bins
  for value in values:
    counts[min(int(value * bins), bins - 1)] += 1
  return counts


def test_plot_writes_a_png_and_counts_that_add_up(tmp_path):
  rng = np.random.RandomState(0)
  scores = np.r_[rng.beta(2, 5, 500), [0.0, 1.0, 0.5]]
  labels = [1, 0, None, 1, 0, 0, 1, None, 0, 1] * 6
  annotated = rng.uniform(size=60)
  annotator = [None if label is None else (0.7 if label else 0.2) + 0.05 * rng.uniform()
               for label in labels]
  path = str(tmp_path / "quality" / "scores.png")
  counts = plot_scores(path, scores, threshold=0.4, annotated_labels=labels,
                       annotated_scores=annotated, annotator_scores=annotator,
                       label_threshold=0.5, bins=10)

  with open(path, "rb") as f:
    assert f.read(8) == PNG_SIGNATURE
  pixels = image.imread(path)
  assert pixels.ndim == 3 and pixels.shape[0] > 500 and pixels.shape[1] > 500  # 2 panels
  assert pixels.std() > 0.05  # something is drawn
  assert sorted(os.listdir(tmp_path / "quality")) == ["scores.json", "scores.png"]

  with open(counts_path_for(path)) as f:
    assert json.load(f) == counts
  assert counts["bin_edges"] == pytest.approx(np.linspace(0, 1, 11).tolist())
  assert counts["classifier"]["counts"] == brute_force_counts(scores, 10)
  assert sum(counts["classifier"]["counts"]) == counts["classifier"]["total"] == len(scores)
  assert counts["classifier"]["kept"] == sum(s >= 0.4 for s in scores)
  label_1 = [s for s, label in zip(annotated, labels) if label == 1]
  label_0 = [s for s, label in zip(annotated, labels) if label == 0]
  assert counts["annotated_classifier"]["label_1"] == brute_force_counts(label_1, 10)
  assert counts["annotated_classifier"]["label_0"] == brute_force_counts(label_0, 10)
  assert sum(counts["annotator"]["label_1"]) == labels.count(1) == 24
  assert sum(counts["annotator"]["label_0"]) == labels.count(0) == 24
  assert counts["annotator"]["unlabelled"] == labels.count(None) == 12
  assert counts["annotator"]["label_1"][7] == 24 and counts["annotator"]["label_0"][2] == 24


def test_classifier_scores_alone_make_one_panel(tmp_path):
  path = str(tmp_path / "scores.png")
  counts = plot_scores(path, [0.1, 0.2, 0.9], threshold=0.5, bins=4)
  assert counts["classifier"] == {"counts": [2, 0, 0, 1], "total": 3, "kept": 1}
  assert "annotator" not in counts and "annotated_classifier" not in counts
  pixels = image.imread(path)
  assert pixels.shape[0] < pixels.shape[1]  # one panel: wider than tall


def test_bad_inputs_are_rejected(tmp_path):
  path = str(tmp_path / "scores.png")
  with pytest.raises(ValueError, match="scores must be finite numbers in"):
    plot_scores(path, [0.1, 1.2], threshold=0.5)
  with pytest.raises(ValueError, match="annotated_scores has 1 values but annotated_labels"):
    plot_scores(path, [0.1], threshold=0.5, annotated_labels=[1, 0], annotated_scores=[0.3])
  with pytest.raises(ValueError, match="threshold"):
    plot_scores(path, [0.1], threshold=1.5)
  assert not os.path.exists(path) and not os.path.exists(counts_path_for(path))
