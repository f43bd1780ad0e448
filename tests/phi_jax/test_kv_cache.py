"""Tests of phi_jax.kv_cache with the model's prefill/decode, against full recomputation.

The reference for every logit is the model's plain forward pass over the whole
sequence (no cache), in fp32; the cache path must match it to 1e-5 for rows of
different lengths, for a row emptied and refilled while the others keep decoding (a
continuously batching server), for multi-token appends, and for decoding against a
bucketed prefix of the cache.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from phi_jax.config import PhiConfig
from phi_jax.kv_cache import KVCache
from tests.conftest import phi_logits, random_model

ATOL = 1e-5
VOCAB = 97


def _config(**changes) -> PhiConfig:
  fields = dict(vocab_size=VOCAB, d_model=32, num_layers=2, num_heads=4, mlp_dim=64,
                rotary_dim=4, max_seq_len=64, dtype="float32", initializer_range=0.1)
  fields.update(changes)
  return PhiConfig(**fields)


@pytest.fixture(scope="module")
def model():
  return random_model(_config(), seed=3)


@functools.partial(jax.jit, static_argnums=(0,))
def _prefill(graphdef, state, tokens, cache, mask, rows):
  return nnx.merge(graphdef, state).prefill(tokens, cache, attention_mask=mask, rows=rows)


@functools.partial(jax.jit, static_argnums=(0, 5, 6))
def _decode(graphdef, state, tokens, cache, mask, last_only=True, kv_len=None):
  model = nnx.merge(graphdef, state)
  part = cache if kv_len is None else cache.prefix(kv_len)
  logits, part = model.decode(tokens, part, attention_mask=mask, last_only=last_only)
  return logits, cache.with_prefix(part)


def _reference(model, sequence, width=32):
  """fp32 logits [len, V] of one sequence by the plain forward pass (right-padded to
  one width, so one compile serves every length: padding after a token cannot change
  its logits)."""
  tokens = np.zeros((1, width), np.int32)
  tokens[0, :len(sequence)] = sequence
  mask = (np.arange(width) < len(sequence)).astype(np.int32)[None]
  return phi_logits(model, tokens, mask)[0, :len(sequence)]


def _rng_tokens(n, seed):
  return np.random.default_rng(seed).integers(0, VOCAB, n).tolist()


def _right_padded(prompts, width):
  tokens = np.zeros((len(prompts), width), np.int32)
  mask = np.zeros((len(prompts), width), np.int32)
  for i, p in enumerate(prompts):
    tokens[i, :len(p)] = p
    tokens[i, len(p):] = 7  # junk in the padding: must not matter
    mask[i, :len(p)] = 1
  return jnp.asarray(tokens), jnp.asarray(mask)


def test_rows_of_different_lengths_and_a_refilled_row_match_recomputation(model):
  """Three rows prefilled with prompts of 5, 2 and 9 tokens decode together; after three
  steps row 1 is refilled with a new prompt while rows 0 and 2 keep decoding. Every
  step's logits equal the forward pass over each row's whole sequence so far."""
  graphdef, state = nnx.split(model)
  cache = model.init_cache(3, max_len=32)
  sequences = [_rng_tokens(5, 1), _rng_tokens(2, 2), _rng_tokens(9, 3)]
  tokens, mask = _right_padded(sequences, 16)
  logits, cache = _prefill(graphdef, state, tokens, cache, mask, jnp.arange(3))
  np.testing.assert_array_equal(np.asarray(cache.lengths), [5, 2, 9])
  for row, seq in enumerate(sequences):
    np.testing.assert_allclose(logits[row], _reference(model, seq)[-1], atol=ATOL, rtol=0)

  next_tokens = np.random.default_rng(4).integers(0, VOCAB, (6, 3))
  for step in range(6):
    if step == 3:  # a new request takes row 1; rows 0 and 2 are mid-decode
      sequences[1] = _rng_tokens(11, 5)
      tokens, mask = _right_padded([sequences[1]], 16)
      row_logits, cache = _prefill(graphdef, state, tokens, cache, mask, jnp.array([1]))
      np.testing.assert_allclose(row_logits[0], _reference(model, sequences[1])[-1],
                                 atol=ATOL, rtol=0)
    for row in range(3):
      sequences[row].append(int(next_tokens[step, row]))
    logits, cache = _decode(graphdef, state, jnp.asarray(next_tokens[step][:, None]), cache,
                            None)
    for row, seq in enumerate(sequences):
      np.testing.assert_allclose(logits[row], _reference(model, seq)[-1], atol=ATOL, rtol=0)
  np.testing.assert_array_equal(np.asarray(cache.lengths), [len(s) for s in sequences])


def test_multi_token_append_with_padding_and_idle_rows(model):
  """decode with T = 4: row 0 appends 4 tokens, row 1 two (then padding), row 2 none
  (it stays as it was); every real position matches the forward pass."""
  graphdef, state = nnx.split(model)
  cache = model.init_cache(3, max_len=24)
  prompts = [_rng_tokens(3, 6), _rng_tokens(6, 7), _rng_tokens(4, 8)]
  tokens, mask = _right_padded(prompts, 8)
  _, cache = _prefill(graphdef, state, tokens, cache, mask, jnp.arange(3))
  new = [_rng_tokens(4, 9), _rng_tokens(2, 10), []]
  tokens, mask = _right_padded(new, 4)
  logits, cache = _decode(graphdef, state, tokens, cache, mask, False)
  np.testing.assert_array_equal(np.asarray(cache.lengths), [7, 8, 4])
  for row in range(2):
    want = _reference(model, prompts[row] + new[row])[len(prompts[row]):]
    np.testing.assert_allclose(logits[row, :len(new[row])], want, atol=ATOL, rtol=0)
  # The idle row continues exactly where it was.
  step = jnp.asarray([[1], [2], [3]], jnp.int32)
  logits, cache = _decode(graphdef, state, step, cache, None)
  np.testing.assert_allclose(logits[2], _reference(model, prompts[2] + [3])[-1], atol=ATOL,
                             rtol=0)


def test_decoding_against_a_bucketed_prefix_equals_the_whole_buffer(model):
  """Attending over the first kv_len slots (>= every row's length) gives the same logits
  as over the whole buffer, and with_prefix writes the new keys back into it."""
  graphdef, state = nnx.split(model)
  prompts = [_rng_tokens(6, 11), _rng_tokens(13, 12)]
  tokens, mask = _right_padded(prompts, 16)
  results = []
  for kv_len in (None, 16):
    cache = model.init_cache(2, max_len=64)
    _, cache = _prefill(graphdef, state, tokens, cache, mask, jnp.arange(2))
    logits = []
    for step in range(3):
      out, cache = _decode(graphdef, state, jnp.full((2, 1), step + 1, jnp.int32), cache,
                           None, True, kv_len)
      logits.append(np.asarray(out))
    assert cache.max_len == 64
    results.append((np.stack(logits), cache))
  (whole, cache_whole), (bucketed, cache_bucketed) = results
  np.testing.assert_allclose(bucketed, whole, atol=ATOL, rtol=0)
  for row, prompt in enumerate(prompts):
    np.testing.assert_allclose(bucketed[-1, row], _reference(model, prompt + [1, 2, 3])[-1],
                               atol=ATOL, rtol=0)
  np.testing.assert_array_equal(np.asarray(cache_bucketed.lengths), [9, 16])
  for a, b in zip(cache_whole.k + cache_whole.v, cache_bucketed.k + cache_bucketed.v):
    np.testing.assert_allclose(np.asarray(a)[:, :, :16], np.asarray(b)[:, :, :16], atol=ATOL)


def test_prefill_with_scan_layers_and_unrolled_fills_the_same_cache():
  caches = []
  for scan_layers in (True, False):
    model = random_model(_config(num_layers=3, scan_layers=scan_layers), seed=5)
    graphdef, state = nnx.split(model)
    tokens, mask = _right_padded([_rng_tokens(5, 13), _rng_tokens(8, 14)], 8)
    _, cache = _prefill(graphdef, state, tokens, model.init_cache(2, max_len=16), mask,
                        jnp.arange(2))
    caches.append(cache)
  for a, b in zip(caches[0].k + caches[0].v, caches[1].k + caches[1].v):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_cache_operations():
  cache = KVCache.empty(num_layers=2, batch=3, max_len=4, num_heads=1, head_dim=2,
                        dtype=jnp.float32)
  assert (cache.num_layers, cache.batch, cache.max_len) == (2, 3, 4)
  # fill_rows: rows 2 and 0 get 3 and 1 tokens; index 3 (past the batch) is dropped.
  values = jnp.arange(2 * 3 * 3 * 1 * 2, dtype=jnp.float32).reshape(2, 3, 3, 1, 2) + 1
  cache = cache.fill_rows(jnp.array([2, 0, 3]), values, -values, jnp.array([3, 1, 2]))
  np.testing.assert_array_equal(np.asarray(cache.lengths), [1, 0, 3])
  np.testing.assert_array_equal(np.asarray(cache.k[1])[2, 0, :3], np.asarray(values[1, 0, :, 0]))
  np.testing.assert_array_equal(np.asarray(cache.v[0])[0, 0, :3], -np.asarray(values[0, 1, :, 0]))
  assert not np.asarray(cache.k[0])[1].any()  # row 1 untouched
  # write + advance: one token per row at its own next slot; row 2's fourth token fits,
  # a write past max_len is dropped, not clamped onto slot 3.
  new = jnp.full((3, 1, 1, 2), 9.0)
  cache = cache.write(0, new, new).advance(jnp.array([1, 1, 1]))
  k0 = np.asarray(cache.k[0])
  assert k0[0, 0, 1, 0] == 9 and k0[1, 0, 0, 0] == 9 and k0[2, 0, 3, 0] == 9
  np.testing.assert_array_equal(np.asarray(cache.lengths), [2, 1, 4])
  before = np.asarray(cache.k[0]).copy()
  cache = cache.write(0, new * 2, new * 2)  # row 2 is full: its write is dropped
  assert (np.asarray(cache.k[0])[2] == before[2]).all()
  # reset, grow, prefix / with_prefix
  cache = cache.reset(jnp.array([False, True, False]))
  np.testing.assert_array_equal(np.asarray(cache.lengths), [2, 0, 4])
  grown = cache.grow(8)
  assert grown.max_len == 8
  np.testing.assert_array_equal(np.asarray(grown.k[0])[:, :, :4], np.asarray(cache.k[0]))
  part = grown.prefix(4)
  assert part.max_len == 4
  back = grown.with_prefix(part.replace(k=tuple(k + 1 for k in part.k)))
  np.testing.assert_array_equal(np.asarray(back.k[1])[:, :, :4], np.asarray(cache.k[1]) + 1)
  assert not np.asarray(back.k[1])[:, :, 4:].any()


def test_decode_outside_jit_checks_overflow(model):
  cache = model.init_cache(1, max_len=4)
  logits, cache = model.prefill(jnp.ones((1, 4), jnp.int32), cache)
  with pytest.raises(ValueError, match="overflow"):
    model.decode(jnp.ones((1, 1), jnp.int32), cache)
  with pytest.raises(ValueError, match="overflow"):
    model.prefill(jnp.ones((1, 5), jnp.int32), cache)


def test_prefill_runs_the_flash_kernel_and_matches_xla(monkeypatch):
  """With attention='pallas' the prompt goes through phi_jax's flash kernel (a static
  offset: the cache does not push it onto the XLA fallback), with the XLA logits."""
  from phi_jax import kernels

  calls = []
  flash = kernels.flash_attention
  monkeypatch.setattr(kernels, "flash_attention",
                      lambda *a, **kw: calls.append(kw["q_offset"]) or flash(*a, **kw))
  prompts = [_rng_tokens(5, 15), _rng_tokens(8, 16)]
  tokens, mask = _right_padded(prompts, 8)
  results = []
  for attention in ("pallas", "xla"):
    model = random_model(_config(attention=attention, attention_block_q=16,
                                 attention_block_kv=16), seed=6)
    graphdef, state = nnx.split(model)
    logits, cache = _prefill(graphdef, state, tokens, model.init_cache(2, max_len=16), mask,
                             jnp.arange(2))
    results.append((np.asarray(logits), cache))
  assert calls and set(calls) == {0}  # traced once per layer of the pallas model
  np.testing.assert_allclose(results[0][0], results[1][0], atol=ATOL, rtol=0)
  for a, b in zip(results[0][1].k, results[1][1].k):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=ATOL)


def test_storage_dtype_is_fp32_only_for_16_bit_floats_on_the_cpu():
  from phi_jax.kv_cache import storage_dtype
  assert storage_dtype(jnp.bfloat16, "cpu") == jnp.float32
  assert storage_dtype(jnp.float16, "cpu") == jnp.float32
  assert storage_dtype(jnp.float32, "cpu") == jnp.float32
  assert storage_dtype(jnp.bfloat16, "gpu") == jnp.bfloat16
  assert storage_dtype(jnp.bfloat16, "tpu") == jnp.bfloat16


def test_bf16_decoding_with_an_fp32_held_cache_equals_a_bf16_cache():
  """A bf16 model's cache held in fp32 (the CPU default: no 16-bit scatter there)
  stores the same bf16-rounded keys and values, so prefill and decode logits equal those
  with the cache held in bf16, for rows of different lengths."""
  model = random_model(_config(dtype="bfloat16"), seed=5)
  assert model.init_cache(1, 8).k[0].dtype == jnp.float32  # this CPU test's default
  graphdef, state = nnx.split(model)
  prompts = [_rng_tokens(5, 11), _rng_tokens(9, 12), _rng_tokens(2, 13)]
  tokens, mask = _right_padded(prompts, 12)
  results = []
  for dtype in (jnp.float32, jnp.bfloat16):
    cache = model.init_cache(3, max_len=32, dtype=dtype)
    logits, cache = _prefill(graphdef, state, tokens, cache, mask, jnp.arange(3))
    steps = [logits]
    for step in range(4):
      logits, cache = _decode(graphdef, state, jnp.full((3, 1), 3 + step, jnp.int32), cache,
                              None)
      steps.append(logits)
    results.append(np.stack([np.asarray(s, np.float32) for s in steps]))
    np.testing.assert_array_equal(
        np.asarray(cache.k[0][0, :, :5], np.float32),
        np.asarray(cache.k[0][0, :, :5].astype(jnp.bfloat16), np.float32))
  np.testing.assert_allclose(results[0], results[1], atol=1e-6, rtol=0)
