"""The training stages' starting models (recipe/models.py, recipe/stages/init.py)."""

import numpy as np
import pytest

from configs import tiny
from phi_jax.cli import UsageError
from recipe import graph, models, runner
from recipe.stages import init as init_stage


def context(tmp_path, config=None):
  return runner.Context(config or tiny.get_config(), str(tmp_path), graph.build())


def test_starting_model_of_each_kind(tmp_path, hf_phi_dir):
  from phi_jax import checkpoint, tokenizer as tokenizer_lib
  from phi_jax.config import PhiConfig
  from tests.conftest import random_params
  config = tiny.get_config()
  config.model.update(dict(residual_dropout=0.05, vocab_size=320))
  config.init.tokenizer = "byte_level"
  ctx = context(tmp_path, config)
  field = "config.train.model"
  start = dict(model=ctx.settings.model, init_tokenizer=ctx.settings.init.tokenizer)
  model_config, tok, loader = init_stage.load_start(ctx, models.ModelRef("random"), field,
                                                    **start)
  assert model_config == PhiConfig.from_mapping(config.model) and loader is None
  assert tok.vocab_size == 257
  # A phi_jax checkpoint: its architecture and tokenizer, config.model's dropout.
  stored = PhiConfig(vocab_size=320, d_model=32, num_layers=1, num_heads=2, mlp_dim=64,
                     rotary_dim=8, max_seq_len=64, dtype="float32", residual_dropout=0.0)
  params = random_params(stored)
  root = str(tmp_path / "ckpt")
  checkpoint.save(root, 5, params, stored, tokenizer=tokenizer_lib.byte_level())
  ref = models.resolve(ctx, root, field, allow_random=True)
  model_config, tok, loader = init_stage.load_start(ctx, ref, field, **start)
  assert model_config.d_model == 32 and model_config.residual_dropout == 0.05
  assert tok.vocab_size == 257
  assert np.array_equal(np.asarray(loader()["embed"]), params["embed"])
  # A transformers dir without a tokenizer: config.init.tokenizer.
  directory, _ = hf_phi_dir()
  ref = models.resolve(ctx, directory, field, allow_random=True)
  model_config, tok, loader = init_stage.load_start(ctx, ref, field, **start)
  assert model_config.vocab_size == 101 and tok.vocab_size == 257
  with pytest.raises(runner.StageError, match="not a phi_jax checkpoint"):
    init_stage.load_start(ctx, models.ModelRef(str(tmp_path / "nothing")), field, **start)
  start["init_tokenizer"] = str(tmp_path / "missing" / "tokenizer.json")
  with pytest.raises(runner.StageError, match="config.init.tokenizer: tokenizer .*missing"):
    init_stage.load_start(ctx, models.ModelRef("random"), field, **start)
  start["init_tokenizer"] = "data"
  with pytest.raises(runner.StageError, match="run the data stage first"):
    init_stage.load_start(ctx, models.ModelRef("random"), field, **start)


def test_model_references(tmp_path):
  config = tiny.get_config()
  ctx = context(tmp_path, config)
  assert models.resolve(ctx, "random", "f", allow_random=True).is_random
  with pytest.raises(UsageError, match="only init and the training stages"):
    models.resolve(ctx, "random", "config.eval.model")
  with pytest.raises(UsageError, match="no model stage"):
    models.resolve(ctx, "", "config.eval.model")
  pinned = models.resolve(ctx, "pretrain:24000", "config.finetune.model")
  assert pinned.node == "pretrain" and pinned.step == 24000
  assert pinned.spec == str(tmp_path / "pretrain" / "checkpoints" / "24000")
  with pytest.raises(UsageError, match="must be a number"):
    models.resolve(ctx, "pretrain:last", "config.finetune.model")
  with pytest.raises(UsageError, match="makes no model"):
    models.resolve(ctx, "sample", "config.eval.model")
  assert models.resolve(ctx, "microsoft/phi-1", "f") == models.ModelRef("microsoft/phi-1")
  # '' is the latest model stage selected in this run (or complete in the workdir)
  ctx.selected = ["init", "pretrain"]
  latest = models.resolve(ctx, "", "config.eval.model", before="eval")
  assert latest.node == "pretrain"
  assert models.resolve(ctx, "", "f", before="pretrain").node == "init"


def test_training_stages_declare_their_inputs(tmp_path):
  config = tiny.get_config()
  ctx = context(tmp_path, config)
  g = ctx.graph
  assert g["pretrain"].expensive and g["pretrain"].produces_model
  assert g["pretrain"].upstream(ctx) == ["data", "init"]
  assert g["finetune"].upstream(ctx) == ["data", "pretrain"]
  config.finetune.model = "/some/model"
  config.finetune.data = ("/some/built/dataset",)
  assert g["finetune"].upstream(ctx) == []
  # the plan of a pretrain alone names what is missing
  with pytest.raises(runner.StageError, match="run the data stage first"):
    runner.make_plan(ctx, ["pretrain"])


def test_bad_training_values_are_refused_before_any_work(tmp_path):
  config = tiny.get_config()
  config.train.steps = -5
  with pytest.raises(UsageError, match=r"config.train.steps = -5: must be an integer >= 1"):
    context(tmp_path, config)
  config.train.steps = 10
  with pytest.raises(UsageError, match=r"config.train.optimizer.warmup_steps = 20: must be "
                     r"below config.train.steps \(10\)"):
    context(tmp_path, config)
  assert not list(tmp_path.iterdir())  # nothing was written


def test_bad_context_settings_are_refused_before_any_work(tmp_path):
  config = tiny.get_config()
  config.finetune.context.rope_scaling_type = "ntk"
  with pytest.raises(UsageError, match=r"config.finetune.context.rope_scaling_type = 'ntk'"):
    runner.make_plan(context(tmp_path, config), ["data", "init", "pretrain", "finetune"])
