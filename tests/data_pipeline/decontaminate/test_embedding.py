from __future__ import annotations

import numpy as np

from data_pipeline.decontaminate.embedding import EmbeddingIndex, l2_distances
from tests.data_pipeline.decontaminate.conftest import NEAR_COPY_37, UNRELATED, structure_tokenizer


def test_l2_distances_of_unit_vectors():
  x = np.asarray([[1.0, 0.0], [0.0, 1.0]], np.float32)
  y = np.asarray([[1.0, 0.0], [-1.0, 0.0]], np.float32)
  np.testing.assert_allclose(l2_distances(x, y), [[0.0, 2.0], [np.sqrt(2), np.sqrt(2)]],
                             atol=1e-6)


def test_random_init_embedder_is_reported_uninformative(humaneval_targets, random_embedder):
  index = EmbeddingIndex(random_embedder, humaneval_targets[:8], max_len=256)
  assert not index.informative and index.source.startswith("random-init")
  assert index.y_PD.shape == (2 * 8, 64)  # each problem: its program, and without docstring
  np.testing.assert_allclose(np.linalg.norm(index.y_PD, axis=1), 1.0, rtol=1e-5)
  # a problem's own program is at distance 0 from it
  d_NP = index.distances([humaneval_targets[3].program])
  assert int(np.argmin(d_NP[0])) == 3 and d_NP[0, 3] < 1e-3


def test_the_structure_tokenizer_is_naming_agnostic():
  tokens = structure_tokenizer().backend.encode(
      'def f(x):\n    """doc words"""\n    return x + 12  # c\n').tokens
  assert tokens == ["def", "N", "(", "N", ")", ":", "return", "N", "+", "0"]


def test_near_copy_ranks_its_problem_nearest(humaneval_targets, structure_embedder):
  index = EmbeddingIndex(structure_embedder, humaneval_targets, max_len=256)
  assert index.informative
  d_NP = index.distances([NEAR_COPY_37, UNRELATED])
  ids = [t.task_id for t in humaneval_targets]
  order = np.argsort(d_NP[0])
  assert ids[int(order[0])] == "HumanEval/37"
  # far nearer than the runner-up, and than distinct problems are to each other
  assert d_NP[0, order[0]] < 0.25 * d_NP[0, order[1]]
  assert d_NP[0, order[0]] < 0.25 * np.median(index.self_distances())
  assert d_NP[1].min() > 0.05 > d_NP[0].min()
  nearest = index.nearest([NEAR_COPY_37, UNRELATED])
  assert ids[int(nearest.target_N[0])] == "HumanEval/37"
  np.testing.assert_allclose(nearest.distance_N, d_NP.min(axis=1), rtol=1e-6)
  # batching does not change an embedding
  np.testing.assert_allclose(index.embed([NEAR_COPY_37])[0],
                             index.embed([UNRELATED, NEAR_COPY_37, "x"])[1], atol=1e-5)
