"""The stage framework: completion markers, skipping, reruns, and refusing to clobber."""

import json
import os

import pytest

from configs import tiny
from phi_jax import atomic
from phi_jax.stages import base


class CountingStage(base.Stage):
  name = "count"
  config_sections = ("seed",)

  def __init__(self, expensive=False, fail=False):
    self.expensive = expensive
    self.fail = fail
    self.calls = 0

  def run(self, ctx):
    self.calls += 1
    with open(os.path.join(ctx.stage_dir(self.name), "out.txt"), "w") as f:
      f.write(str(ctx.config.seed))
    if self.fail:
      raise RuntimeError("boom")
    return {"seed": ctx.config.seed}


def test_complete_stage_is_skipped_until_inputs_change(tmp_path):
  config = tiny.get_config()
  ctx = base.Context(config, str(tmp_path))
  stage = CountingStage()
  first = base.run_stage(stage, ctx)
  assert stage.calls == 1 and first["summary"] == {"seed": 0}
  assert json.load(open(tmp_path / "count" / base.COMPLETE))["fingerprint"] == first["fingerprint"]
  base.run_stage(stage, ctx)
  assert stage.calls == 1  # skipped
  config.seed = 1
  second = base.run_stage(stage, ctx)
  assert stage.calls == 2 and second["fingerprint"] != first["fingerprint"]
  base.run_stage(stage, ctx, force=True)
  assert stage.calls == 3


def test_expensive_stage_with_changed_inputs_is_refused(tmp_path):
  config = tiny.get_config()
  ctx = base.Context(config, str(tmp_path))
  stage = CountingStage(expensive=True)
  base.run_stage(stage, ctx)
  config.seed = 5
  with pytest.raises(base.StageError, match="--force=count"):
    base.run_stage(stage, ctx)
  base.run_stage(stage, ctx, force=True)
  assert stage.calls == 2


def test_failed_stage_leaves_no_marker(tmp_path):
  ctx = base.Context(tiny.get_config(), str(tmp_path))
  base.run_stage(CountingStage(), ctx)
  config = tiny.get_config()
  config.seed = 3
  ctx = base.Context(config, str(tmp_path))
  with pytest.raises(RuntimeError, match="boom"):
    base.run_stage(CountingStage(fail=True), ctx)
  assert ctx.marker("count") is None  # the old marker is gone: the output is not complete


def test_model_checkpoint_needs_a_producing_stage(tmp_path):
  ctx = base.Context(tiny.get_config(), str(tmp_path))
  with pytest.raises(base.StageError, match="no model checkpoint"):
    ctx.model_checkpoint()
  assert ctx.model_checkpoint("/some/ckpt") == ("/some/ckpt", None)
  os.makedirs(tmp_path / "init")
  atomic.write_json({"fingerprint": "x"}, str(tmp_path / "init" / base.COMPLETE))
  assert ctx.model_checkpoint() == (str(tmp_path / "init" / "checkpoints"), "init")


def test_atomic_json_leaves_no_temp_files(tmp_path):
  path = str(tmp_path / "a" / "x.json")
  atomic.write_json({"k": 1}, path)
  atomic.write_json({"k": 2}, path)
  assert json.load(open(path)) == {"k": 2}
  assert os.listdir(tmp_path / "a") == ["x.json"]
