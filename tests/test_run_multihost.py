"""run.py as a multi-host job: two processes on this machine with docs/multihost.md's
flags (--coordinator_address on loopback, --num_processes, --process_id), one CPU
device each, on a work directory whose data and init stages one process built."""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from tests.conftest import REPO_ROOT
from tests.files import collect
from tests.phi_jax.train.test_multihost import _free_port

# The tiny pipeline's data on a small sample (as tests/test_run.py's SHORT_TRAINING);
# every run on a work directory passes the same, so the data stage stays complete.
DATA = ("--config.model.num_layers=2", "--config.data.max_files=150",
        "--config.data.quality.annotate=80", "--config.data.quality.embed_max_len=64",
        "--config.data.quality.n_estimators=20")
# Short training without evaluations; `rows`: the global batches of one process.
TRAIN = ("--config.train.steps=2", "--config.train.checkpoint_every=2",
         "--config.train.eval_every=0", "--config.train.optimizer.warmup_steps=1",
         "--config.train.host_sharding=rows")
FINETUNE = ("--config.finetune.steps=2", "--config.finetune.checkpoint_every=2",
            "--config.finetune.eval_every=0", "--config.finetune.optimizer.warmup_steps=1",
            "--config.finetune.host_sharding=rows")


def _env(devices):
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS", "JAX_CPU_COLLECTIVES_IMPLEMENTATION")}
  env.update(JAX_PLATFORMS="cpu", TRANSFORMERS_VERBOSITY="error", PHI_JAX_TRACEBACK="1")
  if devices > 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def start_processes(num_processes, workdir, *args, devices=1, extra_env=None):
  """Starts `run.py --config=configs/tiny.py --workdir=WORKDIR ARGS` as `num_processes`
  processes of one job (one process: no coordinator flags), each with `devices` CPU
  devices (`extra_env(i)`: more environment of process i); returns the processes and
  their (stdout, stderr) files. Output goes to files: a process blocked on a full
  pipe would never reach the others' collectives."""
  command = [sys.executable, os.path.join(REPO_ROOT, "run.py"), "--config=configs/tiny.py",
             f"--workdir={workdir}", *DATA, *args]
  if num_processes > 1:
    command.append(f"--coordinator_address=127.0.0.1:{_free_port()}")
    command.append(f"--num_processes={num_processes}")
  logs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+"))
          for _ in range(num_processes)]
  procs = [subprocess.Popen(command + ([f"--process_id={i}"] if num_processes > 1 else []),
                            cwd=REPO_ROOT, stdout=out, stderr=err, text=True,
                            env=dict(_env(devices), **(extra_env(i) if extra_env else {})))
           for i, (out, err) in enumerate(logs)]
  return procs, logs


def run_processes(num_processes, workdir, *args, devices=1, timeout=480):
  """`start_processes`, then `collect`."""
  return collect(*start_processes(num_processes, workdir, *args, devices=devices),
                 timeout=timeout)


def check(results):
  for i, (code, out, err) in enumerate(results):
    assert code == 0, f"process {i}: exit {code}\n{out[-2000:]}\n{err[-3000:]}"


@pytest.fixture(scope="module")
def data_and_init(tmp_path_factory):
  """A work directory with the data and init stages done (one process)."""
  workdir = str(tmp_path_factory.mktemp("run_multihost") / "base")
  check(run_processes(1, workdir, "--stages=data,init"))
  return workdir


def _copy(base, directory):
  shutil.copytree(base, directory, symlinks=True)
  return str(directory)


def _final_params(workdir, stage):
  from phi_jax import checkpoint
  root = os.path.join(workdir, stage, "checkpoints")
  step_dir = os.path.join(root, str(checkpoint.steps(root)[-1]))
  return checkpoint.load_params(step_dir, checkpoint.read_config(step_dir))


