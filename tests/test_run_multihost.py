"""run.py as a multi-host job: two processes on this machine with docs/multihost.md's
flags (--coordinator_address on loopback, --num_processes, --process_id), one CPU
device each, on a work directory whose data and init stages one process built."""

import json
import os
import re
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


def _after_the_loss(procs, logs, lost=1):
  """Waits for process `lost` to end, then for the other; returns (results, seconds the
  other took after process `lost` ended)."""
  try:
    procs[lost].wait(timeout=400)
    stopped_at = time.monotonic()
    procs[1 - lost].wait(timeout=BOUND + 60)
    waited = time.monotonic() - stopped_at
  finally:
    results = collect(procs, logs)
  return results, waited


def _stop_one_then_resume(data_and_init, uninterrupted, tmp_path, signal_name, step=5,
                          committed=(2, 4), lost=1):
  """Process `lost` gets `signal_name` right after step `step` of 8 (checkpoints every 2
  steps; 'HOST': process 0 and the coordination service beside it are SIGKILLed);
  returns the (code, stdout, stderr) of both processes after checking that the other
  stopped within the bound, nothing was marked complete, the latest committed
  checkpoint is one of `committed`, and the same command on both resumes from it and
  ends at the uninterrupted run's parameters."""
  workdir = _copy(data_and_init, tmp_path / "stopped")
  env = {"PHI_JAX_TEST_KILL_AFTER_STEP": str(step), "PHI_JAX_TEST_KILL_SIGNAL": signal_name}
  procs, logs = start_processes(2, workdir, *RESUMABLE,
                                extra_env=lambda i: env if i == lost else {})
  results, waited = _after_the_loss(procs, logs, lost)
  other = 1 - lost
  # the bound, and time for a loaded machine to notice and to tear the process down
  assert waited < BOUND + 30, waited
  assert results[other][0] == 1, results[other][2][-3000:]
  assert "[pretrain] run:" in results[other][1]
  stage = os.path.join(workdir, "pretrain")
  assert not os.path.exists(os.path.join(stage, "COMPLETE.json"))
  from phi_jax import checkpoint
  # a save still under way (Orbax writes asynchronously) was not committed, and is no
  # step a restart loads
  last = checkpoint.steps(os.path.join(stage, "checkpoints"))[-1]
  assert last in committed, last

  resumed = run_processes(2, workdir, *RESUMABLE)
  check(resumed)
  assert f"[pretrain] resuming from step {last} " in resumed[0][1], resumed[0][1][-2000:]
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
def test_a_process_killed_during_a_checkpoint_save_leaves_no_step_a_restart_loads(
    data_and_init, uninterrupted, tmp_path):
  """Process 1 is killed right after it started saving step 4, before the save is
  committed: Orbax commits a step (renames its temporary directory) on process 0 only
  after every process wrote its part, so step 4 is never committed, and the restart
  resumes from step 2."""
  results = _stop_one_then_resume(data_and_init, uninterrupted, tmp_path, "KILL", step=4,
                                  committed=(2,))
  assert results[1][0] == -9, results[1][2][-2000:]
  assert "test hook: SIGKILL after step 4; its checkpoint: in flight" in results[1][1], \
      results[1][1][-2000:]
  assert _phi_lines(results[0][2]) == [
      f"run.py: error: process 1 was lost while running node 'pretrain' (killed, or no "
      f"heartbeat for {BOUND} s); nothing of 'pretrain' was marked complete; run the same "
      f"command on every host to resume"], results[0][2][-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("signal_name,code", [("TERM", 143), ("INT", 130)])
def test_sigterm_or_ctrl_c_on_one_process_in_pretraining_stops_the_job_and_it_resumes(
    data_and_init, uninterrupted, tmp_path, signal_name, code):
  results = _stop_one_then_resume(data_and_init, uninterrupted, tmp_path, signal_name)
  assert results[1][0] == code, results[1][2][-2000:]
  assert _phi_lines(results[1][2]) == [
      f"run.py: interrupted (SIG{signal_name}) on process 1 while running node 'pretrain'; "
      "every process of the job stops; nothing of 'pretrain' was marked complete; run the "
      "same command on every host to resume"], results[1][2][-3000:]
  assert _phi_lines(results[0][2]) == [
      f"run.py: error: process 1 was interrupted (SIG{signal_name}) while running node "
      "'pretrain'; nothing of 'pretrain' was marked complete; run the same command on every "
      "host to resume"], results[0][2][-3000:]


@pytest.mark.slow
def test_sigterm_during_a_checkpoint_save_lets_the_save_finish_and_the_job_resumes_from_it(
    data_and_init, uninterrupted, tmp_path):
  """Process 1 gets SIGTERM right after it started saving step 4, the save in flight:
  both processes let it finish before they leave, so step 4 is committed and the
  restart resumes from it (a stop that did not wait would leave step 2)."""
  results = _stop_one_then_resume(data_and_init, uninterrupted, tmp_path, "TERM", step=4,
                                  committed=(4,))
  assert results[1][0] == 143, results[1][2][-2000:]
  assert "test hook: SIGTERM after step 4; its checkpoint: in flight" in results[1][1], \
      results[1][1][-2000:]
  for _, out, _ in results:
    assert "[hosts] finishing this process's checkpoint save in flight" in out, out[-2000:]
  assert _phi_lines(results[1][2]) == [
      "run.py: interrupted (SIGTERM) on process 1 while running node 'pretrain'; every "
      "process of the job stops; nothing of 'pretrain' was marked complete; run the same "
      "command on every host to resume"], results[1][2][-3000:]
  assert _phi_lines(results[0][2]) == [
      "run.py: error: process 1 was interrupted (SIGTERM) while running node 'pretrain'; "
      "nothing of 'pretrain' was marked complete; run the same command on every host to "
      "resume"], results[0][2][-3000:]


@pytest.mark.slow
def test_losing_process_0s_whole_host_in_pretraining_is_named_and_the_job_resumes(
    data_and_init, uninterrupted, tmp_path):
  """Process 0 and the coordination service's process beside it are SIGKILLed after
  step 5 (process 0's host lost): process 1 exits 1 within the bound naming process 0
  and the node, not with JAX's own message alone; the job resumes."""
  results = _stop_one_then_resume(data_and_init, uninterrupted, tmp_path, "HOST", lost=0)
  assert results[0][0] == -9, results[0][2][-2000:]
  assert _phi_lines(results[1][2]) == [
      "run.py: error: process 0 was lost while running node 'pretrain' (its host, which "
      "runs the job's coordination service, cannot be reached); nothing of 'pretrain' was "
      "marked complete; run the same command on every host to resume"], \
      results[1][2][-3000:]


CURATE = ("--stages=curate", "--config.data.runner=datatrove",
          f"--heartbeat_timeout_s={BOUND}")


@pytest.mark.slow
def test_a_process_killed_in_a_datatrove_curate_phase_is_named_and_the_job_resumes(
    tmp_path):
  """Process 1 is killed after its block of the group phase, before the phase's barrier:
  process 0 stops within the bound naming it; `curate` is not marked complete; the same
  command on both finishes it, writing what one process's in-process curation wrote."""
  pytest.importorskip("datatrove")
  workdir = str(tmp_path / "curate")
  procs, logs = start_processes(
      2, workdir, *CURATE,
      extra_env=lambda i: {"PHI_JAX_TEST_KILL_IN_CURATE_PHASE": "group"} if i == 1 else {})
  results, waited = _after_the_loss(procs, logs)
  assert results[1][0] == -9, results[1][2][-2000:]
  assert "[curate] test hook: SIGKILL after this host's group tasks" in results[1][1]
  assert waited < BOUND + 30, waited
  assert results[0][0] == 1, results[0][2][-3000:]
  assert _phi_lines(results[0][2]) == [
      f"run.py: error: process 1 was lost while running node 'curate' (killed, or no "
      f"heartbeat for {BOUND} s); nothing of 'curate' was marked complete; run the same "
      f"command on every host to resume"], results[0][2][-3000:]
  curated = os.path.join("data", "curated", "code.jsonl")
  assert not os.path.exists(os.path.join(workdir, curated))
  assert not os.path.exists(os.path.join(workdir, "data", "steps", "curate.json"))

  check(run_processes(2, workdir, *CURATE))
  one = str(tmp_path / "one")  # one process, the in-process runner
  check(run_processes(1, one, "--stages=curate"))
  with open(os.path.join(workdir, curated), "rb") as a, \
       open(os.path.join(one, curated), "rb") as b:
    assert a.read() == b.read()


# Every stage of configs/tiny.py (config.stages), on the small data sample, with short
# training and a short evaluation.
EVERY_STAGE = (*TRAIN, *FINETUNE, "--config.sample.max_new_tokens=16",
               "--config.eval.limit=3", "--config.eval.max_new_tokens=16")


def _files(workdir, *parts):
  root = os.path.join(workdir, *parts)
  return sorted(os.path.relpath(os.path.join(d, n), root)
                for d, _, names in os.walk(root) for n in names)


def _bytes(workdir, *parts):
  with open(os.path.join(workdir, *parts), "rb") as f:
    return f.read()


@pytest.mark.slow
def test_two_processes_run_every_stage_like_one(tmp_path):
  """The whole recipe (data, synthesize, decontaminate, init, pretrain, finetune,
  curves, sample, eval, export_hf, report) as two processes of one CPU device each
  against one process with two devices (`rows`: the same global batches and mesh):
  every stage completes on both, no output is written twice, and the final
  parameters, samples, evaluation and export are equal."""
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  check(run_processes(1, one, *EVERY_STAGE, devices=2, timeout=1500))
  results = run_processes(2, two, *EVERY_STAGE, timeout=1500)
  check(results)
  # the samples run in the sandbox on process 0 alone (eval.run's table of a scored
  # benchmark); process 1 takes part in the generation only
  (_, out0, _), (_, out1, _) = results
  scored = re.compile(r"^passed\s+\d+$", re.M)
  assert scored.search(out0), out0[-3000:]
  assert "(generating; process 0 runs the samples)" in out1, out1[-3000:]
  assert not scored.search(out1), out1[-3000:]
  from recipe import graph
  for node in graph.build().nodes:  # every node of every stage, marked complete
    assert os.path.isfile(os.path.join(two, node.marker_path)), node.name
  import jax
  for stage in ("pretrain", "finetune"):
    want, got = _final_params(one, stage), _final_params(two, stage)
    for path, a, b in zip(jax.tree_util.tree_leaves_with_path(want),
                          jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b),
                                    err_msg=f"{stage} {jax.tree_util.keystr(path[0])}")
  for parts in (("data", "curated", "code.jsonl"), ("sample", "samples.jsonl")):
    assert _bytes(one, *parts) == _bytes(two, *parts), parts
  # the evaluation equal but for what each run measured of its machine (the speed
  # probe's timing, eval/speed.py)
  summaries = [json.loads(_bytes(d, "eval", "summary.json")) for d in (one, two)]
  for summary in summaries:
    for result in summary.values():
      assert result.pop("machine")["scale"] >= 1
  assert summaries[0] == summaries[1]
  exported = _files(one, "export_hf", "hf")
  assert exported and exported == _files(two, "export_hf", "hf")
  for name in exported:
    assert _bytes(one, "export_hf", "hf", name) == _bytes(two, "export_hf", "hf", name), name
  # nothing left behind by a second writer (temporary files or directories)
  leftovers = [f for f in _files(two) if ".tmp-" in f or ".stale-" in f]
  assert not leftovers, leftovers
