"""data_pipeline.classifier: the random forest beats a constant predictor on held-out
labels of real code embedded by the real Embedder; degenerate label sets; persistence."""

import glob
import json
import os

import numpy as np
import pytest

from data_pipeline.annotate import HeuristicAnnotator
from data_pipeline.classifier import (ClassifierConfig, ClassifierError, QualityClassifier,
                                      binary_metrics, labelled_matrix, stream_scores)
from data_pipeline.embed import Embedder
from data_pipeline.records import Record, read_records
from phi_jax import tokenizer as tokenizer_lib
from phi_jax.config import ConfigError, PhiConfig
from tests.conftest import random_model

SNIPPET_CHARS = 384


def stdlib_snippets(count: int, seed: int = 0) -> list[dict]:
  """Up to 3 consecutive 384-character pieces of each of a fixed set of stdlib files
  (modules, package __init__s, tests), `count` of them picked at random."""
  lib = os.path.dirname(os.__file__)
  files = (sorted(glob.glob(os.path.join(lib, "*.py"))) +
           sorted(glob.glob(os.path.join(lib, "*", "__init__.py"))) +
           sorted(glob.glob(os.path.join(lib, "test", "test_*.py")))[:100])
  snippets = []
  for path in files:
    with open(path, encoding="utf-8", errors="replace") as f:
      text = f.read(3 * SNIPPET_CHARS)
    for start in range(0, len(text), SNIPPET_CHARS):
      piece = text[start:start + SNIPPET_CHARS]
      if piece.strip():
        snippets.append({"id": f"{os.path.relpath(path, lib)}@{start}", "text": piece,
                         "meta": {"path": os.path.relpath(path, lib)}})
  picked = np.random.RandomState(seed).permutation(len(snippets))[:count]
  return [snippets[i] for i in sorted(picked)]


@pytest.fixture(scope="module")
def stdlib_task():
  """(ids, embeddings [N, 64], labels {id: row}) of 400 stdlib snippets.

  Embeddings: a random-init 2-layer phi (random features). Labels: the heuristic
  annotator at threshold 0.3 (about a quarter educational).
  """
  records = stdlib_snippets(400)
  config = PhiConfig(vocab_size=320, d_model=64, num_layers=2, num_heads=2, mlp_dim=128,
                     rotary_dim=16, max_seq_len=SNIPPET_CHARS, dtype="float32")
  embedder = Embedder(random_model(config, seed=0), tokenizer_lib.byte_level())
  x_ND = embedder.embed([r["text"] for r in records], batch_size=32, max_len=SNIPPET_CHARS,
                        progress=False)
  annotator = HeuristicAnnotator(threshold=0.3)
  labels = {r["id"]: annotator.row(r) for r in records}
  return [r["id"] for r in records], x_ND, labels


def test_forest_on_real_embeddings_beats_the_constant_predictor(stdlib_task):
  ids, x_ND, labels = stdlib_task
  x_MD, y_M, kept = labelled_matrix(ids, x_ND, labels)
  assert kept == ids and 0.15 < y_M.mean() < 0.5  # both classes, imbalanced
  held_out = []
  for seed in range(4):  # 4 splits and forests: the margin is judged on their mean
    classifier = QualityClassifier(ClassifierConfig(n_estimators=100, seed=seed))
    report = classifier.fit(x_MD, y_M)
    baseline = report["majority_baseline"]
    assert report["stratified"] and report["test_size"] == 80 and report["train_size"] == 320
    assert baseline["class"] == 0 and baseline["f1"] == 0.0  # majority: not educational
    assert baseline["accuracy"] == pytest.approx(1 - y_M.mean(), abs=0.02)  # stratified
    assert baseline["balanced_accuracy"] == 0.5
    assert report["held_out"]["f1"] > 0.2 and report["held_out"]["balanced_accuracy"] > 0.52
    held_out.append(report["held_out"])
  mean = {k: np.mean([h[k] for h in held_out]) for k in ("f1", "balanced_accuracy", "roc_auc")}
  assert mean["f1"] > baseline["f1"] + 0.35, held_out
  assert mean["balanced_accuracy"] > 0.58, held_out
  assert mean["roc_auc"] > 0.65, held_out
  scores = classifier.predict_scores(x_ND)
  assert scores.shape == (len(ids),) and ((scores >= 0) & (scores <= 1)).all()
  np.testing.assert_array_equal(classifier.keep(scores), scores >= 0.5)