def test_two_processes_pretrain_from_the_init_checkpoint(data_and_init, tmp_path):
  workdir = _copy(data_and_init, tmp_path / "two")
  results = run_processes(2, workdir, "--stages=pretrain", *TRAIN)
  check(results)
  for _, out, _ in results:
    assert "[pretrain] done" in out, out[-2000:]
  stage = os.path.join(workdir, "pretrain")
  assert os.path.isfile(os.path.join(stage, "COMPLETE.json"))
  from phi_jax import checkpoint
  assert checkpoint.steps(os.path.join(stage, "checkpoints")) == [2]
  metadata = checkpoint.read_metadata(os.path.join(stage, "checkpoints", "2"))
  assert metadata["source"] == "pretrain:" + os.path.join(workdir, "init", "checkpoints")


@pytest.mark.slow
def test_two_processes_pretrain_and_finetune_like_one(data_and_init, tmp_path):
  """Two processes of one device each against one process with two devices: the same
  mesh, global batches (`rows`) and programs, so the parameters are bit-equal (one
  device would sum the gradients in another order: equal to ~1e-5 only)."""
  one = _copy(data_and_init, tmp_path / "one")
  two = _copy(data_and_init, tmp_path / "two")
  steps = ("--stages=pretrain,finetune", *TRAIN, *FINETUNE, "--config.train.steps=4",
           "--config.finetune.steps=3", "--config.finetune.checkpoint_every=3")
  check(run_processes(1, one, *steps, devices=2))
  check(run_processes(2, two, *steps))
  import jax
  for stage in ("pretrain", "finetune"):
    want, got = _final_params(one, stage), _final_params(two, stage)
    assert jax.tree.structure(want) == jax.tree.structure(got)
    for path, a, b in zip(jax.tree_util.tree_leaves_with_path(want),
                          jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b),
                                    err_msg=f"{stage} {jax.tree_util.keystr(path[0])}")


DECONTAMINATE = ("--stages=decontaminate",
                 "--config.decontaminate.checks=('ngram', 'embedding', 'ast')")


def test_decontaminate_runs_once_on_process_0(data_and_init, tmp_path):
  one = _copy(data_and_init, tmp_path / "one")
  two = _copy(data_and_init, tmp_path / "two")
  check(run_processes(1, one, *DECONTAMINATE))
  results = run_processes(2, two, *DECONTAMINATE)
  check(results)
  (_, out0, _), (_, out1, _) = results
  assert "[decontaminate] phi1_filtered_code: 1 file(s)" in out0, out0[-2000:]
  assert "[decontaminate] runs on process 0; waiting for it" in out1, out1[-2000:]
  assert "file(s)" not in out1
  files = sorted(os.path.relpath(os.path.join(d, f), os.path.join(one, "decontaminate"))
                 for d, _, names in os.walk(os.path.join(one, "decontaminate")) for f in names
                 if f.endswith(".jsonl") or f == "summary.json")
  assert any(f.endswith("kept.jsonl") for f in files), files
  for name in files:  # equal, but for the work directories' paths in the records
    with open(os.path.join(one, "decontaminate", name)) as a, \
         open(os.path.join(two, "decontaminate", name)) as b:
      assert a.read().replace(one, "WORKDIR") == b.read().replace(two, "WORKDIR"), name


def test_decontaminate_with_an_orbax_embedder_runs_on_every_process(data_and_init):
  """An Orbax restore is a collective of the whole job: process 0 cannot load the
  embedding model alone."""
  from configs import tiny
  from recipe import graph, runner
  from recipe.stages import decontaminate
  config = tiny.get_config()
  ctx = runner.Context(config, data_and_init, graph.build())
  assert decontaminate._primary_only(ctx)  # pylint: disable=protected-access
  config.decontaminate.checks = ("ngram", "embedding")
  assert decontaminate._primary_only(ctx)  # random-init embedder: local computation
  config.data.quality.embed_model = os.path.join(data_and_init, "init", "checkpoints")
  assert not decontaminate._primary_only(ctx)
  config.decontaminate.checks = ("ngram", "ast")
  assert decontaminate._primary_only(ctx)


BOUND = 10  # --heartbeat_timeout_s of the tests below
RESUMABLE = ("--stages=pretrain", *TRAIN, "--config.train.steps=8",
             "--config.train.checkpoint_every=2", f"--heartbeat_timeout_s={BOUND}")


