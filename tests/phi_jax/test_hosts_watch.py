"""phi_jax.hosts.watch in a job of two processes (jax.distributed on loopback, one CPU
device each, tests/phi_jax/hosts_driver.py): a process killed or interrupted while the
job runs a node ends the other one within the heartbeat bound, with one line naming
the process and the node; a job that finishes ends cleanly on both."""

import os
import signal
import subprocess
import sys
import tempfile
import time

from tests.conftest import REPO_ROOT
from tests.phi_jax.train.test_multihost import _env, _free_port

BOUND = 10  # --heartbeat_timeout_s


def _start(mode):
  port = _free_port()
  logs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in range(2)]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests.phi_jax.hosts_driver", str(port), "2", str(i), mode,
       str(BOUND)], cwd=REPO_ROOT, env=_env({"PYTHONUNBUFFERED": "1"}), stdout=out,
      stderr=err, text=True) for i, (out, err) in enumerate(logs)]
  return procs, logs


def _read(logs, i):
  out, err = logs[i]
  out.seek(0)
  err.seek(0)
  return out.read(), err.read()


def _wait_ready(procs, logs, timeout=240):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if all("ready" in _read(logs, i)[0] for i in range(2)):
      return
    assert all(p.poll() is None for p in procs), [_read(logs, i) for i in range(2)]
    time.sleep(0.2)
  raise AssertionError(f"not ready: {[_read(logs, i) for i in range(2)]}")


def _finish(procs, logs, timeout):
  """Waits (at most `timeout` s after the call) for both; [(code, out, err, seconds)]."""
  start = time.monotonic()
  results = []
  try:
    for i, p in enumerate(procs):
      p.wait(timeout=max(1, timeout - (time.monotonic() - start)))
      results.append((p.returncode, *_read(logs, i), time.monotonic() - start))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return results


def _lines(err):
  """stderr without JAX's and gloo's own log lines."""
  return [line for line in err.splitlines()
          if line.startswith("hosts_driver:")]


def test_a_job_that_finishes_ends_cleanly_on_every_process():
  procs, logs = _start("finish")
  for code, out, err, _ in _finish(procs, logs, 240):
    assert code == 0, err[-3000:]
    assert "finished" in out
    assert "Terminating process" not in err


def _killed(which):
  procs, logs = _start(f"kill-{which}")
  _wait_ready(procs, logs)
  procs[which].wait(timeout=120)
  other = 1 - which
  code, out, err, seconds = _finish([procs[other]], [logs[other]], BOUND + 30)[0]
  assert procs[which].returncode == -signal.SIGKILL
  assert code == 1, err[-3000:]
  assert seconds < BOUND + 20
  assert _lines(err) == [
      f"hosts_driver: error: process {which} was lost while running node 'demo' (killed, "
      f"or no heartbeat for {BOUND} s); nothing of 'demo' was marked complete; run the "
      f"same command on every host to resume"], err[-3000:]
  assert "Terminating process" not in err


def test_a_killed_process_is_named_with_its_node_within_the_bound():
  _killed(1)


def test_a_killed_process_0_is_named_too():
  """Process 0 runs beside the coordination service (phi_jax/coordinator.py), not
  holding it: its loss reaches the others like any process's, not as JAX's
  'Terminating process because the JAX distributed service detected fatal errors'."""
  _killed(0)


def _interrupt(which, signum):
  procs, logs = _start("wait")
  _wait_ready(procs, logs)
  os.kill(procs[which].pid, signum)
  results = _finish(procs, logs, BOUND + 30)
  other = 1 - which
  name = signal.Signals(signum).name
  code, _, err, seconds = results[which]
  assert code == 128 + signum, err[-3000:]
  assert _lines(err) == [
      f"hosts_driver: interrupted ({name}) on process {which} while running node 'demo'; "
      f"every process of the job stops; nothing of 'demo' was marked complete; run the "
      f"same command on every host to resume"], err[-3000:]
  code, _, err, seconds = results[other]
  assert code == 1, err[-3000:]
  assert seconds < BOUND + 20
  assert _lines(err) == [
      f"hosts_driver: error: process {which} was interrupted ({name}) while running node "
      f"'demo'; nothing of 'demo' was marked complete; run the same command on every "
      f"host to resume"], err[-3000:]
  for _, _, err, _ in results:
    assert "Terminating process" not in err


def test_sigterm_on_one_process_stops_the_job_with_one_line_each():
  _interrupt(1, signal.SIGTERM)


def test_ctrl_c_on_the_coordinator_stops_the_job_with_one_line_each():
  _interrupt(0, signal.SIGINT)


def test_a_closed_ssh_session_sighup_stops_the_job_too():
  _interrupt(1, signal.SIGHUP)


def test_losing_process_0s_whole_host_is_named_within_the_bound():
  """Process 0 and the coordination service's process beside it are killed together
  (its host lost): JAX's client aborts the other process ('Terminating process because
  the JAX distributed service detected fatal errors'); it leaves instead with one line
  naming process 0 and the node, exit 1."""
  procs, logs = _start("host-0-lost")
  _wait_ready(procs, logs)
  procs[0].wait(timeout=120)
  code, _, err, seconds = _finish([procs[1]], [logs[1]], BOUND + 30)[0]
  assert procs[0].returncode == -signal.SIGKILL
  assert code == 1, err[-3000:]
  assert seconds < BOUND + 20
  assert _lines(err) == [
      "hosts_driver: error: process 0 was lost while running node 'demo' (its host, which "
      "runs the job's coordination service, cannot be reached); nothing of 'demo' was "
      "marked complete; run the same command on every host to resume"], err[-3000:]
