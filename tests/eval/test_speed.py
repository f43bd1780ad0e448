"""The machine-speed probe: its scale from the probe's times, and its run in a sandbox."""

import types

import pytest

from eval import speed
from eval.benchmarks import APPS, HumanEval, HumanEvalPlus, MBPP
from eval.sandbox import Sandbox, SandboxLimits


class _TimedSandbox:
  """Returns outcomes with the given durations, in turn."""

  isolation = "fake"

  def __init__(self, durations):
    self.durations = list(durations)

  def run_many(self, programs, workers=None):
    return [types.SimpleNamespace(passed=True, failure=None, stderr_tail="",
                                  duration_s=self.durations.pop(0)) for _ in programs]


def test_the_scale_is_the_median_probe_over_the_reference_never_below_one(monkeypatch):
  monkeypatch.setattr(speed, "_measured", {})
  slow = [speed.REFERENCE_S * f for f in (2.0, 3.0, 9.0, 2.5)]  # 2 workers x 2 rounds
  result = speed.measure(_TimedSandbox(slow), workers=2)
  assert result["runs"] == 4 and result["scale"] == pytest.approx(2.75, abs=1e-3)
  monkeypatch.setattr(speed, "_measured", {})
  fast = [speed.REFERENCE_S / 3] * 4
  assert speed.measure(_TimedSandbox(fast), workers=2)["scale"] == 1.0
  # measured again within FRESH_S: the same result, nothing run
  assert speed.measure(_TimedSandbox([]), workers=2)["scale"] == 1.0


def test_the_probe_runs_in_the_sandbox():
  box = Sandbox(SandboxLimits(timeout_s=10, cpu_s=10))
  speed._measured.pop((box.isolation, 1), None)
  result = speed.measure(box, workers=1)
  assert 0 < result["probe_s"] < 10 and result["scale"] >= 1.0


def test_fixed_limits_are_the_benchmarks_own_except_evalplus():
  assert HumanEval.fixed_limits and MBPP.fixed_limits and APPS.fixed_limits
  assert not HumanEvalPlus.fixed_limits  # times its reference solutions on this machine
  assert APPS(time_limit_s=4.0).time_scaled(2.5).time_limit_s == 10.0
  benchmark = HumanEval()
  assert benchmark.time_scaled(3.0) is benchmark  # its limit is the sandbox's
