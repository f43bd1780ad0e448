"""phi_jax.hosts outside a multi-host job: one process, barriers that return at once.
(Two-process behaviour: tests/recipe/test_runner_multihost.py and
tests/recipe/test_data_multihost.py.)"""

import jax

from phi_jax import hosts


def test_one_process_is_process_0_of_1_and_its_barriers_return_its_values():
  assert not jax.distributed.is_initialized()
  assert not hosts.is_multihost()
  assert (hosts.index(), hosts.count()) == (0, 1)
  assert hosts.sync("a barrier") == [True]
  assert hosts.sync("a failed step", ok=False) == [False]
  assert hosts.gather_bytes("a digest", b"\x01\x02") == [b"\x01\x02"]


def test_one_process_agrees_with_itself():
  assert hosts.differ_from_first("a plan", b"anything") == []


def test_run_and_sync_reports_this_process_at_the_barrier_and_reraises():
  import pytest
  calls = []

  def barrier(name, ok):
    calls.append((name, ok))
    return [ok, False]  # as if process 1 failed

  assert hosts.run_and_sync("step", lambda: 7, barrier) == (7, [1])

  def broken():
    raise ValueError("own failure")

  with pytest.raises(ValueError, match="own failure"):
    hosts.run_and_sync("step", broken, barrier)
  assert calls == [("step", True), ("step", False)]
  assert hosts.run_and_sync("alone", lambda: "x") == ("x", [])
