"""Tests of phi_jax.pretrained's choice of compute dtype and of count_params' inputs."""

import json
import os

import jax
import numpy as np
import pytest

import configs.phi1
import configs.phi1_small
import configs.tiny
import phi_jax
from phi_jax import checkpoint, pretrained
from phi_jax.config import ConfigError, PhiConfig
from phi_jax.model import count_params
from tests.conftest import hf_logits, make_hf_phi, random_model


def _with_stored_dtype(directory, dtype):
  """Rewrites a transformers config.json to record `dtype` (as transformers 5 does)."""
  path = os.path.join(directory, "config.json")
  with open(path) as f:
    hf = json.load(f)
  hf.pop("torch_dtype", None)
  hf["dtype"] = dtype
  with open(path, "w") as f:
    json.dump(hf, f)


@pytest.mark.parametrize("stored", ["bfloat16", "float16", "float32", None])
def test_default_compute_dtype_rules(stored):
  assert pretrained.default_compute_dtype(stored, "cpu")[0] == "float32"
  for platform in ("gpu", "tpu"):
    dtype, why = pretrained.default_compute_dtype(stored, platform)
    assert dtype == (stored or "bfloat16")
    assert platform.upper() in why


def test_hf_checkpoint_computes_in_fp32_on_cpu_and_matches_transformers(tmp_path):
  directory = str(tmp_path / "hf")
  hf = make_hf_phi(directory, initializer_range=0.1)
  _with_stored_dtype(directory, "bfloat16")  # what the checkpoint was saved in
  assert pretrained.hf_stored_dtype(directory) == "bfloat16"
  assert jax.default_backend() == "cpu"
  model = phi_jax.from_pretrained(directory)
  assert model.config.dtype == "float32"
  assert "compute dtype float32 (float32 on CPU)" in repr(model) == str(model)
  tokens = np.random.RandomState(0).randint(0, 101, (2, 9)).astype(np.int32)
  # fp32 on CPU: the logits equal transformers' fp32 ones (bf16 would differ by ~1e-2)
  np.testing.assert_allclose(np.asarray(model(tokens)), hf_logits(hf, tokens), atol=1e-4)


def test_requested_dtype_wins_and_is_said(tmp_path):
  directory = str(tmp_path / "hf")
  make_hf_phi(directory)
  model = phi_jax.from_pretrained(directory, dtype="bfloat16")
  assert model.config.dtype == "bfloat16"
  assert "compute dtype bfloat16 (requested)" in repr(model)


def test_orbax_checkpoint_dtype_on_cpu_and_on_accelerators(tmp_path, monkeypatch):
  config = PhiConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, mlp_dim=64,
                     rotary_dim=4, max_seq_len=32, dtype="bfloat16")
  root = str(tmp_path / "ckpt")
  checkpoint.save(root, 0, pretrained.params_of(random_model(config)), config)
  assert phi_jax.from_pretrained(root).config.dtype == "float32"
  # On an accelerator the checkpoint's own training dtype is kept.
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  model = phi_jax.from_pretrained(root)
  assert model.config.dtype == "bfloat16"
  assert "(the checkpoint's, on GPU)" in repr(model)


@pytest.mark.parametrize("module, expected", [
    (configs.phi1, 1_418_270_720), (configs.phi1_small, 356_794_368)])
def test_count_params_accepts_run_config_and_model_section(module, expected):
  config = module.get_config()
  assert count_params(config) == expected
  assert count_params(config.model) == expected
  assert count_params(PhiConfig.from_mapping(config.model)) == expected
  assert phi_jax.count_params(dict(config.model)) == expected


def test_count_params_of_tiny_equals_its_model():
  config = configs.tiny.get_config()
  model = random_model(PhiConfig.from_mapping(config.model))
  n = sum(leaf.size for leaf in jax.tree.leaves(pretrained.params_of(model)))
  assert count_params(config) == n
  assert f"{n:,} parameters" in repr(model)


def test_count_params_rejects_unknown_fields_and_types():
  with pytest.raises(ConfigError, match="num_layerz"):
    count_params({"num_layerz": 2})
  with pytest.raises(TypeError, match="PhiConfig, a run config"):
    count_params(3)
