"""The training loop end to end on a tiny model, each run in a fresh subprocess.

The runs use 2 simulated CPU devices (mesh fsdp=2), not conftest's 8, and share one
persistent compilation cache, so only the first run pays for compiling the steps.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from phi_jax.train.metrics import read_metrics
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def run_stages(tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("jax_cache"))

  def run(workdir, stages, overrides=None, extra_env=None, check=True):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5", **(extra_env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "tests.phi_jax.train.driver", str(workdir), stages,
         json.dumps(overrides or {})], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=300)
    if check and proc.returncode:
      raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc

  return run


def _params(step_dir):
  from phi_jax import checkpoint
  config = checkpoint.read_config(step_dir)
  return config, checkpoint.load_params(step_dir, config)


def _curve(stage_dir):
  return [(r["kind"], r["step"], r.get("loss"), r.get("lr"), r.get("grad_norm"))
          for r in read_metrics(stage_dir)]


def test_killed_run_resumes_bit_identically(tmp_path, run_stages):
  run_stages(tmp_path / "straight", "pretrain")
  killed = run_stages(tmp_path / "killed", "pretrain",
                      extra_env={"PHI_JAX_TEST_KILL_AFTER_STEP": "7"}, check=False)
  assert killed.returncode == -9, killed.stderr[-2000:]
  stage = tmp_path / "killed" / "pretrain"
  assert not (stage / "COMPLETE.json").exists()
  resumed = run_stages(tmp_path / "killed", "pretrain")
  assert "resuming from step 6" in resumed.stdout or "resuming from step 3" in resumed.stdout
  _, want = _params(str(tmp_path / "straight" / "pretrain" / "checkpoints" / "12"))
  _, got = _params(str(stage / "checkpoints" / "12"))
  import jax
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
    assert np.array_equal(np.asarray(a), np.asarray(b))
  curve = _curve(str(tmp_path / "straight" / "pretrain"))
  # 12 steps, evaluations at 0 (the initial model), 6 and 12
  assert len([c for c in curve if c[0] == "train"]) == 12 and len(curve) == 15
  assert _curve(str(stage)) == curve
  assert os.listdir(tmp_path / "straight" / "pretrain" / "tensorboard")


def test_pretrain_learns_and_finetune_writes_a_model(tmp_path, run_stages):
  import phi_jax
  from phi_jax import checkpoint
  overrides = {"train.steps": 40, "train.checkpoint_every": 20, "train.eval_every": 20,
               "train.log_every": 10, "finetune.steps": 4, "finetune.checkpoint_every": 4,
               "finetune.eval_every": 0}
  proc = run_stages(tmp_path, "pretrain,finetune", overrides)
  summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
  assert [s["stage"] for s in summaries] == ["pretrain", "finetune"]
  rows = read_metrics(str(tmp_path / "pretrain"))
  train_losses = [r["loss"] for r in rows if r["kind"] == "train"]
  assert len(train_losses) == 40
  assert train_losses[-1] < 0.7 * train_losses[0], train_losses
  # the initial model is evaluated too: the curves' starting point
  assert [r["step"] for r in rows if r["kind"] == "eval"] == [0, 20, 40]
  assert summaries[0]["summary"]["steps"] == 40
  root = str(tmp_path / "finetune" / "checkpoints")
  assert checkpoint.steps(root) == [4]
  model = phi_jax.from_pretrained(root)
  assert model.config.d_model == 64 and model.tokenizer.vocab_size == 257
  metadata = checkpoint.read_metadata(root)
  assert metadata["step"] == 4 and metadata["run_config"]["finetune"]["steps"] == 4
  assert metadata["code_version"] and metadata["stage"] == "finetune"
  assert "pretrain" in metadata["source"]


def test_diverging_loss_stops_with_step_and_checkpoint(tmp_path, run_stages):
  proc = run_stages(tmp_path, "pretrain",
                    {"train.optimizer.lr": 1e30, "train.optimizer.warmup_steps": 0,
                     "train.checkpoint_every": 1, "train.log_every": 4}, check=False)
  assert proc.returncode != 0
  assert "TrainingDivergedError" in proc.stderr
  message = proc.stderr[proc.stderr.index("TrainingDivergedError"):]
  assert "at step " in message and "last good checkpoint is /" in message, message[:1000]
  assert not (tmp_path / "pretrain" / "COMPLETE.json").exists()


@pytest.mark.slow
def test_longer_pretrain_generalises(tmp_path, run_stages):
  overrides = {"train.steps": 300, "train.checkpoint_every": 100, "train.eval_every": 100,
               "train.log_every": 50, "train.eval_batches": 4, "train.batch_size": 8}
  run_stages(tmp_path, "pretrain", overrides)
  rows = read_metrics(str(tmp_path / "pretrain"))
  train = [r["loss"] for r in rows if r["kind"] == "train"]
  evals = [r["loss"] for r in rows if r["kind"] == "eval"]
  assert train[-1] < 0.55 * train[0], train
  assert len(evals) == 4 and evals[-1] < evals[1] < evals[0], evals  # steps 0, 100, 200, 300


def test_corrupt_latest_checkpoint_is_named_and_resumed_past_when_asked(tmp_path, run_stages):
  from tests.files import truncate_item_files
  killed = run_stages(tmp_path, "pretrain", extra_env={"PHI_JAX_TEST_KILL_AFTER_STEP": "10"},
                      check=False)
  assert killed.returncode == -9, killed.stderr[-2000:]
  root = tmp_path / "pretrain" / "checkpoints"
  steps = sorted(int(d) for d in os.listdir(root) if d.isdigit())  # saves end complete
  assert len(steps) >= 2, steps
  latest, older = steps[-1], steps[-2]
  truncate_item_files(str(root / str(latest) / "params"))
  failed = run_stages(tmp_path, "pretrain", check=False)
  assert failed.returncode != 0
  assert (f"corrupt checkpoint: step {latest}, item 'params'" in failed.stderr
          and f"the next older complete step is {older}" in failed.stderr
          and "on_corrupt_checkpoint='previous'" in failed.stderr), failed.stderr[-2000:]
  resumed = run_stages(tmp_path, "pretrain", {"train.on_corrupt_checkpoint": "previous"})
  assert f"resuming from step {older}" in resumed.stdout, resumed.stdout[-2000:]
  assert (root / "12").is_dir()


def test_finetune_extends_the_context(tmp_path, run_stages):
  """config.finetune.context: trains past the model's max_seq_len with linear RoPE scaling,
  and the checkpoints carry the new settings to the stages after it."""
  overrides = {"finetune.model": "random", "finetune.steps": 2, "finetune.checkpoint_every": 2,
               "finetune.eval_every": 0, "finetune.seq_len": 128,
               "finetune.optimizer.warmup_steps": 1, "finetune.context.max_seq_len": 256,
               "finetune.context.rope_scaling_type": "linear",
               "finetune.context.rope_scaling_factor": 4.0}
  run_stages(tmp_path, "finetune", overrides)  # the model's own max_seq_len is 64
  config, _ = _params(str(tmp_path / "finetune" / "checkpoints" / "2"))
  assert (config.max_seq_len, config.rope_scaling_type, config.rope_scaling_factor) == (
      256, "linear", 4.0)
  losses = [r["loss"] for r in read_metrics(str(tmp_path / "finetune")) if r["kind"] == "train"]
  assert len(losses) == 2 and np.all(np.isfinite(losses))
