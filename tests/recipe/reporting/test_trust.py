"""The paired comparison of two models on the same problems, against a brute-force
computation: every bootstrap resample of a few problems enumerated, and the BCa
interval and p-value taken from that exact distribution."""

import itertools
import statistics

import numpy as np

from recipe.reporting import trust

LEVEL = 0.95


def exact_paired(per_problem_a: dict, per_problem_b: dict) -> dict:
  """Brute force: the mean difference (b minus a) over the problems; the exact
  bootstrap distribution of the mean difference (`means`: all P**P resamples with
  replacement, equally likely), the quantile levels of its BCa interval at LEVEL
  (Efron's formulas) and its two-sided p-value."""
  tasks = sorted(per_problem_a)
  diff = np.array([per_problem_b[t] - per_problem_a[t] for t in tasks])
  p = len(tasks)
  estimate = float(diff.mean())
  means = np.array([diff[list(index)].mean()
                    for index in itertools.product(range(p), repeat=p)])
  normal = statistics.NormalDist()
  below = np.mean(means < estimate) + 0.5 * np.mean(means == estimate)
  if p < 3 or np.all(diff == diff[0]):  # no spread to correct for: plain percentiles
    z0 = accel = 0.0
  else:
    z0 = normal.inv_cdf(below)
    jackknife = np.array([np.delete(diff, i).mean() for i in range(p)])
    d = jackknife.mean() - jackknife
    accel = np.sum(d ** 3) / (6 * np.sum(d ** 2) ** 1.5)
  levels = []
  for q in ((1 - LEVEL) / 2, (1 + LEVEL) / 2):
    z = z0 + normal.inv_cdf(q)
    levels.append(normal.cdf(z0 + z / (1 - accel * z)))
  p_value = min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0)))
  return {"difference": estimate, "levels": levels, "means": means, "p_value": float(p_value)}


def assert_matches_exact(result: dict, per_problem_a: dict, per_problem_b: dict) -> None:
  """`result` (a `paired` result) agrees with the brute force: the difference exactly;
  each end of the interval where the exact distribution puts the BCa level (its
  cumulative share just below and at the end brackets the level) and the p-value,
  within the Monte Carlo error of 10,000 resamples."""
  exact = exact_paired(per_problem_a, per_problem_b)
  assert abs(result["difference"] - exact["difference"]) < 1e-12, (result, exact)
  for end, level in zip(result["interval"], exact["levels"]):
    below, at = np.mean(exact["means"] < end - 1e-12), np.mean(exact["means"] <= end + 1e-12)
    # a quantile of 10,000 resamples: its level's standard error is at most 0.005
    assert below - 0.015 <= level <= at + 0.015, (result["interval"], exact["levels"],
                                                  below, at)
  # the p-value: twice a share of 10,000 resamples, standard error at most 0.01
  assert abs(result["p_value"] - exact["p_value"]) < 0.03, (result, exact["p_value"])
  assert result["beyond_noise"] == (result["interval"][0] > 0 or result["interval"][1] < 0)
  assert result["level"] == LEVEL and result["num_problems"] == len(per_problem_a)


def _scores(rng, tasks):
  return {t: float(v) for t, v in zip(tasks, rng.uniform(0, 1, len(tasks)))}


def test_paired_averages_the_common_seeds_per_problem_then_bootstraps_the_problems():
  rng = np.random.default_rng(1)
  tasks = [f"t{i}" for i in range(6)]
  a = {"0": _scores(rng, tasks), "1": _scores(rng, tasks), "2": _scores(rng, tasks)}
  b = {"0": _scores(rng, tasks), "1": _scores(rng, tasks)}
  for t in tasks:  # b better on most problems
    for seed in b:
      b[seed][t] = min(1.0, b[seed][t] + 0.3)
  result = trust.paired(a, b)
  assert result["seeds"] == ["0", "1"]  # seed 2 only a finished: left out
  mean_a = {t: (a["0"][t] + a["1"][t]) / 2 for t in tasks}
  mean_b = {t: (b["0"][t] + b["1"][t]) / 2 for t in tasks}
  assert_matches_exact(result, mean_a, mean_b)


def test_paired_uses_the_problems_both_scored_and_says_when_it_cannot_compare():
  rng = np.random.default_rng(2)
  tasks = [f"t{i}" for i in range(5)]
  a = {"0": _scores(rng, tasks + ["only_a"])}
  b = {"0": _scores(rng, tasks)}
  result = trust.paired(a, b)
  assert_matches_exact(result, {t: a["0"][t] for t in tasks}, b["0"])
  assert "not_compared" in trust.paired(a, {"1": b["0"]})
  assert "not_compared" in trust.paired(a, {"0": {"other": 1.0}})
  assert trust.paired_cells(trust.paired(a, {}))[1].startswith("not compared")
