"""The run configs: they load, validate, document every field, and size the models as
the paper does."""

import os
import re

import ml_collections
import pytest

from recipe import settings as run_settings

from configs import base, long_context, phi1, phi1_small, tiny
from phi_jax import PhiConfig, count_params
from phi_jax.config import ConfigError, with_context
from recipe import graph
from tests.conftest import REPO_ROOT

CONFIGS = {"phi1": phi1, "phi1_small": phi1_small, "tiny": tiny, "long_context": long_context}


def _leaves(config, prefix=()):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, prefix + (key,))
    else:
      yield prefix + (key,)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_loads_and_validates(name):
  config = CONFIGS[name].get_config()
  model = PhiConfig.from_mapping(config.model)
  assert model.head_dim == 64  # every phi size uses 64-dim heads
  assert set(base.get_config().model.keys()) == set(config.model.keys())
  run_settings.resolve(config)  # every section passes its schema
  stage_names = graph.build().stage_names()
  for stage in config.stages:
    assert stage in stage_names
  # every field a size file sets exists in the base config (no silent new fields)
  assert set(_leaves(config)) == set(_leaves(base.get_config()))


def test_paper_parameter_counts():
  # phi-1: 1.3B, reported by transformers for microsoft/phi-1 as 1,418,270,720.
  assert count_params(PhiConfig.from_mapping(phi1.get_config().model)) == 1_418_270_720
  small = count_params(PhiConfig.from_mapping(phi1_small.get_config().model))
  assert small == 356_794_368 and abs(small - 350e6) / 350e6 < 0.03  # "350M"
  assert 1e6 < count_params(PhiConfig.from_mapping(tiny.get_config().model)) < 10e6


def test_paper_architecture_facts():
  c = PhiConfig.from_mapping(phi1.get_config().model)
  assert (c.num_layers, c.d_model, c.mlp_dim, c.num_heads, c.head_dim) == (24, 2048, 8192, 32, 64)
  assert (c.rotary_dim, c.rope_base, c.activation, c.layer_norm_eps) == (32, 10000.0, "gelu_tanh", 1e-5)
  assert (c.attention_dropout, c.residual_dropout, c.max_seq_len) == (0.1, 0.1, 2048)
  s = PhiConfig.from_mapping(phi1_small.get_config().model)
  assert (s.num_layers, s.d_model, s.mlp_dim, s.num_heads) == (20, 1024, 4096, 16)


def test_model_defaults_are_phi_config_and_the_paper():
  """config.model is built from PhiConfig's defaults (one definition): the paper's."""
  import dataclasses
  assert base.get_config().model.to_dict() == dataclasses.asdict(PhiConfig())
  assert count_params(PhiConfig()) == 1_418_270_720
  c = PhiConfig()
  assert (c.attention_dropout, c.residual_dropout, c.attention) == (0.1, 0.1, "auto")


def test_every_field_is_documented_once_in_its_schema():
  """Each leaf of the base config is a field of its section's schema, with its kind and
  its documentation there (a `setting` doc, or the schema docstring's Attributes)."""
  import dataclasses
  from phi_jax import settings
  from recipe.settings import describe_config
  described = describe_config(base.get_config())
  for path in _leaves(base.get_config()):
    dotted = ".".join(path)
    assert f"config.{dotted} = " in described, f"config.{dotted} has no schema field"
  for schema in list(base.SECTIONS.values()) + [settings.RunSettings]:
    for field in dataclasses.fields(schema):
      doc = field.metadata.get("doc") or ""
      in_docstring = re.search(rf"\b{field.name}\b", schema.__doc__ or "")
      assert doc or in_docstring, f"{schema.__name__}.{field.name} is not documented"


def test_long_context_finetunes_phi1_to_four_times_its_context():
  config = long_context.get_config()
  pretrained = PhiConfig.from_mapping(config.model)  # what phi-1-base was trained as
  extended = with_context(pretrained, config.finetune.context, "config.finetune.context")
  assert (pretrained.max_seq_len, extended.max_seq_len) == (2048, 8192)
  assert (extended.rope_scaling_type, extended.rope_scaling_factor) == ("linear", 4.0)
  assert extended.rope_position_scale == 0.25
  assert config.finetune.seq_len == extended.max_seq_len
  assert extended.replace(rope_scaling_type="none", rope_scaling_factor=1.0,
                          max_seq_len=2048) == pretrained  # nothing else changes
  assert config.finetune.model == long_context.FROM_MODEL


def test_context_settings_keep_what_is_not_set():
  model = PhiConfig(rope_scaling_type="linear", rope_scaling_factor=2.0, max_seq_len=4096)
  unset = base.get_config().finetune.context
  assert with_context(model, unset) == model
  assert with_context(model, dict(rope_base=1e6)).rope_base == 1e6
  # 'none' without a factor drops the model's scaling
  plain = with_context(model, dict(rope_scaling_type="none"))
  assert (plain.rope_scaling_type, plain.rope_scaling_factor) == ("none", 1.0)
  with pytest.raises(ConfigError, match="config.finetune.context.*rope_scaling_type"):
    with_context(model, dict(rope_scaling_type="ntk"), "config.finetune.context")
  with pytest.raises(ConfigError, match=r"unknown field\(s\) \['rotary_dim'\]"):
    with_context(model, dict(rotary_dim=16))


