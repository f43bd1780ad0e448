"""attention='auto': the measured choices per device kind and situation, the defaults."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from phi_jax import attention, attention_choices, target
from phi_jax.model import PhiForCausalLM
from phi_jax.config import PhiConfig
from flax import nnx

H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture
def table(tmp_path, monkeypatch):
  path = str(tmp_path / "choices.json")
  monkeypatch.setattr(attention_choices, "CHOICES_FILE", path)
  monkeypatch.setattr(attention_choices.choose, "__defaults__", (path,))
  monkeypatch.setattr(attention_choices.tiles, "__defaults__", (path,))
  attention_choices._table.cache_clear()  # pylint: disable=protected-access
  yield path
  attention_choices._table.cache_clear()  # pylint: disable=protected-access


def test_the_fastest_measured_is_chosen_where_allowed_else_the_default(table):
  assert attention_choices.record(H100, "train", {"pallas": 4.0, "cudnn": 2.0, "xla": 9.0},
                                  "b8", path=table) == "cudnn"
  assert attention_choices.record(H100, "prefill", {"pallas": 1.0, "cudnn": 1.5},
                                  "b8", path=table) == "pallas"
  assert attention_choices.choose("gpu", H100, "train") == "cudnn"
  assert attention_choices.choose("gpu", H100, "prefill") == "pallas"
  # never measured: the backend's default
  assert attention_choices.choose("gpu", H100, "train_dropout") == "pallas"
  assert attention_choices.choose("gpu", "NVIDIA A100-SXM4-40GB", "train") == "pallas"
  assert attention_choices.choose("tpu", "TPU v5p", "train") == "pallas"
  assert attention_choices.choose("cpu", "cpu", "train") == "xla"
  attention_choices.record("cpu", "train", {"pallas": 1.0, "xla": 2.0}, "b1", path=table)
  assert attention_choices.choose("cpu", "cpu", "train") == "xla"  # interpret mode: ignored
  # a table naming cuDNN where it cannot run (dropout) is not followed
  data = json.load(open(table))
  data["devices"][H100]["train_dropout"] = {"implementation": "cudnn"}
  json.dump(data, open(table, "w"))
  attention_choices._table.cache_clear()  # pylint: disable=protected-access
  assert attention_choices.choose("gpu", H100, "train_dropout") == "pallas"
  with pytest.raises(ValueError, match="situation"):
    attention_choices.choose("gpu", H100, "sampling")


def test_a_malformed_table_is_named(table):
  json.dump({"devices": {H100: {"train": {"implementation": "flash9"}}}}, open(table, "w"))
  with pytest.raises(ValueError, match=r"choices.json: devices\['NVIDIA H100.*'train'"):
    attention_choices.choose("gpu", H100, "train")


def test_the_repositorys_table_loads():
  attention_choices._table.cache_clear()  # pylint: disable=protected-access
  data = attention_choices._table(attention_choices.CHOICES_FILE)  # pylint: disable=protected-access
  assert "devices" in data


def test_resolve_uses_the_traced_for_device_kind(table):
  attention_choices.record(H100, "train", {"pallas": 4.0, "cudnn": 2.0}, "b8", path=table)
  with target.compiling_for("gpu", H100):
    assert attention.resolve_implementation("auto", situation="train") == "cudnn"
    assert attention.resolve_implementation("auto", situation="train_dropout") == "pallas"
    assert attention.resolve_implementation("xla", situation="train") == "xla"
  with target.compiling_for("gpu", "NVIDIA H200"):
    assert attention.resolve_implementation("auto", situation="train") == "pallas"


def test_tuned_tiles_are_looked_up_per_head_dim_length_and_dropout(table):
  attention_choices.record_tiles(H100, 64, 2048, 128, 64, {"128x64": 1.0, "64x64": 1.2},
                                 dropout=True, path=table)
  assert attention_choices.tiles(H100, 64, 2048, True) == (128, 64)
  assert attention_choices.tiles(H100, 64, 2048, False) is None
  assert attention_choices.tiles(H100, 64, 1024, True) is None
  assert attention_choices.tiles("NVIDIA H200", 64, 2048, True) is None


@pytest.mark.slow
def test_the_model_asks_for_its_situation(monkeypatch):
  """Training with attention dropout, without, and a prefill each ask 'auto' for their
  own situation."""
  seen = []
  real = attention_choices.choose
  monkeypatch.setattr(attention_choices, "choose",
                      lambda backend, kind, situation: seen.append(situation) or
                      real(backend, kind, situation))
  config = PhiConfig(vocab_size=64, d_model=16, num_layers=1, num_heads=2, mlp_dim=32,
                     rotary_dim=4, max_seq_len=16, dtype="float32", attention_dropout=0.1)
  model = PhiForCausalLM(config, rngs=nnx.Rngs(0))
  tokens = jnp.asarray(np.arange(8)[None], jnp.int32)
  cache = model.init_cache(1, 16)
  jax.eval_shape(lambda: model(tokens, dropout_rng=jax.random.key(0)))  # traced, not run
  assert seen[-1] == "train_dropout"
  jax.eval_shape(lambda: model(tokens))
  assert seen[-1] == "train"
  jax.eval_shape(lambda: model.prefill(tokens, cache))
  assert seen[-1] == "prefill"
