"""The educational-value classifier: a random forest on embeddings of annotated code.

phi-1 trained a random forest on CodeGen-350M embeddings of ~100k GPT-4-annotated
samples and kept the rest of The Stack where it predicted "educational". Here:

    X_ND, y_N, ids = labelled_matrix(ids, embeddings, load_labels("labels.jsonl"))
    classifier = QualityClassifier(ClassifierConfig(n_estimators=200, seed=0))
    report = classifier.fit(X_ND, y_N)        # held-out metrics vs. a majority-class baseline
    scores_N = classifier.predict_scores(all_embeddings)    # P(educational)
    keep_N = classifier.keep(scores_N)                      # scores >= config.threshold
    classifier.save("quality/classifier.pkl"); QualityClassifier.load(...)
    stream_scores(classifier, embedder, records, "scores.jsonl", kept_path="kept.jsonl")
                                            # a shard scored chunk by chunk, not in memory
    score_block(classifier, embedder, "code.jsonl", "scores.jsonl", kept_path="kept.jsonl",
                shard_index=index, num_shards=count)  # = sources.host_shard()
                                            # each host its block, the parts merged in order

`fit` holds out `test_fraction` of the labels (stratified by label when each class has
at least two examples; else a plain seeded split, and the report says so), trains on
the rest, and reports held-out precision, recall, F1 (of the educational class),
accuracy, balanced accuracy and ROC AUC, with the same metrics of a constant predictor
that always answers the training split's majority class. Then, with `refit_on_all`
(default), it retrains on every label for the model it keeps: the reported metrics
are those of the held-out evaluation (a slightly pessimistic estimate).

Degenerate label sets: fewer than `min_labels` labels is an error, as is a class
with fewer than `min_per_class` examples (including a class that is absent) unless
`single_class="constant"`, the documented fallback: then the classifier is a constant
that scores every record with the labelled share of educational examples (1.0 when
every label was educational, 0.0 when none), and the report says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import json
import os
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn import metrics
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

from phi_jax import atomic, hosts
from phi_jax.config import known_fields

from data_pipeline import host_blocks
from data_pipeline.settings import QualitySettings

FORMAT = "phi_jax.quality_classifier.v1"


class ClassifierError(ValueError):
  """Labels or embeddings a classifier cannot be trained on; or a bad model file."""


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  """How the quality classifier is trained and applied.

  Attributes:
    n_estimators: trees in the forest.
    max_depth: the deepest a tree may grow (None: until leaves are pure).
    class_weight: 'balanced', 'balanced_subsample' or None (sklearn's meaning);
      'balanced' counters a minority of educational labels.
    seed: the forest's and the split's random seed.
    test_fraction: the share of labels held out for the report (0 < f < 1).
    threshold: records whose P(educational) >= threshold are kept.
    min_labels: fewer labels than this is an error.
    min_per_class: each class needs this many labels to train a forest.
    single_class: 'error' or 'constant': what to do when a class has fewer than
      min_per_class labels (see the module docstring).
    refit_on_all: after the held-out evaluation, retrain on every label.
    n_jobs: sklearn's parallelism (None = 1 core, -1 = all).
  """

  n_estimators: int = QualitySettings.n_estimators
  max_depth: int | None = None
  class_weight: str | None = "balanced"
  seed: int = 0
  test_fraction: float = QualitySettings.test_fraction
  threshold: float = QualitySettings.keep_threshold
  min_labels: int = 10
  min_per_class: int = 2
  single_class: str = "error"
  refit_on_all: bool = True
  n_jobs: int | None = None

  @classmethod
  def from_quality(cls, quality: Any, seed: int) -> ClassifierConfig:
    """From `config.data.quality` (QualitySettings owns the defaults, ranges and
    documentation of the fields it shares) and the run's seed."""
    return cls(n_estimators=quality.n_estimators, max_depth=quality.max_depth or None,
               test_fraction=quality.test_fraction, threshold=quality.keep_threshold,
               seed=seed)

  def __post_init__(self):
    if self.max_depth == 0:  # ml_collections configs spell None as 0
      object.__setattr__(self, "max_depth", None)
    if self.class_weight == "":
      object.__setattr__(self, "class_weight", None)
    self.validate()

  def validate(self, where: str = "ClassifierConfig") -> None:
    """Raises ClassifierError naming the field when a value is invalid."""

    def fail(field: str, message: str):
      raise ClassifierError(f"{where}: field '{field}' = {getattr(self, field)!r}: {message}")

    def is_int(value) -> bool:
      return isinstance(value, int) and not isinstance(value, bool)

    for field, low in (("n_estimators", 1), ("min_labels", 2), ("min_per_class", 1)):
      if not is_int(getattr(self, field)) or getattr(self, field) < low:
        fail(field, f"must be an integer >= {low}")
    if self.max_depth is not None and (not is_int(self.max_depth) or self.max_depth < 1):
      fail("max_depth", "must be a positive integer or None")
    if self.class_weight not in ("balanced", "balanced_subsample", None):
      fail("class_weight", "must be 'balanced', 'balanced_subsample' or None")
    if not is_int(self.seed):
      fail("seed", "must be an integer")
    if not isinstance(self.test_fraction, (int, float)) or not 0 < self.test_fraction < 1:
      fail("test_fraction", "must be in (0, 1)")
    if not isinstance(self.threshold, (int, float)) or not 0 <= self.threshold <= 1:
      fail("threshold", "must be in [0, 1]")
    if self.single_class not in ("error", "constant"):
      fail("single_class", "must be 'error' or 'constant'")

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any],
                   where: str = "config.quality.classifier") -> ClassifierConfig:
    """From a dict / ConfigDict, rejecting unknown fields by name."""
    values = known_fields(cls, values, where)
    try:
      return cls(**values)
    except ClassifierError as e:
      raise ClassifierError(str(e).replace("ClassifierConfig", where, 1)) from None


