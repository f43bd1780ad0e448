"""The machine-speed probe: how much slower than the reference machine programs run here.

HumanEval, MBPP and APPS have fixed time limits, set on some machine: on a slower or
busier one, correct but slow programs time out (EvalPlus users saw a model's score fall
from 0.40 to 0.23 on a slow machine). Before executing, the evaluator runs a fixed
CPU-bound Python program in the sandbox, once per worker at the same time (the load the
samples will meet), a few rounds, and takes the median time. The fixed limits are
multiplied by `scale` = max(1, probe time / REFERENCE_S): a slower machine gets
proportionally more time, a faster one keeps the configured limits (they stay the
floor). EvalPlus benchmarks time their own reference solutions on this machine instead.
A process evaluating several benchmarks or models measures once per FRESH_S seconds.
"""

from __future__ import annotations

import statistics
import time

# The probe: pure-Python integer arithmetic and a dict, no I/O, no allocation growth.
PROBE_PROGRAM = """\
total = 0
table = {}
for i in range(200_000):
    total = (total * 31 + i) % 1_000_003
    table[i & 1023] = total
assert total >= 0
"""
# The probe's median seconds in the sandbox (start-up included) on the reference machine
# (docs/benchmarks.md: which machine, and how the limits were chosen for it).
REFERENCE_S = 0.13
ROUNDS = 2
FRESH_S = 300.0  # a measurement this recent (same sandbox level and workers) is reused
_measured: dict[tuple[str, int], tuple[float, dict]] = {}


def measure(sandbox, workers: int) -> dict:
  """Runs the probe `workers` at a time for ROUNDS rounds in `sandbox`; returns
  {"probe_s": median seconds, "reference_s", "scale", "workers", "runs"}. A probe
  that fails (it cannot, short of a broken sandbox) is an error, not a scale of 1."""
  key = (sandbox.isolation, workers)
  if key in _measured and time.monotonic() - _measured[key][0] < FRESH_S:
    return dict(_measured[key][1])
  runs = []
  for _ in range(ROUNDS):
    outcomes = sandbox.run_many([PROBE_PROGRAM] * workers, workers=workers)
    for outcome in outcomes:
      if not outcome.passed:
        raise RuntimeError(f"the machine-speed probe failed in the sandbox ({outcome.failure}): "
                           f"{outcome.stderr_tail[-500:]}")
      runs.append(outcome.duration_s)
  probe_s = statistics.median(runs)
  result = {"probe_s": round(probe_s, 4), "reference_s": REFERENCE_S,
            "scale": scale_of(probe_s), "workers": workers, "runs": len(runs)}
  _measured[key] = (time.monotonic(), result)
  return dict(result)


def scale_of(probe_s: float) -> float:
  """The factor fixed limits are multiplied by for a probe time (never below 1)."""
  return round(max(1.0, probe_s / REFERENCE_S), 3)