def test_forest_learns_a_planted_rule():
  rng = np.random.RandomState(0)
  x_ND = rng.standard_normal((300, 8)).astype(np.float32)
  y_N = (x_ND[:, 0] + 0.5 * x_ND[:, 1] > 0.3).astype(int)
  classifier = QualityClassifier(ClassifierConfig(n_estimators=50, seed=0, threshold=0.6))
  report = classifier.fit(x_ND, y_N)
  assert report["held_out"]["accuracy"] > 0.85 and report["held_out"]["roc_auc"] > 0.9
  fresh = rng.standard_normal((200, 8)).astype(np.float32)
  truth = fresh[:, 0] + 0.5 * fresh[:, 1] > 0.3
  scores = classifier.predict_scores(fresh)
  assert ((scores >= 0.5) == truth).mean() > 0.85
  np.testing.assert_array_equal(classifier.keep(scores), scores >= 0.6)


def test_binary_metrics_match_their_formulas():
  y_true = np.asarray([1, 1, 1, 0, 0, 0, 0, 1])
  y_pred = np.asarray([1, 0, 1, 1, 0, 0, 0, 0])
  tp, fp, fn, tn = 2, 1, 2, 3
  result = binary_metrics(y_true, y_pred, scores=np.asarray([.9, .2, .8, .7, .1, .3, .2, .4]))
  assert result["precision"] == pytest.approx(tp / (tp + fp))
  assert result["recall"] == pytest.approx(tp / (tp + fn))
  assert result["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
  assert result["accuracy"] == pytest.approx((tp + tn) / 8)
  assert result["balanced_accuracy"] == pytest.approx((tp / (tp + fn) + tn / (tn + fp)) / 2)
  # AUC: the share of (positive, negative) pairs ranked right: 12.5 of 16 (a tie counts half).
  assert result["roc_auc"] == pytest.approx(12.5 / 16)


def test_degenerate_label_sets():
  x_ND = np.random.RandomState(0).standard_normal((30, 4))
  with pytest.raises(ClassifierError, match="only 5 labelled example.*min_labels=10"):
    QualityClassifier().fit(x_ND[:5], np.ones(5))
  with pytest.raises(ClassifierError, match=r"0 label\(s\) of class educational \(1\)"):
    QualityClassifier().fit(x_ND, np.zeros(30))
  with pytest.raises(ClassifierError, match=r"1 label\(s\) of class not educational \(0\)"):
    QualityClassifier().fit(x_ND, np.r_[np.ones(29), 0])
  constant = QualityClassifier(ClassifierConfig(single_class="constant"))
  report = constant.fit(x_ND, np.r_[np.ones(29), 0])
  assert report["model"] == "constant" and report["held_out"] is None
  np.testing.assert_allclose(constant.predict_scores(x_ND[:3]), 29 / 30)
  with pytest.raises(ClassifierError, match="labels must be 0 or 1"):
    QualityClassifier().fit(x_ND, np.full(30, 2))
  with pytest.raises(ClassifierError, match="do not match"):
    QualityClassifier().fit(x_ND, np.ones(29))
  with pytest.raises(ClassifierError, match="not trained"):
    QualityClassifier().predict_scores(x_ND)


def test_labelled_matrix_keeps_labelled_rows_in_order():
  x_ND = np.arange(12, dtype=np.float32).reshape(4, 3)
  labels = {"c": {"label": 1}, "a": {"label": 0}, "b": {"label": None}}
  x_MD, y_M, kept = labelled_matrix(["a", "b", "c", "d"], x_ND, labels)
  assert kept == ["a", "c"] and y_M.tolist() == [0, 1]
  np.testing.assert_array_equal(x_MD, x_ND[[0, 2]])
  with pytest.raises(ClassifierError, match="1 labelled id.*no embedding.*'z'"):
    labelled_matrix(["a"], x_ND[:1], {"z": {"label": 1}})


def test_save_and_load_round_trip(tmp_path):
  rng = np.random.RandomState(1)
  x_ND = rng.standard_normal((60, 5))
  y_N = (x_ND[:, 2] > 0).astype(int)
  classifier = QualityClassifier(ClassifierConfig(n_estimators=20, max_depth=4, seed=3))
  classifier.fit(x_ND, y_N)
  path = str(tmp_path / "quality" / "classifier.pkl")
  classifier.save(path)
  assert os.listdir(tmp_path / "quality") == ["classifier.pkl"]  # no temp file left
  loaded = QualityClassifier.load(path)
  assert loaded.config == classifier.config and loaded.report == classifier.report
  np.testing.assert_array_equal(loaded.predict_scores(x_ND), classifier.predict_scores(x_ND))
  with pytest.raises(ClassifierError, match="trained on 5"):
    loaded.predict_scores(x_ND[:, :4])
  (tmp_path / "junk.pkl").write_bytes(b"junk")
  with pytest.raises(ClassifierError, match="junk.pkl: cannot read a classifier"):
    QualityClassifier.load(str(tmp_path / "junk.pkl"))


def test_config_errors_name_the_field():
  with pytest.raises(ClassifierError, match="field 'n_estimators'"):
    ClassifierConfig(n_estimators=0)
  with pytest.raises(ClassifierError, match="config.quality.classifier: field 'threshold'"):
    ClassifierConfig.from_mapping({"threshold": 2.0})
  with pytest.raises(ConfigError, match="n_trees"):
    ClassifierConfig.from_mapping({"n_trees": 5})
  assert ClassifierConfig.from_mapping({"max_depth": 0, "class_weight": ""}) == ClassifierConfig(
      max_depth=None, class_weight=None)


def test_stream_scores_matches_in_memory_scoring(tmp_path):
  texts = [s["text"] for s in stdlib_snippets(40, seed=1)]
  records = [Record(id=f"r{i}", text=t, origin=f"o{i}") for i, t in enumerate(texts)]
  config = PhiConfig(vocab_size=320, d_model=32, num_layers=1, num_heads=2, mlp_dim=64,
                     rotary_dim=8, max_seq_len=128, dtype="float32")
  embedder = Embedder(random_model(config, seed=0), tokenizer_lib.byte_level(), min_bucket=128)
  x_ND = embedder.embed(texts, batch_size=8, max_len=128, progress=False)
  y_N = (x_ND[:, 0] > np.median(x_ND[:, 0])).astype(int)
  classifier = QualityClassifier(ClassifierConfig(n_estimators=20, seed=0, min_labels=2))
  classifier.fit(x_ND, y_N)
  expected = classifier.predict_scores(x_ND)

  pulled = []

  def stream():
    for record in records:
      pulled.append(record.id)
      yield record

  counts = stream_scores(classifier, embedder, stream(), str(tmp_path / "scores.jsonl"),
                         kept_path=str(tmp_path / "kept.jsonl"), chunk_size=16, batch_size=8,
                         max_len=128)
  assert counts == {"documents": 40, "kept": int(classifier.keep(expected).sum())}
  rows = [json.loads(line) for line in open(tmp_path / "scores.jsonl")]
  assert [r["id"] for r in rows] == pulled == [r.id for r in records]
  np.testing.assert_allclose([r["score"] for r in rows], expected, atol=1e-6)
  kept = list(read_records(str(tmp_path / "kept.jsonl")))
  assert [r.id for r in kept] == [r.id for r, k in zip(records, classifier.keep(expected)) if k]
  assert all(r.meta["educational_score"] >= 0.5 for r in kept)


def test_config_comes_from_the_quality_schema():
  """config.data.quality (QualitySettings) owns the classifier's shared defaults."""
  from data_pipeline.settings import QualitySettings
  assert ClassifierConfig.from_quality(QualitySettings(), seed=0) == \
      ClassifierConfig()
  quality = QualitySettings(n_estimators=5, max_depth=3, test_fraction=0.3, keep_threshold=0.7)
  assert ClassifierConfig.from_quality(quality, seed=2) == ClassifierConfig(
      n_estimators=5, max_depth=3, test_fraction=0.3, threshold=0.7, seed=2)
