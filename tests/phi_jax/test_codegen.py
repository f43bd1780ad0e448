"""CodeGen (transformers' CodeGenForCausalLM) in phi_jax: import, logit parity, greedy
decoding, the Orbax round trip and the export back to transformers."""

import os

import numpy as np
import pytest
import torch
import transformers

import phi_jax
from phi_jax import checkpoint, convert, hf_convert
from phi_jax.config import ConfigError, PhiConfig
from phi_jax.pretrained import init_model, params_of
from tests.conftest import hf_logits, left_pad_positions, make_hf_codegen, phi_logits

ATOL = 1e-4

# Small random CodeGen configs (transformers field names). Every head count is a
# multiple of 4, the blocks of CodeGen's fused qkv_proj (its mp_num).
CONFIGS = {
    # 4 heads of 16 dims, the first 8 rotated (rotary_dim < head_dim, as codegen-350M's
    # 32 of 64)
    "partial_rotary": {},
    # 8 heads of 16 dims, all rotated; 3 layers; erf gelu
    "full_rotary": dict(n_embd=128, n_head=8, rotary_dim=16, n_layer=3,
                        activation_function="gelu"),
    # 12 heads of 8 dims, 4 rotated; MLP 4 * n_embd (n_inner None)
    "many_heads": dict(n_embd=96, n_head=12, rotary_dim=4, n_inner=None,
                       layer_norm_epsilon=1e-6),
}


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def codegen(request, tmp_path_factory):
  """(directory, torch model) of a random transformers CodeGen with its tokenizer."""
  directory = str(tmp_path_factory.mktemp("codegen") / request.param)
  return directory, make_hf_codegen(directory, seed=len(request.param), **CONFIGS[request.param])


@pytest.fixture(scope="module")
def partial_rotary(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("codegen") / "hf")
  return directory, make_hf_codegen(directory)


def _tokens(hf, shape=(2, 13), seed=0):
  return np.random.RandomState(seed).randint(0, hf.config.vocab_size, shape)


def test_codegen_logits_equal_transformers(codegen):
  directory, hf = codegen
  model = phi_jax.from_pretrained(directory, dtype="float32")
  c = model.config
  assert (c.architecture, c.attention_bias) == ("codegen", False)
  assert (c.d_model, c.num_heads, c.rotary_dim, c.num_layers, c.mlp_dim) == (
      hf.config.n_embd, hf.config.n_head, hf.config.rotary_dim, hf.config.n_layer,
      hf.config.n_inner or 4 * hf.config.n_embd)
  assert "codegen architecture" in repr(model)
  tokens = _tokens(hf)
  want = hf_logits(hf, tokens)
  np.testing.assert_allclose(phi_logits(model, tokens), want, atol=ATOL, rtol=0)
  # the same with the layers unrolled, and every parameter count as transformers'
  unrolled = phi_jax.from_pretrained(directory, dtype="float32", scan_layers=False)
  np.testing.assert_allclose(phi_logits(unrolled, tokens), want, atol=ATOL, rtol=0)
  assert phi_jax.count_params(c) == sum(p.numel() for p in hf.parameters())


def test_codegen_left_padding_matches_transformers(partial_rotary):
  directory, hf = partial_rotary
  model = phi_jax.from_pretrained(directory, dtype="float32")
  tokens = _tokens(hf, (3, 9), seed=1)
  mask = np.ones_like(tokens)
  mask[0, :4] = 0
  mask[2, :1] = 0
  want = hf_logits(hf, tokens, attention_mask=mask, position_ids=left_pad_positions(mask))
  got = phi_logits(model, tokens, attention_mask=mask)
  real = mask.astype(bool)
  np.testing.assert_allclose(got[real], want[real], atol=ATOL, rtol=0)


def test_the_rotary_reorder_and_the_qkv_split_are_needed(partial_rotary, monkeypatch):
  """Without the reorder of the rotary pairs, or with q/k/v taken in another order
  than CodeGen's q, v, k, the logits are far off: the parity test checks both."""
  directory, hf = partial_rotary
  tokens = _tokens(hf)
  want = hf_logits(hf, tokens)
  monkeypatch.setattr(hf_convert, "rotary_half_order",
                      lambda c: np.arange(c.head_dim, dtype=np.int64))
  got = phi_logits(phi_jax.from_pretrained(directory, dtype="float32"), tokens)
  assert np.abs(got - want).max() > 100 * ATOL
  monkeypatch.undo()
  monkeypatch.setattr(hf_convert, "_CODEGEN_PARTS", ("q_proj", "k_proj", "v_proj"))
  got = phi_logits(phi_jax.from_pretrained(directory, dtype="float32"), tokens)
  assert np.abs(got - want).max() > 100 * ATOL