# ------------------------------------------------------------ fidelity to the paper
def test_paper_optimizer_and_schedule_values():
  """§2.3: pretraining lr 1e-3, warmup 750, wd 0.1, batch 1024, 36k steps; finetuning
  lr 1e-4, warmup 50, wd 0.01, batch 256, 6k steps."""
  for module in (phi1, phi1_small):
    config = module.get_config()
    train, finetune = config.train, config.finetune
    assert (train.steps, train.batch_size, train.seq_len) == (36000, 1024, 2048)
    assert (train.optimizer.lr, train.optimizer.warmup_steps) == (1e-3, 750)
    assert train.optimizer.weight_decay == 0.1
    assert (finetune.steps, finetune.batch_size) == (6000, 256)
    assert (finetune.optimizer.lr, finetune.optimizer.warmup_steps) == (1e-4, 50)
    assert finetune.optimizer.weight_decay == 0.01
    assert config.model.attention_dropout == config.model.residual_dropout == 0.1


def test_phi1_base_is_the_kept_24k_step_and_finetuning_starts_there():
  from recipe import runner
  from recipe.stages import training
  for module in (phi1,):
    config = module.get_config()
    assert 24000 in config.train.keep_steps
    ctx = runner.Context(config, "/nonexistent/workdir", graph.build())
    assert 24000 in ctx.settings.train.kept_steps()  # despite keep_checkpoints=3
    assert config.finetune.model == "pretrain:24000"
    ctx = runner.Context(config, "/nonexistent/workdir", graph.build())
    ref = training.start_ref(ctx, "finetune", "finetune")
    assert (ref.node, ref.step) == ("pretrain", 24000)
    assert ref.spec.endswith(os.path.join("pretrain", "checkpoints", "24000"))
    training.validate(ctx, "finetune")
    # a start at a step pretraining would delete is refused before anything runs
    config.train.keep_steps = ()
    with pytest.raises(Exception, match="keep_steps"):
      training.validate(ctx, "finetune")


def test_phi1_small_finetunes_from_its_last_pretraining_step():
  """The paper states no budget or base checkpoint for phi-1-small: a choice, 36k steps
  and finetuning from the last (configs/phi1_small.py)."""
  from recipe import runner
  from recipe.stages import training
  config = phi1_small.get_config()
  assert config.train.keep_steps == () and config.finetune.model == "pretrain"
  ctx = runner.Context(config, "/nonexistent/workdir", graph.build())
  ref = training.start_ref(ctx, "finetune", "finetune")
  assert ref.node == "pretrain" and ref.step in (None, 36000)


def test_phi1_finetune_loss_is_the_papers_plain_next_token_loss():
  for module in (phi1, phi1_small):
    assert module.get_config().finetune.loss_on_solution_only is False
    assert module.get_config().train.loss_on_solution_only is False


def test_unstated_values_are_marked_as_choices():
  """Every optimizer value the paper does not state says 'A choice' in its schema doc."""
  import dataclasses
  from phi_jax.train.settings import OptimizerSettings
  docs = {f.name: f.metadata["doc"] for f in dataclasses.fields(OptimizerSettings)}
  for field in ("end_lr", "b1", "b2", "eps", "grad_clip"):
    assert "A choice" in docs[field], field
  with open(os.path.join(REPO_ROOT, "configs", "phi1.py")) as f:
    phi1_text = f.read()
  assert "bf16" in phi1_text and "choice" in phi1_text and "StackOverflow" in phi1_text


def test_phi1_embeds_with_the_papers_codegen_350m():
  """§2.1: the quality classifier is a random forest on CodeGen-350M embeddings; the
  embedding decontamination takes the same embedder."""
  from recipe.settings import resolve
  config = phi1.get_config()
  assert config.data.quality.embed_model == "Salesforce/codegen-350M-mono"
  with open(os.path.join(REPO_ROOT, "configs", "phi1.py")) as f:
    assert "§2.1" in f.read()
  assert resolve(config).sections["decontaminate"].embed_model == (
      "Salesforce/codegen-350M-mono")


def test_phi1_trains_on_unpruned_data_and_sweeps_phi1_base():
  """§5: phi-1 trained on its data as it was (the decontamination an analysis); Table 1
  reports phi-1-base (the 24k-step checkpoint) beside phi-1."""
  from recipe import runner
  config = phi1.get_config()
  assert config.decontaminate.prune is False
  assert "pretrain:24000" in config.eval.checkpoints and "finetune:*" in config.eval.checkpoints
  ctx = runner.Context(config, "/nonexistent/workdir", graph.build())
  for name in ("tokenizer", "datasets"):
    assert "decontaminate" not in ctx.graph[name].upstream(ctx)
  config.decontaminate.prune = True
  ctx = runner.Context(config, "/nonexistent/workdir", graph.build())
  assert "decontaminate" in ctx.graph["datasets"].upstream(ctx)
  config.decontaminate.prune_datasets = ("phi1_codex",)
  with pytest.raises(Exception, match="prune_datasets.*phi1_codex"):
    runner.Context(config, "/nonexistent/workdir", graph.build())