@pytest.fixture(scope="module")
def uninterrupted(data_and_init, tmp_path_factory):
  """The final pretraining parameters of an uninterrupted two-process run."""
  workdir = _copy(data_and_init, tmp_path_factory.mktemp("uninterrupted") / "w")
  check(run_processes(2, workdir, *RESUMABLE))
  return _final_params(workdir, "pretrain")


def _phi_lines(err):
  return [line for line in err.splitlines() if line.startswith("run.py:")]


def _stop_one_then_resume(data_and_init, uninterrupted, tmp_path, signal_name):
  """Process 1 gets `signal_name` right after step 5 of 8 (checkpoints every 2 steps);
  returns the (code, stdout, stderr) of both processes after checking that process 0
  stopped within the bound, nothing was marked complete, and the same command on both
  resumes from the last committed checkpoint and ends at the uninterrupted run's
  parameters."""
  workdir = _copy(data_and_init, tmp_path / "stopped")
  env = {"PHI_JAX_TEST_KILL_AFTER_STEP": "5", "PHI_JAX_TEST_KILL_SIGNAL": signal_name}
  procs, logs = start_processes(2, workdir, *RESUMABLE,
                                extra_env=lambda i: env if i == 1 else {})
  try:
    procs[1].wait(timeout=400)
    stopped_at = time.monotonic()
    procs[0].wait(timeout=BOUND + 60)
    waited = time.monotonic() - stopped_at
  finally:
    results = collect(procs, logs)
  # the bound, and time for a loaded machine to notice and to tear the process down
  assert waited < BOUND + 30, waited
  assert results[0][0] == 1, results[0][2][-3000:]
  assert "[pretrain] run:" in results[0][1]
  stage = os.path.join(workdir, "pretrain")
  assert not os.path.exists(os.path.join(stage, "COMPLETE.json"))
  from phi_jax import checkpoint
  # step 4's save may still have been under way (Orbax writes asynchronously): it was
  # not committed then, and is no step a restart loads
  assert checkpoint.steps(os.path.join(stage, "checkpoints"))[-1] in (2, 4)

  resumed = run_processes(2, workdir, *RESUMABLE)
  check(resumed)
  assert "[pretrain] resuming from step" in resumed[0][1], resumed[0][1][-2000:]
  assert os.path.isfile(os.path.join(stage, "COMPLETE.json"))
  import jax
  got = _final_params(workdir, "pretrain")
  for path, a, b in zip(jax.tree_util.tree_leaves_with_path(uninterrupted),
                        jax.tree.leaves(uninterrupted), jax.tree.leaves(got), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b),
                                  err_msg=jax.tree_util.keystr(path[0]))
  return results


@pytest.mark.slow
def test_a_process_killed_in_pretraining_is_named_and_the_job_resumes(
    data_and_init, uninterrupted, tmp_path):
  results = _stop_one_then_resume(data_and_init, uninterrupted, tmp_path, "KILL")
  assert results[1][0] == -9, results[1][2][-2000:]
  assert _phi_lines(results[0][2]) == [
      f"run.py: error: process 1 was lost while running node 'pretrain' (killed, or no "
      f"heartbeat for {BOUND} s); nothing of 'pretrain' was marked complete; run the same "
      f"command on every host to resume"], results[0][2][-3000:]
  assert "Terminating process" not in results[0][2]


@pytest.mark.slow
def test_sigterm_on_one_process_in_pretraining_stops_the_job_and_it_resumes(
    data_and_init, uninterrupted, tmp_path):
  results = _stop_one_then_resume(data_and_init, uninterrupted, tmp_path, "TERM")
  assert results[1][0] == 143, results[1][2][-2000:]
  assert _phi_lines(results[1][2]) == [
      "run.py: interrupted (SIGTERM) on process 1 while running node 'pretrain'; every "
      "process of the job stops; nothing of 'pretrain' was marked complete; run the same "
      "command on every host to resume"], results[1][2][-3000:]
  assert _phi_lines(results[0][2]) == [
      "run.py: error: process 1 was interrupted (SIGTERM) while running node 'pretrain'; "
      "nothing of 'pretrain' was marked complete; run the same command on every host to "
      "resume"], results[0][2][-3000:]