def test_codegen_greedy_decoding_equals_transformers(partial_rotary):
  directory, hf = partial_rotary
  model = phi_jax.from_pretrained(directory, dtype="float32")
  assert model.tokenizer is not None and model.tokenizer.vocab_size == 300
  prompt = "def add(a, b):\n"
  ids = model.tokenizer.encode(prompt)
  [out] = phi_jax.generate(model, [prompt], max_new_tokens=12, eos_token_id=None)
  with torch.no_grad():
    want = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                       do_sample=False, max_new_tokens=12, min_new_tokens=12,
                       eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
  # ids past the tokenizer's 300 are never sampled by phi_jax; the random model's
  # argmax stays below them for this prompt, as transformers' does
  assert max(want) < 300
  assert out.tokens == want
  assert out.text == model.tokenizer.decode(want)


def test_codegen_round_trips_through_orbax_and_back_to_transformers(partial_rotary, tmp_path):
  directory, hf = partial_rotary
  root = convert.hf_to_orbax(directory, str(tmp_path / "ckpt"))
  config = checkpoint.read_config(root)
  assert config.architecture == "codegen" and not config.attention_bias
  model = phi_jax.from_pretrained(root, dtype="float32")
  assert "bias" not in params_of(model)["blocks"]["attn"]["q_proj"]
  tokens = _tokens(hf)
  want = hf_logits(hf, tokens)
  np.testing.assert_allclose(phi_logits(model, tokens), want, atol=ATOL, rtol=0)
  out = convert.orbax_to_hf(root, str(tmp_path / "export"))
  exported = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  assert type(exported).__name__ == "CodeGenForCausalLM"
  original = hf.state_dict()
  for name, tensor in exported.state_dict().items():  # bit for bit: a permutation
    np.testing.assert_array_equal(tensor.numpy(), original[name].numpy(), err_msg=name)
  tokenizer = transformers.AutoTokenizer.from_pretrained(out)
  assert tokenizer.encode("def f(x):") == model.tokenizer.encode("def f(x):")


def test_codegen_configs_that_cannot_hold_are_refused():
  with pytest.raises(ConfigError, match="attention_bias"):
    PhiConfig(architecture="codegen")
  with pytest.raises(ConfigError, match="num_heads.*divisible by 4"):
    PhiConfig(d_model=96, num_heads=6, rotary_dim=8, architecture="codegen",
              attention_bias=False)
  with pytest.raises(ConfigError, match="architecture"):
    PhiConfig(architecture="gptj")
  hf = make_hf_codegen().config.to_dict()
  with pytest.raises(ConfigError, match="tie_word_embeddings"):
    hf_convert.config_from_hf({**hf, "tie_word_embeddings": True})
  with pytest.raises(ConfigError, match="activation_function"):
    hf_convert.config_from_hf({**hf, "activation_function": "relu"})
  config = hf_convert.config_from_hf(hf)
  with pytest.raises(ConfigError, match="rope_base 10000"):
    hf_convert.config_to_hf(config.replace(rope_base=1e6))


def test_a_random_codegen_config_exports_for_transformers(tmp_path):
  """`config.model.architecture = 'codegen'` trains a model transformers loads as
  CodeGen, with the same logits."""
  config = PhiConfig(vocab_size=64, d_model=32, num_layers=1, num_heads=4, mlp_dim=64,
                     rotary_dim=4, max_seq_len=64, dtype="float32", architecture="codegen",
                     attention_bias=False)
  model = init_model(config, seed=1)
  out = convert.export_hf(params_of(model), config, str(tmp_path / "hf"))
  assert sorted(os.listdir(out)) == ["config.json", "generation_config.json",
                                     "model.safetensors"]
  hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  tokens = np.random.RandomState(0).randint(0, 64, (2, 7))
  np.testing.assert_allclose(phi_logits(model, tokens), hf_logits(hf, tokens), atol=ATOL,
                             rtol=0)


def test_a_codegen_config_without_its_shape_names_the_missing_field():
  hf = make_hf_codegen().config.to_dict()
  del hf["n_head"]
  with pytest.raises(ConfigError, match="missing field 'n_head'"):
    hf_convert.config_from_hf(hf)
