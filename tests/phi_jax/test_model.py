"""Tests of phi_jax.model (and phi_jax.config) against transformers and closed forms."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import phi_jax
from phi_jax import hf_convert, sharding
from phi_jax.config import ConfigError, PhiConfig
from phi_jax.model import abstract_params, count_params, dropout
from phi_jax.pretrained import init_model, model_from_params, params_of
from tests.conftest import (hf_logits, left_pad_positions, make_hf_phi, phi_logits,
                            random_model)

# Larger than transformers' default 0.02, so attention is far from uniform and the
# rotary embedding changes the logits by much more than the parity tolerance.
INIT = 0.1
ATOL = 1e-4


def small_config(**changes) -> PhiConfig:
  fields = dict(vocab_size=128, d_model=32, num_layers=2, num_heads=4, mlp_dim=64,
                rotary_dim=4, max_seq_len=64, dtype="float32", initializer_range=INIT)
  fields.update(changes)
  return PhiConfig(**fields)


def random_tokens(shape, vocab, seed=0):
  return np.random.RandomState(seed).randint(0, vocab, shape).astype(np.int32)


def padded_batch(vocab, length=12, seed=0):
  """Random tokens and a mask: unpadded, two left-padded rows and a right-padded row."""
  tokens = random_tokens((4, length), vocab, seed)  # pad slots hold junk tokens
  mask = np.ones((4, length), np.int32)
  mask[1, :3] = 0
  mask[2, :length - 2] = 0  # only two real tokens
  mask[3, -4:] = 0
  return tokens, mask


# ---------------------------------------------------------------------- parity

PARITY_CONFIGS = {
    "h2-rot0.25-v101-gelu_new": dict(num_attention_heads=2, partial_rotary_factor=0.25,
                                     vocab_size=101, hidden_act="gelu_new"),
    "h4-rot0.5-v256-gelu-3layers": dict(num_attention_heads=4, partial_rotary_factor=0.5,
                                        vocab_size=256, hidden_act="gelu", num_hidden_layers=3,
                                        rope_theta=500.0, layer_norm_eps=1e-3),
    "h8-rot1.0-v1000-gelu_new-1layer": dict(num_attention_heads=8, partial_rotary_factor=1.0,
                                            vocab_size=1000, hidden_act="gelu_new",
                                            num_hidden_layers=1, hidden_size=32,
                                            intermediate_size=96),
}


@pytest.mark.parametrize("overrides", PARITY_CONFIGS.values(), ids=PARITY_CONFIGS.keys())
def test_logits_match_transformers(hf_phi_dir, overrides):
  directory, hf = hf_phi_dir(initializer_range=INIT, **overrides)
  model = phi_jax.from_pretrained(directory, dtype="float32")
  config = model.config
  hf_config = hf.config
  assert config.num_heads == hf_config.num_attention_heads
  assert config.rotary_dim == int(config.head_dim * overrides["partial_rotary_factor"])
  assert config.activation == {"gelu_new": "gelu_tanh", "gelu": "gelu"}[overrides["hidden_act"]]

  tokens, mask = padded_batch(config.vocab_size)

  # No padding.
  want = hf_logits(hf, tokens)
  got = phi_logits(model, tokens)
  assert got.dtype == np.float32 and got.shape == want.shape
  assert want.std() > 100 * ATOL  # the comparison below is not trivially satisfied
  np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)

  # Left and right padding: compare the real positions only.
  want_padded = hf_logits(hf, tokens, attention_mask=mask, position_ids=left_pad_positions(mask))
  got_padded = phi_logits(model, tokens, mask)
  real = mask.astype(bool)
  np.testing.assert_allclose(got_padded[real], want_padded[real], atol=ATOL, rtol=0)
  # The unpadded row agrees with the unpadded batch.
  np.testing.assert_allclose(got_padded[0], got[0], atol=1e-5, rtol=0)

  # Unrolled layers compute the same function as the scanned stack.
  unrolled = model_from_params(config.replace(scan_layers=False), params_of(model))
  np.testing.assert_allclose(phi_logits(unrolled, tokens, mask)[real], got_padded[real],
                             atol=1e-5, rtol=0)


def test_left_padding_invariance():
  config = small_config()
  model = random_model(config, seed=1)
  length, width = 10, 15
  seq = random_tokens((1, length), config.vocab_size, seed=2)
  alone = phi_logits(model, seq)[0]

  # Row r: left_pads[r] pad slots, the sequence, then right padding to the width; the
  # pad slots hold random junk tokens, different in every row.
  left_pads = [0, 2, 5, 5]
  tokens = random_tokens((len(left_pads), width), config.vocab_size, seed=3)
  mask = np.zeros((len(left_pads), width), np.int32)
  for row, pad in enumerate(left_pads):
    tokens[row, pad:pad + length] = seq[0]
    mask[row, pad:pad + length] = 1
  padded = phi_logits(model, tokens, mask)
  for row, pad in enumerate(left_pads):
    np.testing.assert_allclose(padded[row, pad:pad + length], alone, atol=1e-5, rtol=0)
  # The padding really is masked: attending to the junk changes the logits.
  unmasked = phi_logits(model, tokens, np.ones_like(mask))
  assert np.abs(unmasked[2, 5:] - alone).max() > 1e-2


def test_packed_segments_match_separate_sequences():
  config = small_config()
  model = random_model(config, seed=4)
  a = random_tokens((1, 6), config.vocab_size, seed=5)
  b = random_tokens((1, 5), config.vocab_size, seed=6)
  packed = np.concatenate([a, b, np.zeros((1, 1), np.int32)], axis=1)  # 1 pad slot
  segment_ids = np.array([[1] * 6 + [2] * 5 + [0]], np.int32)
  positions = np.array([list(range(6)) + list(range(5)) + [0]], np.int32)
  got = phi_logits(model, packed, (segment_ids > 0).astype(np.int32),
                   segment_ids=segment_ids, positions=positions)
  np.testing.assert_allclose(got[0, :6], phi_logits(model, a)[0], atol=1e-5, rtol=0)
  np.testing.assert_allclose(got[0, 6:11], phi_logits(model, b)[0], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------- KV cache


@functools.partial(jax.jit, static_argnums=(0, 4))
def _decode(graphdef, state, tokens, cache, last_only, mask=None):
  return nnx.merge(graphdef, state).decode(tokens, cache, attention_mask=mask,
                                           last_only=last_only)


@functools.partial(jax.jit, static_argnums=(0,))
def _prefill(graphdef, state, tokens, cache, mask):
  return nnx.merge(graphdef, state).prefill(tokens, cache, attention_mask=mask)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_kv_cache_decode_matches_full_recomputation(scan_layers):
  """Prefill of prompts of different lengths, then decode steps: the logits of every
  step equal the full forward pass over the whole sequence (tests/phi_jax/
  test_kv_cache.py covers refilled rows and bucketed prefixes)."""
  config = small_config(num_layers=3, scan_layers=scan_layers)
  model = random_model(config, seed=7)
  graphdef, state = nnx.split(model)
  prompt_lens = np.array([5, 3, 7, 1])
  prompt_len, new = int(prompt_lens.max()), 4
  batch = len(prompt_lens)
  prompt = random_tokens((batch, prompt_len), config.vocab_size, seed=8)  # junk in pads
  prompt_mask = (np.arange(prompt_len)[None] < prompt_lens[:, None]).astype(np.int32)
  continuation = random_tokens((batch, new), config.vocab_size, seed=9)

  # The reference: one forward pass over each whole sequence (prompt, continuation),
  # right-padded to one width (causality: padding after a token does not change it).
  full_tokens = np.zeros((batch, prompt_len + new), np.int32)
  for row, n in enumerate(prompt_lens):
    full_tokens[row, :n + new] = np.concatenate([prompt[row, :n], continuation[row]])
  full_mask = (np.arange(prompt_len + new)[None] < (prompt_lens + new)[:, None])
  full = phi_logits(model, full_tokens, full_mask.astype(np.int32))

  cache = model.init_cache(batch, max_len=prompt_len + new + 3)
  logits, cache = _prefill(graphdef, state, prompt, cache, prompt_mask)
  np.testing.assert_array_equal(np.asarray(cache.lengths), prompt_lens)
  for k in range(-1, new):
    if k >= 0:
      logits, cache = _decode(graphdef, state, continuation[:, k:k + 1], cache, True)
    assert logits.shape == (batch, config.vocab_size)
    want = full[np.arange(batch), prompt_lens + k]
    np.testing.assert_allclose(np.asarray(logits), want, atol=1e-5, rtol=0)
  np.testing.assert_array_equal(np.asarray(cache.lengths), prompt_lens + new)


# ---------------------------------------------------------------------- dropout

DROPOUT_FIELDS = ("embed_dropout", "attention_dropout", "residual_dropout")


def test_dropout_function_statistics():
  x = jnp.ones((200_000,), jnp.float32)
  y = np.asarray(dropout(x, 0.3, jax.random.key(0)))
  assert abs((y == 0).mean() - 0.3) < 0.01
  np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)
  assert abs(y.mean() - 1.0) < 0.01  # inverted dropout keeps the expectation
  np.testing.assert_array_equal(np.asarray(dropout(x, 0.3, None)), np.asarray(x))
  np.testing.assert_array_equal(np.asarray(dropout(x, 0.0, jax.random.key(0))), np.asarray(x))


def test_dropout_only_with_a_key():
  rates = {field: 0.2 for field in DROPOUT_FIELDS}
  config = small_config(**rates)
  model = random_model(config, seed=10)
  params = params_of(model)
  eval_model = model_from_params(config.replace(**{f: 0.0 for f in DROPOUT_FIELDS}), params)
  tokens = random_tokens((2, 12), config.vocab_size, seed=11)
  k1, k2 = jax.random.key(1), jax.random.key(2)

  evaluation = phi_logits(eval_model, tokens)
  # No key: deterministic, and the same as the model without dropout.
  np.testing.assert_allclose(phi_logits(model, tokens), evaluation, atol=1e-6, rtol=0)
  np.testing.assert_array_equal(phi_logits(model, tokens), phi_logits(model, tokens))
  # A key: different from evaluation, reproducible, and key-dependent.
  train_1 = phi_logits(model, tokens, dropout_rng=k1)
  assert np.abs(train_1 - evaluation).max() > 1e-2
  np.testing.assert_array_equal(phi_logits(model, tokens, dropout_rng=k1), train_1)
  assert np.abs(phi_logits(model, tokens, dropout_rng=k2) - train_1).max() > 1e-2
  # Rates 0 with a key: evaluation.
  np.testing.assert_allclose(phi_logits(eval_model, tokens, dropout_rng=k1), evaluation,
                             atol=1e-6, rtol=0)


@pytest.mark.parametrize("field", DROPOUT_FIELDS)
def test_each_dropout_site_is_used(field):
  config = small_config(**{field: 0.3})
  model = random_model(config, seed=12)
  tokens = random_tokens((2, 12), config.vocab_size, seed=13)
  evaluation = phi_logits(model, tokens)
  train = phi_logits(model, tokens, dropout_rng=jax.random.key(3))
  assert np.abs(train - evaluation).max() > 1e-2


# ---------------------------------------------------------------------- remat / gradients


def _loss(params, graphdef, tokens):
  model = nnx.merge(graphdef, params)
  logits = model(tokens[:, :-1])
  return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()


_grad = jax.jit(jax.value_and_grad(_loss), static_argnums=1)


@pytest.fixture(scope="module")
def grad_setup(tmp_path_factory):
  """A small transformers model, the same model in phi_jax, tokens, and a grad function."""
  directory = str(tmp_path_factory.mktemp("grads") / "hf")
  hf = make_hf_phi(directory, initializer_range=INIT, hidden_size=32, intermediate_size=64,
                   num_hidden_layers=2)
  base = phi_jax.from_pretrained(directory, dtype="float32")
  tokens = random_tokens((2, 10), base.config.vocab_size, seed=14)

  def loss_and_grads(**changes):
    model = model_from_params(base.config.replace(**changes), params_of(base))
    graphdef, params = nnx.split(model, nnx.Param)
    loss, grads = _grad(params, graphdef, tokens)
    return float(loss), jax.tree.map(np.asarray, grads.to_pure_dict())

  return hf, base, tokens, loss_and_grads


def test_gradients_match_torch(grad_setup):
  hf, base, tokens, loss_and_grads = grad_setup
  loss, grads = loss_and_grads(remat="none")
  # The reference gradient: transformers' autograd through the same weights.
  hf.zero_grad()
  t_tokens = torch.as_tensor(tokens, dtype=torch.long)
  t_logits = hf(t_tokens[:, :-1]).logits
  t_loss = torch.nn.functional.cross_entropy(t_logits.reshape(-1, t_logits.shape[-1]),
                                             t_tokens[:, 1:].reshape(-1))
  t_loss.backward()
  assert abs(loss - t_loss.item()) < 1e-5
  hf_grads = hf_convert.params_to_hf(grads, base.config)
  assert hf_grads.keys() == dict(hf.named_parameters()).keys()
  for name, param in hf.named_parameters():
    assert np.abs(param.grad.numpy()).max() > 0, name
    np.testing.assert_allclose(hf_grads[name], param.grad.numpy(), atol=2e-5, rtol=1e-3,
                               err_msg=name)


@pytest.mark.parametrize("changes", [
    dict(remat="full"), dict(remat="dots"), dict(remat="dots_with_no_batch_dims"),
    dict(remat="full", scan_layers=False),
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_remat_matches_no_remat(grad_setup, changes):
  loss_and_grads = grad_setup[3]
  loss, grads = loss_and_grads(remat="none")  # compiled once, cached across cases
  remat_loss, remat_grads = loss_and_grads(**changes)
  assert abs(remat_loss - loss) < 1e-6
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5),
               remat_grads, grads)


def test_remat_is_applied():
  config = small_config(remat="full")
  model = random_model(config)
  graphdef, params = nnx.split(model, nnx.Param)
  tokens = random_tokens((1, 6), config.vocab_size)
  jaxpr = str(jax.make_jaxpr(_loss, static_argnums=1)(params, graphdef, tokens))
  assert "checkpoint" in jaxpr or "remat" in jaxpr
  plain = nnx.split(model_from_params(config.replace(remat="none"), params_of(model)),
                    nnx.Param)[0]
  jaxpr = str(jax.make_jaxpr(_loss, static_argnums=1)(params, plain, tokens))
  assert "checkpoint" not in jaxpr and "remat" not in jaxpr


# ---------------------------------------------------------------------- bf16


def test_bfloat16_compute_close_to_float32(hf_phi_dir):
  directory, _ = hf_phi_dir(initializer_range=INIT)
  fp32 = phi_jax.from_pretrained(directory, dtype="float32")
  bf16 = phi_jax.from_pretrained(directory, dtype="bfloat16")
  assert bf16.config.dtype == "bfloat16" and bf16.config.param_dtype == "float32"
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params_of(bf16)))
  tokens, mask = padded_batch(fp32.config.vocab_size)
  want = phi_logits(fp32, tokens, mask)
  got = phi_logits(bf16, tokens, mask)
  assert got.dtype == np.float32
  real = mask.astype(bool)
  diff = np.abs(got[real] - want[real])
  assert diff.max() > 0  # bf16 compute really happened
  assert diff.max() < 0.05 * np.abs(want[real]).max() + 0.05, diff.max()
  # The ranking of the logits barely moves.
  agree = (got[real].argmax(-1) == want[real].argmax(-1)).mean()
  assert agree > 0.9


# ---------------------------------------------------------------------- params


def test_every_param_has_logical_axes():
  config = small_config(num_layers=3)
  model = random_model(config)
  axes = sharding.logical_axes(model)
  params = params_of(model)
  flat_axes = dict(jax.tree_util.tree_flatten_with_path(
      axes, is_leaf=lambda x: isinstance(x, tuple))[0])
  flat_params = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  assert flat_axes.keys() == flat_params.keys()
  for path, value in flat_params.items():
    names = flat_axes[path]
    assert len(names) == value.ndim, path
    assert set(names) <= set(sharding.LOGICAL_AXES), (path, names)
    is_block = jax.tree_util.keystr(path).startswith("['blocks']")
    assert (names[0] == "layers") == is_block, (path, names)
    if is_block:
      assert value.shape[0] == config.num_layers
  assert axes["embed"] == ("vocab", "embed")
  assert axes["blocks"]["attn"]["q_proj"]["kernel"] == ("layers", "embed", "heads", "head_dim")
  assert axes["blocks"]["attn"]["out_proj"]["kernel"] == ("layers", "heads", "head_dim", "embed")
  assert axes["blocks"]["mlp"]["fc1"]["kernel"] == ("layers", "embed", "mlp")
  assert axes["lm_head"]["kernel"] == ("embed", "vocab")


def test_init_model():
  config = small_config(d_model=64, num_layers=2, mlp_dim=128, initializer_range=0.05)
  params = params_of(init_model(config, seed=0))
  assert jax.tree.map(lambda a: a.shape, params) == jax.tree.map(lambda a: a.shape,
                                                                abstract_params(config))
  for leaf in (params["embed"], params["blocks"]["mlp"]["fc1"]["kernel"],
               params["lm_head"]["kernel"]):
    assert leaf.dtype == jnp.float32
    assert abs(float(jnp.std(leaf)) - 0.05) < 0.005
  np.testing.assert_array_equal(params["blocks"]["norm"]["scale"], 1.0)
  np.testing.assert_array_equal(params["final_norm"]["bias"], 0.0)
  np.testing.assert_array_equal(params["blocks"]["attn"]["q_proj"]["bias"], 0.0)
  # Layers are initialised independently (split rngs), as are q, k and v.
  q = params["blocks"]["attn"]["q_proj"]["kernel"]
  assert np.abs(q[0] - q[1]).max() > 0
  assert np.abs(q - params["blocks"]["attn"]["k_proj"]["kernel"]).max() > 0


def _closed_form(V, E, L, F):
  return V * E * 2 + V + L * (4 * E * E + 4 * E + 2 * E * F + F + E + 2 * E) + 2 * E


def test_count_params_phi1():
  config = PhiConfig()
  assert count_params(config) == 1_418_270_720
  assert count_params(config) == _closed_form(51200, 2048, 24, 8192)


def test_count_params_phi1_small():
  config = PhiConfig(d_model=1024, num_layers=20, num_heads=16, mlp_dim=4096)
  n = count_params(config)
  assert n == _closed_form(51200, 1024, 20, 4096)
  assert 340e6 < n < 370e6


def test_count_params_matches_transformers():
  hf = make_hf_phi(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                   num_attention_heads=6)
  config = hf_convert.config_from_hf(hf.config.to_dict())
  assert count_params(config) == sum(p.numel() for p in hf.parameters())
  assert count_params(config) == sum(
      math.prod(leaf.shape) for leaf in jax.tree.leaves(abstract_params(config)))


# ---------------------------------------------------------------------- config


@pytest.mark.parametrize("kwargs, field", [
    (dict(d_model=64, num_heads=5), "num_heads"),
    (dict(d_model=64, num_heads=4, rotary_dim=7), "rotary_dim"),
    (dict(d_model=64, num_heads=4, rotary_dim=32), "rotary_dim"),  # > head_dim
    (dict(attention="flash"), "attention"),
    (dict(activation="relu"), "activation"),
    (dict(remat="sometimes"), "remat"),
    (dict(dtype="float64"), "dtype"),
    (dict(vocab_size=0), "vocab_size"),
    (dict(residual_dropout=1.0), "residual_dropout"),
])
def test_config_validation_names_the_field(kwargs, field):
  with pytest.raises(ConfigError, match=f"'{field}'"):
    PhiConfig(**kwargs)


def test_config_from_mapping():
  config = PhiConfig.from_mapping({"d_model": 64, "num_heads": 4, "rotary_dim": 8})
  assert (config.d_model, config.head_dim, config.rotary_dim) == (64, 16, 8)
  with pytest.raises(ConfigError, match=r"unknown field\(s\) \['num_layer'\]") as e:
    PhiConfig.from_mapping({"d_model": 64, "num_layer": 2}, where="config.model")
  assert "config.model" in str(e.value)
  with pytest.raises(ConfigError, match="'attention'"):
    PhiConfig.from_mapping({"attention": "splash"})
  assert issubclass(ConfigError, ValueError)
  assert PhiConfig.from_mapping(small_config().to_dict()) == small_config()


def test_linear_rope_scaling_is_position_interpolation():
  """Under linear scaling by f, positions f * p see the angles that p sees unscaled."""
  factor = 4.0
  plain = small_config(max_seq_len=256)
  scaled = plain.replace(rope_scaling_type="linear", rope_scaling_factor=factor)
  params = params_of(init_model(plain, 0))
  tokens = random_tokens((2, 16), plain.vocab_size)
  positions = np.tile(np.arange(16, dtype=np.int32), (2, 1))
  want = phi_logits(model_from_params(plain, params), tokens, positions=positions)
  got = phi_logits(model_from_params(scaled, params), tokens,
                   positions=(positions * int(factor)).astype(np.int32))
  np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
  assert np.abs(phi_logits(model_from_params(scaled, params), tokens, positions=positions)
                - want).max() > 100 * ATOL
