"""Multi-host: two processes on this machine (one CPU device each, jax.distributed on
loopback) shard the data, write checkpoints together, and resume them in two or one."""

import collections
import json
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from phi_jax.config import ConfigError
from phi_jax.train import mesh as mesh_lib
from phi_jax.train.metrics import read_metrics
from tests.conftest import REPO_ROOT
from tests.files import collect


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _env(extra=None):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS")}
  env.update(JAX_PLATFORMS="cpu", **(extra or {}))
  return env


def launch(num_processes, *args, extra_env=None, check=True, timeout=480):
  """Runs the multihost driver as `num_processes` processes; their (returncode, stdout,
  stderr) in process order. Output goes to files: a process blocked on a full pipe
  would never reach the others' barriers."""
  port = _free_port()
  logs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+"))
          for _ in range(num_processes)]
  procs = [subprocess.Popen(
      [sys.executable, "-m", "tests.phi_jax.train.multihost_driver", str(port),
       str(num_processes), str(i), *map(str, args)], cwd=REPO_ROOT, env=_env(extra_env),
      stdout=out, stderr=err, text=True) for i, (out, err) in enumerate(logs)]
  results = collect(procs, logs, timeout)
  if check:
    for i, (code, out, err) in enumerate(results):
      assert code == 0, f"process {i}: exit {code}\n{out[-2000:]}\n{err[-3000:]}"
  return results


def test_explicit_coordinator_flags_are_checked():
  with pytest.raises(ConfigError, match="together"):
    mesh_lib.maybe_initialize_distributed("127.0.0.1:1234", 2, None)
  with pytest.raises(ConfigError, match=r"--process_id 2 must be in \[0, --num_processes 2\)"):
    mesh_lib.maybe_initialize_distributed("127.0.0.1:1234", 2, 2)
  with pytest.raises(ConfigError, match="host:port"):
    mesh_lib.maybe_initialize_distributed("localhost", 2, 0)
  with pytest.raises(ConfigError, match="heartbeat_timeout_s 0"):
    mesh_lib.maybe_initialize_distributed("127.0.0.1:1234", 2, 0, heartbeat_timeout_s=0)
  assert not mesh_lib.maybe_initialize_distributed("127.0.0.1:1234", 1, 0)  # one process


@pytest.fixture(scope="module")
def code_dataset(tmp_path_factory):
  """A workdir with the datasets driver.py trains on (small, byte-level tokenized)."""
  from data_pipeline import catalog, token_dataset
  from phi_jax.tokenizer import byte_level
  from tests.data_pipeline.test_token_dataset import code_rows, exercise_rows, write_jsonl
  workdir = tmp_path_factory.mktemp("multihost_data")
  data_dir = catalog.tfds_dir(str(workdir))
  for name, rows in ((catalog.FILTERED_CODE, code_rows(60)),
                     (catalog.EXERCISES, exercise_rows(20))):
    jsonl = write_jsonl(workdir / f"{name}.jsonl", rows)
    token_dataset.write_jsonl_dataset(name, [jsonl], byte_level(), data_dir,
                                      validation_fraction=0.1)
  return str(workdir), catalog.built_version_dir(data_dir, catalog.FILTERED_CODE)


def _documents(dataset_dir):
  from data_pipeline import loader
  one = loader.make_loader([dataset_dir], split="train", seq_len=64, batch_size=4, seed=3,
                           eos_id=256, shard_index=0, shard_count=1)
  return one, [tuple(t.tolist()) for t in one.epoch_documents(0)]


@pytest.mark.slow
@pytest.mark.parametrize("host_sharding", ["documents", "rows"])
def test_each_epoch_sees_every_document_once_across_two_processes(code_dataset, host_sharding):
  _, dataset_dir = code_dataset
  single, want = _documents(dataset_dir)
  hosts = [json.loads(next(line for line in out.splitlines() if line.startswith('{"process"')))
           for _, out, _ in launch(2, "epoch", dataset_dir, 64, 4, host_sharding)]
  assert [h["process"] for h in hosts] == [0, 1]
  for epoch in (0, 1):
    seen = [tuple(doc) for h in hosts for doc in h["epochs"][epoch]]
    if host_sharding == "documents":  # each host its own documents: together all, once
      assert collections.Counter(seen) == collections.Counter(want)
      assert not set(map(tuple, hosts[0]["epochs"][epoch])) & set(
          map(tuple, hosts[1]["epochs"][epoch]))
    else:  # each host reads all, in the one-host order
      assert all([tuple(d) for d in h["epochs"][0]] == want for h in hosts)
  if host_sharding == "rows":  # host i's rows of the one-host global batch
    global_batch = next(single)["tokens"].tolist()
    assert hosts[0]["first_batch"] + hosts[1]["first_batch"] == global_batch
    assert hosts[0]["state"] == hosts[1]["state"]


def _losses(stage_dir):
  return {r["step"]: r["loss"] for r in read_metrics(stage_dir) if r["kind"] == "train"}


TRAIN = {"train.steps": 8, "train.checkpoint_every": 3, "train.eval_every": 0,
         "train.host_sharding": "rows"}


def _params(step_dir):
  from phi_jax import checkpoint
  config = checkpoint.read_config(step_dir)
  return checkpoint.load_params(step_dir, config)


@pytest.mark.slow
def test_two_processes_train_like_one_and_their_checkpoint_resumes_in_two_and_one(
    tmp_path, code_dataset):
  data_workdir, _ = code_dataset

  def workdir(name):
    path = tmp_path / name
    os.makedirs(path / "data", exist_ok=True)
    os.symlink(os.path.join(data_workdir, "data", "tfds"), path / "data" / "tfds")
    return str(path)

  one = workdir("one")
  launch(1, "stages", one, "pretrain", json.dumps(TRAIN))
  two = workdir("two")
  launch(2, "stages", two, "pretrain", json.dumps(TRAIN))
  want = _losses(os.path.join(one, "pretrain"))
  assert sorted(want) == list(range(1, 9))
  got = _losses(os.path.join(two, "pretrain"))  # process 0 writes the metrics
  np.testing.assert_allclose([got[s] for s in sorted(want)], [want[s] for s in sorted(want)],
                             rtol=2e-5)

  # killed after step 7: checkpoint 3 is written (6 may still be in flight)
  kill = {"PHI_JAX_TEST_KILL_AFTER_STEP": "7"}
  for name, resume_in in (("resume2", 2), ("resume1", 1)):
    run = workdir(name)
    killed = launch(2, "stages", run, "pretrain", json.dumps(TRAIN), extra_env=kill, check=False)
    assert all(code == -9 for code, _, _ in killed), [r[2][-1500:] for r in killed]
    stage = os.path.join(run, "pretrain")
    assert not os.path.exists(os.path.join(stage, "COMPLETE.json"))
    resumed = launch(resume_in, "stages", run, "pretrain", json.dumps(TRAIN))
    out = resumed[0][1]
    assert "resuming from step 6" in out or "resuming from step 3" in out, out[-2000:]
    losses = _losses(stage)
    np.testing.assert_allclose([losses[s] for s in range(1, 9)],
                               [want[s] for s in range(1, 9)], rtol=2e-5)
    import jax
    for a, b in zip(jax.tree.leaves(_params(os.path.join(one, "pretrain", "checkpoints", "8"))),
                    jax.tree.leaves(_params(os.path.join(stage, "checkpoints", "8"))),
                    strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