def labelled_matrix(ids: Sequence[str | int], x_ND: np.ndarray,
                    labels: Mapping[str | int, Mapping[str, Any]]
                    ) -> tuple[np.ndarray, np.ndarray, list[str | int]]:
  """(X [M, d], y [M], ids) of the records that have a label (1 or 0), in `ids` order.

  labels: {id: labels row} (data_pipeline.annotate.load_labels); rows whose label is
  null, and ids without a row, are left out. A labelled id missing from `ids` is an
  error (the embeddings do not cover the annotated subset).
  """
  x_ND = np.asarray(x_ND)
  if x_ND.ndim != 2 or x_ND.shape[0] != len(ids):
    raise ClassifierError(f"labelled_matrix: {len(ids)} ids but embeddings of shape "
                          f"{x_ND.shape}")
  position = {rid: i for i, rid in enumerate(ids)}
  missing = [rid for rid, row in labels.items()
             if row.get("label") is not None and rid not in position]
  if missing:
    raise ClassifierError(f"labelled_matrix: {len(missing)} labelled id(s) have no embedding, "
                          f"e.g. {missing[:3]}")
  chosen = [rid for rid in ids if rid in labels and labels[rid].get("label") is not None]
  rows = [position[rid] for rid in chosen]
  y_N = np.asarray([int(labels[rid]["label"]) for rid in chosen], np.int64)
  return x_ND[rows].astype(np.float32), y_N, chosen


def binary_metrics(y_true: np.ndarray, y_pred: np.ndarray,
                   scores: np.ndarray | None = None) -> dict[str, float | None]:
  """Precision, recall, F1 (of class 1), accuracy, balanced accuracy, ROC AUC."""
  precision, recall, f1, _ = metrics.precision_recall_fscore_support(
      y_true, y_pred, average="binary", pos_label=1, zero_division=0)
  auc = None
  if scores is not None and len(np.unique(y_true)) == 2:
    auc = float(metrics.roc_auc_score(y_true, scores))
  balanced = (float(metrics.balanced_accuracy_score(y_true, y_pred))
              if len(np.unique(y_true)) == 2 else None)
  return {"precision": float(precision), "recall": float(recall), "f1": float(f1),
          "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
          "balanced_accuracy": balanced, "roc_auc": auc}


