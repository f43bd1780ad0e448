"""Embedding distance between training samples and benchmark problems.

phi-1 (section 5.2) measured the L2 distance between CodeGen-350M embeddings of an
exercise and a HumanEval problem. Here the embeddings come from THE embedding module,
`data_pipeline.embed.Embedder` (mean-pooled final hidden states of a phi_jax model, the
same the quality filter uses), scaled to unit length, so the L2 distance
d(x, y) = ||x - y|| = sqrt(2 - 2 cos(x, y)) lies in [0, 2] and orders pairs as cosine
similarity does. A benchmark problem is embedded as its program (prompt + canonical
solution), a sample as its text (an exercise: prompt + solution).

The benchmark matrix is embedded once; samples are embedded in batches and their
nearest problem found by exact k-NN (one matrix product per batch: [B, d] x [d, P]).
A sample is flagged when its nearest problem is within `threshold`.

An embedder of a randomly initialised model (the offline default) computes random
features of the tokens: distances then follow surface overlap (bytes in common), not
meaning. `EmbeddingIndex.informative` is False for it, and the decontamination leaves
the check out of its decision unless asked to use it anyway.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from data_pipeline.decontaminate.targets import Target

# the default random-init embedder when no model is named: the tiny config's shape
DEFAULT_RANDOM_MODEL = dict(vocab_size=257, d_model=256, num_layers=4, num_heads=4,
                            mlp_dim=1024, rotary_dim=32, max_seq_len=512, dtype="float32")
RANDOM_INIT_PREFIX = "random-init"


def make_embedder(embed_model: str = "", *, model: Mapping[str, Any] | None = None,
                  max_len: int = 512, seed: int = 0):
  """data_pipeline.embed.make_embedder, with tiny's shape when no model shape is given."""
  from data_pipeline import embed  # pylint: disable=g-import-not-at-top
  return embed.make_embedder(embed_model, model or DEFAULT_RANDOM_MODEL, max_len=max_len,
                             seed=seed)


@dataclasses.dataclass
class Nearest:
  """Each sample's nearest benchmark problem."""
  target_N: np.ndarray  # int [N]: index of the nearest problem
  distance_N: np.ndarray  # fp32 [N]: its L2 distance (unit vectors: in [0, 2])


def l2_distances(x_ND: np.ndarray, y_PD: np.ndarray) -> np.ndarray:
  """[N, P] L2 distances between unit-length rows."""
  cos_NP = np.clip(x_ND @ y_PD.T, -1.0, 1.0)
  return np.sqrt(np.maximum(2.0 - 2.0 * cos_NP, 0.0))


class EmbeddingIndex:
  """Unit-length embeddings of the benchmark problems, for exact nearest-neighbour search.

  Args:
    embedder: a data_pipeline.embed.Embedder.
    targets: the benchmark problems.
    max_len: tokens embedded per text (its first max_len).
    batch_size: texts per forward pass.
  """

  def __init__(self, embedder, targets: Sequence[Target], *, max_len: int = 512,
               batch_size: int = 32):
    self.embedder, self.max_len, self.batch_size = embedder, max_len, batch_size
    self.source = embedder.source
    self.informative = not str(embedder.source).startswith(RANDOM_INIT_PREFIX)
    self.num_targets = len(targets)
    # rows 0..P-1: the programs; P..2P-1: the programs without their docstrings
    self.y_PD = self.embed([t.program for t in targets] + [t.code or t.program for t in targets])

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    """fp32 unit-length embeddings [N, d] of texts."""
    return self.embedder.embed(list(texts), batch_size=self.batch_size, max_len=self.max_len,
                               normalize=True, progress=False)

  def distances(self, texts: Sequence[str]) -> np.ndarray:
    """[N, P] L2 distances of texts to every problem (the nearer of its two vectors)."""
    d_N2P = l2_distances(self.embed(texts), self.y_PD)
    return np.minimum(d_N2P[:, :self.num_targets], d_N2P[:, self.num_targets:])

  def nearest(self, texts: Sequence[str]) -> Nearest:
    """The nearest problem of each text, and its distance."""
    d_NP = self.distances(texts)
    target_N = np.argmin(d_NP, axis=1)
    return Nearest(target_N, d_NP[np.arange(len(texts)), target_N].astype(np.float32))

  def self_distances(self) -> np.ndarray:
    """[P] distance of each problem to its nearest OTHER problem (how far apart distinct
    problems are under this embedder: a scale for the threshold)."""
    p = self.num_targets
    d_2P2P = l2_distances(self.y_PD, self.y_PD)
    d_PP = np.minimum.reduce([d_2P2P[:p, :p], d_2P2P[:p, p:], d_2P2P[p:, :p], d_2P2P[p:, p:]])
    np.fill_diagonal(d_PP, np.inf)
    return d_PP.min(axis=1)