class QualityClassifier:
  """P(educational) of an embedding; see the module docstring."""

  def __init__(self, config: ClassifierConfig = ClassifierConfig()):
    self.config = config
    self.forest: RandomForestClassifier | None = None
    self.constant: float | None = None  # the single_class='constant' fallback
    self.report: dict[str, Any] | None = None

  @property
  def fitted(self) -> bool:
    return self.forest is not None or self.constant is not None

  def _forest(self) -> RandomForestClassifier:
    c = self.config
    return RandomForestClassifier(n_estimators=c.n_estimators, max_depth=c.max_depth,
                                  class_weight=c.class_weight, random_state=c.seed,
                                  n_jobs=c.n_jobs)

  def fit(self, x_ND: np.ndarray, y_N: np.ndarray) -> dict[str, Any]:
    """Trains on labelled embeddings; returns (and keeps in .report) the evaluation.

    Returns:
      {"num_labels", "positives", "negatives", "train_size", "test_size", "stratified",
       "refit_on_all", "model": "random_forest" | "constant", "held_out": metrics,
       "majority_baseline": {"class", **metrics}, "config"}.

    Raises:
      ClassifierError: shapes do not match, labels are not 0/1, fewer than
        min_labels, or a class below min_per_class (unless single_class='constant').
    """
    c = self.config
    x_ND = np.asarray(x_ND, np.float32)
    y_N = np.asarray(y_N)
    if x_ND.ndim != 2 or y_N.shape != (x_ND.shape[0],):
      raise ClassifierError(f"fit: embeddings {x_ND.shape} and labels {y_N.shape} do not "
                            f"match (want [N, d] and [N])")
    if not np.isfinite(x_ND).all():
      raise ClassifierError("fit: the embeddings contain NaN or inf")
    if not np.isin(y_N, (0, 1)).all():
      raise ClassifierError(f"fit: labels must be 0 or 1, got {sorted(set(y_N.tolist()))[:5]}")
    y_N = y_N.astype(np.int64)
    n = len(y_N)
    positives = int(y_N.sum())
    counts = {"num_labels": n, "positives": positives, "negatives": n - positives}
    if n < c.min_labels:
      raise ClassifierError(f"fit: only {n} labelled example(s), need at least min_labels="
                            f"{c.min_labels}: annotate more records")
    smallest = min(positives, n - positives)
    if smallest < c.min_per_class:
      which = "educational (1)" if positives < n - positives else "not educational (0)"
      if c.single_class == "error":
        raise ClassifierError(
            f"fit: {smallest} label(s) of class {which} among {n} ({positives} positive): "
            f"need min_per_class={c.min_per_class} of each to train; annotate more records, "
            f"change the annotation threshold, or set single_class='constant'")
      self.forest, self.constant = None, positives / n
      self.report = {**counts, "model": "constant", "constant_score": self.constant,
                     "train_size": n, "test_size": 0, "stratified": False,
                     "refit_on_all": True, "held_out": None, "majority_baseline": None,
                     "note": f"only {smallest} label(s) of class {which}: every record scores "
                             f"{self.constant:.3f} (single_class='constant')",
                     "config": dataclasses.asdict(c)}
      return self.report
    test_size = max(2, int(round(c.test_fraction * n)))
    test_size = min(test_size, n - 2)
    stratified = smallest >= 2 and test_size >= 2 and n - test_size >= 2
    x_train, x_test, y_train, y_test = train_test_split(
        x_ND, y_N, test_size=test_size, random_state=c.seed,
        stratify=y_N if stratified else None)
    if len(np.unique(y_train)) < 2:
      raise ClassifierError(f"fit: the training split of {len(y_train)} labels has one class "
                            f"only; annotate more records or lower test_fraction")
    forest = self._forest().fit(x_train, y_train)
    scores_test = forest.predict_proba(x_test)[:, list(forest.classes_).index(1)]
    predicted = (scores_test >= c.threshold).astype(np.int64)
    majority = int(y_train.sum() * 2 > len(y_train))
    baseline = np.full_like(y_test, majority)
    if c.refit_on_all:
      forest = self._forest().fit(x_ND, y_N)
    self.forest, self.constant = forest, None
    self.report = {
        **counts, "model": "random_forest", "train_size": len(y_train),
        "test_size": len(y_test), "stratified": stratified, "refit_on_all": c.refit_on_all,
        "held_out": binary_metrics(y_test, predicted, scores_test),
        "majority_baseline": {"class": majority, **binary_metrics(y_test, baseline)},
        "config": dataclasses.asdict(c),
    }
    return self.report

  def predict_scores(self, x_ND: np.ndarray) -> np.ndarray:
    """P(educational) [N] (fp64 in [0, 1]) of embeddings [N, d]."""
    if not self.fitted:
      raise ClassifierError("predict_scores: the classifier is not trained (fit or load it)")
    x_ND = np.asarray(x_ND, np.float32)
    if x_ND.ndim != 2:
      raise ClassifierError(f"predict_scores: embeddings must be [N, d], got {x_ND.shape}")
    if self.constant is not None:
      return np.full(x_ND.shape[0], self.constant, np.float64)
    if x_ND.shape[1] != self.forest.n_features_in_:
      raise ClassifierError(f"predict_scores: embeddings have {x_ND.shape[1]} dims, the "
                            f"classifier was trained on {self.forest.n_features_in_}")
    if x_ND.shape[0] == 0:
      return np.zeros(0, np.float64)
    return self.forest.predict_proba(x_ND)[:, list(self.forest.classes_).index(1)]

  def keep(self, scores_N: np.ndarray) -> np.ndarray:
    """bool [N]: which records to keep (score >= config.threshold)."""
    return np.asarray(scores_N) >= self.config.threshold

  # -- persistence ----------------------------------------------------------------------

  def save(self, path: str) -> None:
    """Pickles the classifier (config, forest or constant, report) atomically."""
    if not self.fitted:
      raise ClassifierError(f"save: {path}: the classifier is not trained")
    state = {"format": FORMAT, "config": dataclasses.asdict(self.config),
             "forest": self.forest, "constant": self.constant, "report": self.report}
    buffer = io.BytesIO()
    pickle.dump(state, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    atomic.write_bytes(path, buffer.getvalue())

  @classmethod
  def load(cls, path: str) -> QualityClassifier:
    """A classifier written by `save` (a pickle: load only files you wrote)."""
    try:
      with open(path, "rb") as f:
        state = pickle.load(f)
    except (OSError, pickle.UnpicklingError, EOFError) as e:
      raise ClassifierError(f"load: {path}: cannot read a classifier ({e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
      raise ClassifierError(f"load: {path}: not a {FORMAT} file")
    classifier = cls(ClassifierConfig(**state["config"]))
    classifier.forest, classifier.constant = state["forest"], state["constant"]
    classifier.report = state["report"]
    return classifier


def stream_scores(classifier: QualityClassifier, embedder: Any, records: Iterable[Any],
                  scores_path: str, *, kept_path: str | None = None, chunk_size: int = 4096,
                  batch_size: int = 32, max_len: int = 512) -> dict[str, int]:
  """Scores records a chunk at a time, never holding the corpus (a host's shard) in memory.

  Each chunk of `chunk_size` records is embedded (`data_pipeline.embed.embed_chunks`:
  on the embedder's devices, length-bucketed) and scored; `{"id", "score"}` lines go to
  `scores_path` and, with `kept_path`, the records scoring >= the threshold (with
  meta["educational_score"]) go there as JSONL. Both files are written atomically:
  they appear complete or not at all.

  Args:
    classifier: a fitted QualityClassifier.
    embedder: a `data_pipeline.embed.Embedder`.
    records: `Record`s (any iterable: a reader of a shard streams through).
    scores_path, kept_path: outputs.
    chunk_size, batch_size, max_len: see `embed_chunks`.

  Returns:
    {"documents": scored, "kept": kept}.
  """
  from data_pipeline.embed import embed_chunks  # pylint: disable=g-import-not-at-top  (jax)
  counts = {"documents": 0, "kept": 0}
  iterator = iter(records)
  with contextlib.ExitStack() as stack:
    scores_file = stack.enter_context(atomic.writing(scores_path, "w"))
    kept_file = stack.enter_context(atomic.writing(kept_path, "w")) if kept_path else None
    while chunk := list(itertools.islice(iterator, chunk_size)):
      (x_ND,) = embed_chunks(embedder, [r.text for r in chunk], chunk_size=len(chunk),
                             batch_size=batch_size, max_len=max_len)
      scores_N = classifier.predict_scores(x_ND)
      keep_N = classifier.keep(scores_N)
      for record, score, keep in zip(chunk, scores_N, keep_N):
        scores_file.write(json.dumps({"id": record.id, "score": float(score)}) + "\n")
        if keep and kept_file is not None:
          record.meta["educational_score"] = round(float(score), 4)
          kept_file.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
      counts["documents"] += len(chunk)
      counts["kept"] += int(keep_N.sum())
  return counts


def score_block(classifier: QualityClassifier, embedder: Any, records_path: str,
                scores_path: str, *, kept_path: str | None = None, shard_index: int = 0,
                num_shards: int = 1, chunk_size: int = 4096, batch_size: int = 32,
                max_len: int = 512, after_merge: Callable[[], object] | None = None,
                sync: Callable[[str, bool], list[bool]] = hosts.sync
                ) -> dict[str, int]:
  """`stream_scores` of this host's block of the records of `records_path`, the hosts'
  parts merged into `scores_path` and `kept_path` (data_pipeline/host_blocks.py).

  With one shard this is `stream_scores` of every record into the outputs themselves.
  With `num_shards` hosts each scores its contiguous block of whole chunks
  (`host_blocks.block_bounds(..., align=chunk_size)`: the chunks, and so every score, are
  those of one process), writes `<name>.part-IIIII-of-NNNNN.jsonl` parts, and process 0
  concatenates them in order into the outputs after every host is done.

  Args:
    shard_index, num_shards: this host and the number of hosts (`sources.host_shard()`).
    after_merge, sync: see `host_blocks.write_blocks`.
    The rest: see `stream_scores`.

  Returns:
    This host's {"documents": scored, "kept": kept}.
  """
  outputs = [scores_path] + ([kept_path] if kept_path else [])

  def write(paths: list[str]) -> dict[str, int]:
    records = host_blocks.read_block(records_path, shard_index, num_shards, align=chunk_size)
    return stream_scores(classifier, embedder, records, paths[0],
                         kept_path=paths[1] if kept_path else None, chunk_size=chunk_size,
                         batch_size=batch_size, max_len=max_len)

  return host_blocks.write_blocks(
      outputs, write, shard_index=shard_index, num_shards=num_shards,
      name=f"quality scores of {os.path.basename(records_path)}", after_merge=after_merge,
      sync=sync)
