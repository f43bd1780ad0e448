"""Tests of phi_jax.sampling: generation against transformers and brute force.

Every model here is a small random transformers PhiForCausalLM (tests/conftest.py)
loaded with `phi_jax.from_pretrained`, so the references are independent code:
transformers' own `generate`, a full-recomputation argmax loop, and a numpy
implementation of the temperature / top-k / top-p distribution.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import phi_jax
from phi_jax import kv_cache, sampling
from phi_jax.tokenizer import byte_level
from tests.conftest import make_hf_phi

VOCAB = 101  # the conftest default
NEW_TOKENS = 32


def _prompts(lengths, vocab=VOCAB, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, vocab, n).tolist() for n in lengths]


def _hf_greedy(hf_model, prompt, new_tokens=NEW_TOKENS):
  """transformers' greedy continuation of one prompt (eos disabled), as a list."""
  ids = torch.tensor([prompt])
  with torch.no_grad():
    out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                            max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                            eos_token_id=None, pad_token_id=0)
  return out[0, len(prompt):].tolist()


@pytest.fixture(scope="module")
def hf_phi(tmp_path_factory):
  """(directory, torch model) of a random 2-layer transformers Phi, vocab 101."""
  directory = str(tmp_path_factory.mktemp("sampling") / "hf")
  return directory, make_hf_phi(directory)


@pytest.fixture(scope="module")
def model(hf_phi):
  return phi_jax.from_pretrained(hf_phi[0], dtype="float32")


@pytest.fixture(scope="module")
def byte_dir(tmp_path_factory):
  """A random Phi over the byte-level vocabulary (257), saved by transformers.

  initializer_range 0.1 makes its greedy continuations varied (not one repeated
  byte), so stop strings and end-of-text ids can be picked from them.
  """
  directory = str(tmp_path_factory.mktemp("sampling") / "bytes")
  make_hf_phi(directory, vocab_size=257, initializer_range=0.1)
  return directory


@pytest.fixture(scope="module")
def byte_model(byte_dir):
  """The byte_dir model in phi_jax with the byte-level tokenizer attached."""
  model = phi_jax.from_pretrained(byte_dir, dtype="float32")
  model.tokenizer = byte_level()
  return model


BYTE_PROMPTS = ["def f(x):", "hello world, this is a test"]


# ----------------------------------------------------------------------------- greedy


@pytest.mark.parametrize("scan_layers", [True, False])
def test_greedy_matches_transformers_single_prompts(hf_phi, scan_layers):
  directory, hf_model = hf_phi
  model = phi_jax.from_pretrained(directory, dtype="float32", scan_layers=scan_layers)
  for prompt in _prompts([1, 7, 13]):
    [out] = phi_jax.generate(model, [prompt], max_new_tokens=NEW_TOKENS, eos_token_id=None)
    assert out.tokens == _hf_greedy(hf_model, prompt)
    assert out.finish_reason == "length"
    assert out.prompt_tokens == len(prompt)
    assert out.text is None  # no tokenizer stored with the model


@pytest.mark.parametrize("scan_layers", [True, False])
def test_greedy_batch_of_different_lengths_matches_transformers(hf_phi, scan_layers):
  directory, hf_model = hf_phi
  model = phi_jax.from_pretrained(directory, dtype="float32", scan_layers=scan_layers)
  prompts = _prompts([3, 16, 9])  # left-padded to 16, batch padded to 4
  outs = phi_jax.generate(model, prompts, max_new_tokens=NEW_TOKENS, eos_token_id=None)
  assert len(outs) == len(prompts)
  for prompt, out in zip(prompts, outs):
    assert out.tokens == _hf_greedy(hf_model, prompt)
    assert out.prompt_tokens == len(prompt)


def test_kv_cache_decoding_equals_full_recomputation(model):
  """Greedy tokens equal an argmax loop that reruns the model on the whole sequence."""
  graphdef, state = nnx.split(model)
  total = 64

  @jax.jit
  def logits_of(state, tokens_1T):
    return nnx.merge(graphdef, state)(tokens_1T)[0]

  prompts = _prompts([5, 14, 1], seed=2)
  outs = phi_jax.generate(model, prompts, max_new_tokens=NEW_TOKENS, eos_token_id=None)
  for prompt, out in zip(prompts, outs):
    sequence = list(prompt)
    for _ in range(NEW_TOKENS):
      # Pad on the right to one shape (one compile): by causality the logits at the
      # last real position do not depend on what follows it.
      padded = np.zeros((1, total), np.int32)
      padded[0, :len(sequence)] = sequence
      logits = np.asarray(logits_of(state, jnp.asarray(padded)))
      sequence.append(int(np.argmax(logits[len(sequence) - 1])))
    assert out.tokens == sequence[len(prompt):]


# ----------------------------------------------------------------------------- compiles


def test_no_recompilation_within_buckets(model):
  prefill, decode = sampling._compiled(nnx.split(model)[0])

  def sizes():
    return np.array([prefill._cache_size(), decode._cache_size()])

  # chunk_size 10 is used by no other test, so every decode program here is compiled
  # by this test, whatever ran before it; so is every prefill of a prompt bucket of 32
  # (other tests' prompts on this model are shorter).
  gen = lambda prompts, max_new_tokens=50, **kw: phi_jax.generate(
      model, prompts, max_new_tokens=max_new_tokens, eos_token_id=None, chunk_size=10, **kw)
  gen(_prompts([5]))  # 1 row, cache of 64 slots, prompt bucket 8, decode over 64 slots
  before = sizes()
  gen(_prompts([3]))
  gen(_prompts([8]), max_new_tokens=56)
  gen(_prompts([1]), max_new_tokens=41, temperature=0.7, top_k=5, seed=3)
  assert (sizes() == before).all()

  gen(_prompts([2, 6, 7]))  # 4 rows: one new prefill (of 4 prompts) and decode
  assert (sizes() == before + [1, 1]).all()
  before = sizes()
  gen(_prompts([4, 8, 1, 5]))
  gen(_prompts([3, 6]), num_samples=2, temperature=1.0, top_p=0.9)
  assert (sizes() == before).all()

  gen(_prompts([17]), max_new_tokens=40)  # prompt bucket 32: a new prefill, same decoding
  assert (sizes() == before + [1, 0]).all()
  before = sizes()
  # 20 + 100 tokens: the cache grows from 64 slots to 128 when the row outgrows it;
  # the prefill (cache of 64, prompt bucket 32) exists, one decode program is new.
  gen(_prompts([20]), max_new_tokens=100)
  assert (sizes() == before + [0, 1]).all()
  before = sizes()
  gen(_prompts([30]), max_new_tokens=70, seed=1)
  assert (sizes() == before).all()


def test_reloaded_model_with_its_own_tokenizer_reuses_compiled_programs(byte_dir, byte_model):
  """A second load of one checkpoint (a new Tokenizer object) compiles nothing new."""
  [first] = phi_jax.generate(byte_model, [BYTE_PROMPTS[0]], max_new_tokens=NEW_TOKENS,
                             eos_token_id=None)
  again = phi_jax.from_pretrained(byte_dir, dtype="float32")
  tokenizer = again.tokenizer = byte_level()
  misses = sampling._compiled.cache_info().misses
  [second] = phi_jax.generate(again, [BYTE_PROMPTS[0]], max_new_tokens=NEW_TOKENS,
                              eos_token_id=None)
  assert sampling._compiled.cache_info().misses == misses
  assert second == first
  assert again.tokenizer is tokenizer


@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_inference_state_holds_matmul_weights_in_the_compute_dtype(hf_phi, platform,
                                                                    monkeypatch):
  """bf16 compute: kernels are stored in bf16 once; the embedding holds bf16 values,
  in fp32 on the CPU (no 16-bit gather there); biases and LayerNorms stay fp32; the
  logits are bit-identical to casting on every call."""
  monkeypatch.setattr(sampling.kv_cache_lib, "storage_dtype",
                      functools.partial(kv_cache.storage_dtype, platform=platform))
  model = phi_jax.from_pretrained(hf_phi[0], dtype="bfloat16")
  graphdef, state = nnx.split(model)
  cast = sampling.inference_state(state, jnp.bfloat16)
  dtypes = {jax.tree_util.keystr(path): leaf.dtype
            for path, leaf in jax.tree_util.tree_leaves_with_path(cast)}
  embed_dtype = jnp.float32 if platform == "cpu" else jnp.bfloat16
  assert dtypes and all(v == (jnp.bfloat16 if "kernel" in k else
                              embed_dtype if "embed" in k else jnp.float32)
                        for k, v in dtypes.items()), dtypes
  embed = next(leaf for path, leaf in jax.tree_util.tree_leaves_with_path(cast)
               if "embed" in jax.tree_util.keystr(path))
  np.testing.assert_array_equal(np.asarray(embed, np.float32),
                                np.asarray(embed.astype(jnp.bfloat16), np.float32))
  tokens = jnp.asarray(_prompts([12, 12], seed=9))
  logits = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t))
  np.testing.assert_array_equal(np.asarray(logits(cast, tokens)),
                                np.asarray(logits(state, tokens)))


def test_decode_loop_reads_each_layers_weights_without_slicing_them_every_step(model):
  """The weights are stacked [layers, ...]; a decode chunk takes each layer's out once,
  before its loop. The compiled loop body (XLA does not hoist slices out of it) must
  not take any stacked weight as an operand: doing so copies every weight every step."""
  graphdef, state = sampling._split(model)
  stacked_shapes = {f"[{','.join(map(str, leaf.shape))}]"
                    for leaf in jax.tree.leaves(nnx.state(model.blocks))}
  rows = 3  # not the layer count (2), so no activation has a stacked weight's shape
  cache = model.init_cache(rows, 64)
  hlo = sampling._compiled(graphdef)[1].lower(
      state, cache, jnp.zeros((rows, VOCAB), jnp.float32), jnp.zeros((rows, 2), jnp.uint32),
      jnp.zeros((rows,), bool), jnp.zeros((rows,)), jnp.ones((rows,)),
      jnp.zeros((rows,), jnp.int32),
      jnp.asarray([-1]), VOCAB, steps=4, kv_len=64).compile().as_text()
  computations = {c.split(" ", 1)[0].lstrip("%"): c for c in hlo.split("\n\n")}
  bodies = [computations[name] for name in
            re.findall(r"body=%?([\w.\-]+)", hlo)]
  scan_body = max(bodies, key=len)  # the decode steps' loop (others: the RNG's)
  called = [computations[name] for name in
            re.findall(r"calls=%?([\w.\-]+)", scan_body)]
  operands = "\n".join([scan_body] + [c.split("\n", 1)[0] for c in called])
  assert not [s for s in stacked_shapes if s in operands], stacked_shapes


# ----------------------------------------------------------------------------- sample_logits


def _reference_distribution(logits, temperature, top_k, top_p):
  """The filtered, renormalised next-token distribution, in numpy (float64)."""
  z = np.asarray(logits, np.float64) / temperature
  order = np.argsort(-z)
  keep = np.zeros(z.shape, bool)
  keep[order[:top_k or len(z)]] = True
  probs = np.where(keep, np.exp(z - z.max()), 0.0)
  probs /= probs.sum()
  # Nucleus: the most likely tokens until their mass reaches top_p.
  mass = 0.0
  nucleus = np.zeros(z.shape, bool)
  for i in order:
    if not keep[i] or mass >= top_p:
      break
    nucleus[i] = True
    mass += probs[i]
  probs = np.where(nucleus, probs, 0.0)
  return probs / probs.sum()


_sample_logits = jax.jit(sampling.sample_logits)


def _draw(logits, temperature, top_k, top_p, n=20_000, seed=0):
  """n independent samples of one row of logits (a batch of n identical rows)."""
  logits_BV = jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (n, len(logits)))
  tokens = _sample_logits(
      logits_BV, jax.random.PRNGKey(seed), jnp.full((n,), temperature, jnp.float32),
      jnp.full((n,), top_p, jnp.float32), jnp.full((n,), top_k, jnp.int32))
  return np.asarray(tokens)


LOGITS = np.array([2.0, 1.3, -0.5, 0.9, 1.8, -1.2, 0.2, 1.1, -2.0, 0.6], np.float32)


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 1.0),
    (0.5, 0, 1.0),
    (2.0, 0, 1.0),
    (1.0, 3, 1.0),
    (0.7, 5, 1.0),
    (1.0, 0, 0.6),
    (1.5, 0, 0.9),
    (1.0, 4, 0.7),
    (1.0, 2, 0.5),  # top-p on the top-k renormalised probabilities: keeps one token
    (2.0, 6, 0.5),
    (1.0, 20, 1.0),  # top_k beyond the vocabulary: no filter
])
def test_sample_logits_matches_reference_distribution(temperature, top_k, top_p):
  n = 20_000
  expected = _reference_distribution(LOGITS, temperature, top_k, top_p)
  samples = _draw(LOGITS, temperature, top_k, top_p, n=n)
  empirical = np.bincount(samples, minlength=len(LOGITS)) / n
  assert not np.any(empirical[expected == 0]), "sampled a filtered-out token"
  assert 0.5 * np.abs(empirical - expected).sum() < 0.02


def test_reference_distribution_sanity():
  """The numpy reference itself, on hand-computed cases."""
  p = _reference_distribution(np.log([0.5, 0.3, 0.15, 0.05]), 1.0, 0, 0.75)
  np.testing.assert_allclose(p, [0.5 / 0.8, 0.3 / 0.8, 0, 0])
  p = _reference_distribution(np.log([0.1, 0.6, 0.3]), 1.0, 2, 1.0)
  np.testing.assert_allclose(p, [0, 2 / 3, 1 / 3])


def test_first_argmax_equals_jnp_argmax_with_ties_infs_and_nans():
  rng = np.random.default_rng(3)
  x = rng.integers(-3, 4, size=(64, 50)).astype(np.float32)  # many ties
  x[5] = -np.inf
  x[6, 7] = x[6, 30] = np.inf
  x[7, 11] = x[7, 40] = np.nan
  x[8, 2] = np.nan
  x[8, 3] = np.inf
  got = sampling.first_argmax(jnp.asarray(x))
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(np.asarray(got), np.asarray(jnp.argmax(jnp.asarray(x), -1)))
  np.testing.assert_array_equal(np.asarray(got)[5:9], [0, 7, 11, 2])


def test_top_k_one_and_tiny_top_p_are_argmax():
  logits = jax.random.normal(jax.random.PRNGKey(0), (64, 50)) * 3
  argmax = np.argmax(np.asarray(logits), axis=-1)
  ones = jnp.ones((64,), jnp.float32)
  for temperature in (0.5, 1.0, 5.0):
    for seed in range(3):
      key = jax.random.PRNGKey(seed)
      by_k = _sample_logits(logits, key, temperature * ones, ones,
                                    jnp.ones((64,), jnp.int32))
      by_p = _sample_logits(logits, key, temperature * ones, 1e-6 * ones,
                                    jnp.zeros((64,), jnp.int32))
      np.testing.assert_array_equal(np.asarray(by_k), argmax)
      np.testing.assert_array_equal(np.asarray(by_p), argmax)


def test_temperature_zero_rows_are_greedy_while_others_sample():
  n = 20_000
  logits = jnp.broadcast_to(jnp.asarray(LOGITS), (n, len(LOGITS)))
  ones, no_top_k = jnp.ones((n,)), jnp.zeros((n,), jnp.int32)
  temperature = jnp.where(jnp.arange(n) % 2 == 0, 0.0, 1.0)
  tokens = np.asarray(_sample_logits(logits, jax.random.PRNGKey(1), temperature, ones,
                                     no_top_k))
  greedy, sampled = tokens[0::2], tokens[1::2]
  assert np.all(greedy == np.argmax(LOGITS))
  empirical = np.bincount(sampled, minlength=len(LOGITS)) / len(sampled)
  expected = _reference_distribution(LOGITS, 1.0, 0, 1.0)
  assert 0.5 * np.abs(empirical - expected).sum() < 0.025
  # All rows greedy (the fast path): argmax everywhere.
  tokens = _sample_logits(logits, jax.random.PRNGKey(1), 0 * ones, ones, no_top_k)
  assert np.all(np.asarray(tokens) == np.argmax(LOGITS))


def test_top_p_one_and_no_top_k_leave_the_logits_exactly_unchanged():
  """Rounding makes the mass before the last token 1.0 here ([0, 0, -17]: 0.5 + 0.5), so
  a nucleus of 'mass before < top_p' would drop it; top_p = 1 must keep everything."""
  logits = jnp.asarray([[0.0, 0.0, -17.0], [1.0, 0.0, 0.0, -16.0][:3], [2.0, -1.0, -30.0]],
                       jnp.float32)
  probs = np.asarray(jax.nn.softmax(logits[:1], axis=-1), np.float32)
  assert np.cumsum(probs)[1] >= 1.0  # the case is the adversarial one
  ones, zeros = jnp.ones((3,), jnp.float32), jnp.zeros((3,), jnp.int32)
  filtered = sampling.filter_logits(logits, ones, zeros)
  np.testing.assert_array_equal(np.asarray(filtered), np.asarray(logits))
  # And sampling with top_p = 1 is jax.random.categorical on the scaled logits, draw
  # for draw (same key).
  key = jax.random.PRNGKey(3)
  n = 4096
  big = jnp.tile(logits, (n // 3 + 1, 1))[:n]
  got = _sample_logits(big, key, jnp.full((n,), 0.7), jnp.ones((n,)), jnp.zeros((n,), jnp.int32))
  want = jax.random.categorical(key, big / 0.7, axis=-1)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_padded_vocabulary_ids_are_never_sampled(tmp_path):
  """A model whose vocabulary (320) is padded past its tokenizer's (257), with the
  padding id 300 made the most likely after any input: neither greedy nor sampled
  decoding returns an id the tokenizer does not have."""
  directory = str(tmp_path / "padded")
  hf_model = make_hf_phi(directory, vocab_size=320)
  with torch.no_grad():
    hf_model.lm_head.bias[300] += 100.0
  hf_model.save_pretrained(directory)
  model = phi_jax.from_pretrained(directory, dtype="float32")
  # Without a tokenizer every id of the model is a valid output: 300 wins.
  [raw] = phi_jax.generate(model, [[1, 2, 3]], max_new_tokens=4, eos_token_id=None)
  assert raw.tokens == [300] * 4
  model.tokenizer = byte_level()
  for kwargs in (dict(), dict(temperature=1.0, seed=1), dict(temperature=2.0, top_k=5),
                 dict(temperature=1.0, top_p=0.5)):
    outs = phi_jax.generate(model, ["abc", "xyz"], max_new_tokens=16, eos_token_id=None,
                            **kwargs)
    assert all(0 <= t < 257 for out in outs for t in out.tokens), kwargs
  assert max(_sample_logits(jnp.asarray([[0.0, 1.0, 50.0]]), jax.random.PRNGKey(0),
                            jnp.zeros((1,)), jnp.ones((1,)), jnp.zeros((1,), jnp.int32),
                            2)) == 1


def test_sampling_params_validation():
  with pytest.raises(ValueError, match="temperature"):
    sampling.SamplingParams(temperature=-1.0)
  with pytest.raises(ValueError, match="top_p"):
    sampling.SamplingParams(top_p=0.0)
  with pytest.raises(ValueError, match="top_k"):
    sampling.SamplingParams(top_k=-1)


# ----------------------------------------------------------------------------- stopping


def _greedy_text(model, prompt, new_tokens=NEW_TOKENS):
  [out] = phi_jax.generate(model, [prompt], max_new_tokens=new_tokens, eos_token_id=None)
  assert out.finish_reason == "length" and len(out.tokens) == new_tokens
  return out.tokens, model.tokenizer.decode(out.tokens)


def _first_new_substrings(text, start, width=2):
  """(index, s) for ASCII printable substrings of text whose first occurrence is index."""
  for j in range(start, len(text) - width + 1):
    s = text[j:j + width]
    if s.isascii() and s.isprintable() and text.find(s) == j:
      yield j, s


@pytest.mark.parametrize("chunk_size", [16, 4])
def test_stop_string_is_cut_and_finishes_with_stop(byte_model, chunk_size):
  tokenizer = byte_model.tokenizer
  tokens, text = _greedy_text(byte_model, BYTE_PROMPTS[0])
  candidates = list(_first_new_substrings(text, start=3))
  assert len(candidates) >= 2, f"greedy text too uniform to test stop strings: {text!r}"
  (early_at, early), (late_at, late) = candidates[0], candidates[-1]

  for stops, cut in (([late], late_at), ([late, early], early_at)):
    [out] = phi_jax.generate(byte_model, [BYTE_PROMPTS[0]], max_new_tokens=NEW_TOKENS,
                             stop=stops, eos_token_id=None, chunk_size=chunk_size)
    assert out.finish_reason == "stop"
    assert out.text == text[:cut]
    assert not any(s in out.text for s in stops)
    # tokens: the shortest greedy prefix whose text contains a stop string
    n = next(n for n in range(1, len(tokens) + 1)
             if any(s in tokenizer.decode(tokens[:n]) for s in stops))
    assert out.tokens == tokens[:n]
    assert out.prompt_tokens == len(tokenizer.encode(BYTE_PROMPTS[0]))


def test_stop_string_never_generated_finishes_with_length(byte_model):
  tokens, text = _greedy_text(byte_model, BYTE_PROMPTS[0])
  stop = "\x00never\x00"
  assert stop not in text
  [out] = phi_jax.generate(byte_model, [BYTE_PROMPTS[0]], max_new_tokens=NEW_TOKENS, stop=[stop],
                           eos_token_id=None)
  assert (out.tokens, out.text, out.finish_reason) == (tokens, text, "length")


def test_eos_token_stops_a_row(byte_model):
  tokens, _ = _greedy_text(byte_model, BYTE_PROMPTS[0])
  j = next(j for j in range(2, len(tokens)) if tokens[j] not in tokens[:j])
  eos = tokens[j]
  [out] = phi_jax.generate(byte_model, [BYTE_PROMPTS[0]], max_new_tokens=NEW_TOKENS,
                           eos_token_id=eos, chunk_size=4)
  assert out.finish_reason == "stop"
  assert out.tokens == tokens[:j + 1]  # the end-of-text token is kept in tokens ...
  assert out.text == byte_model.tokenizer.decode(tokens[:j])  # ... but not in the text


@pytest.mark.parametrize("max_new_tokens", [1, 5, 16, 23])
def test_max_new_tokens_gives_length(byte_model, max_new_tokens):
  tokens, _ = _greedy_text(byte_model, BYTE_PROMPTS[1])
  [out] = phi_jax.generate(byte_model, [BYTE_PROMPTS[1]], max_new_tokens=max_new_tokens,
                           eos_token_id=None)
  assert out.finish_reason == "length"
  assert out.tokens == tokens[:max_new_tokens]
  assert out.text == byte_model.tokenizer.decode(tokens[:max_new_tokens])


def test_default_eos_is_the_tokenizers_end_of_text(tmp_path):
  """eos_token_id='auto' stops at <|endoftext|> (256); None generates through it."""
  directory = str(tmp_path / "eos")
  hf_model = make_hf_phi(directory, vocab_size=257)
  with torch.no_grad():  # make <|endoftext|> the greedy choice after any input
    hf_model.lm_head.bias[256] += 100.0
  hf_model.save_pretrained(directory)
  model = phi_jax.from_pretrained(directory, dtype="float32")
  model.tokenizer = byte_level()
  assert model.tokenizer.eos_id == 256
  [out] = phi_jax.generate(model, ["abc"], max_new_tokens=8)
  assert (out.tokens, out.text, out.finish_reason) == ([256], "", "stop")
  [out] = phi_jax.generate(model, ["abc"], max_new_tokens=8, eos_token_id=None)
  assert (out.tokens, out.finish_reason) == ([256] * 8, "length")


def test_rows_in_a_batch_finish_independently(byte_model):
  tokenizer = byte_model.tokenizer
  prompt_a, prompt_b = BYTE_PROMPTS
  tokens_a, _ = _greedy_text(byte_model, prompt_a)
  tokens_b, _ = _greedy_text(byte_model, prompt_b)

  def expected(tokens, eos):
    if eos in tokens:
      j = tokens.index(eos)
      return tokens[:j + 1], "stop"
    return tokens, "length"

  # An end-of-text id that stops row a early but never appears in row b.
  eos = next(t for t in tokens_a[1:] if t not in tokens_b)
  outs = phi_jax.generate(byte_model, [prompt_a, prompt_b, prompt_a], max_new_tokens=NEW_TOKENS,
                          eos_token_id=eos, chunk_size=4)
  for out, tokens in zip(outs, [tokens_a, tokens_b, tokens_a]):
    want_tokens, want_reason = expected(tokens, eos)
    assert (out.tokens, out.finish_reason) == (want_tokens, want_reason)
  assert [o.finish_reason for o in outs] == ["stop", "length", "stop"]

  # A stop string from row b's text: row b stops there, row a runs on unchanged.
  text_b = tokenizer.decode(tokens_b)
  text_a = tokenizer.decode(tokens_a)
  at, stop = next((j, s) for j, s in _first_new_substrings(text_b, start=2) if s not in text_a)
  out_a, out_b, out_b2 = phi_jax.generate(
      byte_model, [prompt_a, prompt_b, prompt_b], max_new_tokens=NEW_TOKENS, stop=[stop],
      eos_token_id=None, chunk_size=4)
  assert out_b2 == out_b
  assert (out_a.tokens, out_a.text, out_a.finish_reason) == (tokens_a, text_a, "length")
  assert (out_b.text, out_b.finish_reason) == (text_b[:at], "stop")
  assert len(out_b.tokens) < NEW_TOKENS


class _CountingTokenizer:
  """byte_level(), counting the tokens it decodes."""

  def __init__(self):
    self.inner = byte_level()
    self.decoded = 0

  def decode(self, ids):
    ids = list(ids)
    self.decoded += len(ids)
    return self.inner.decode(ids)


def test_stop_string_search_decodes_only_the_new_tokens():
  """_Row.hit_stop finds a stop string (here one with a two-byte character, split
  across chunks) no earlier than the whole text has it and at most one chunk later (a
  chunk that ends inside a character waits for it), decoding each token a bounded
  number of times in all."""
  tokenizer = _CountingTokenizer()
  text = "x = 1  # caf\u00e9\n" * 150 + "return caf\u00e9!" + " tail" * 20
  stop = "caf\u00e9!"
  tokens = tokenizer.inner.encode(text)
  request = sampling.Request(prompt=[1], params=GREEDY, max_new_tokens=len(tokens),
                             key=None, tag=0, stop=(stop,))
  for chunk in (1, 3, 16):
    row = sampling._Row(request)
    tokenizer.decoded = 0
    found_at = whole_at = None
    for start in range(0, len(tokens), chunk):
      row.tokens.extend(tokens[start:start + chunk])
      if whole_at is None and stop in tokenizer.inner.decode(row.tokens):
        whole_at = start
      if row.hit_stop(tokenizer):
        found_at = start
        break
    assert whole_at is not None and found_at in (whole_at, whole_at + chunk), chunk
    # Linear in the tokens (decoding the whole text after every chunk would be about
    # n^2 / (2 chunk): 2.5 million tokens for chunk 1).
    assert tokenizer.decoded <= 4 * len(row.tokens) + 16 * chunk, (chunk, tokenizer.decoded)


def test_continuous_batching_refills_free_rows_without_changing_any_row(byte_model):
  """Four requests, two rows: a short request frees its row early and the next one is
  admitted into it while the long one keeps decoding; every row's tokens equal its
  generation alone."""
  prompts = [_tokens(BYTE_PROMPTS[0]), _tokens(BYTE_PROMPTS[1]), _tokens("abc"),
             _tokens("def g(")]
  max_new = [5, NEW_TOKENS, 12, NEW_TOKENS]
  hot = sampling.SamplingParams(temperature=1.0)
  params = [GREEDY, hot, GREEDY, hot]
  alone = [sampling.generate_tokens(byte_model, [p], [q], max_new_tokens=m, seed=[s],
                                    chunk_size=4)[0].tokens
           for p, q, m, s in zip(prompts, params, max_new, [1, 2, 3, 4])]
  finished = []
  outs = sampling.generate_tokens(byte_model, prompts, params, max_new_tokens=max_new,
                                  seed=[1, 2, 3, 4], batch_size=2, chunk_size=4,
                                  on_finish=lambda i, c: finished.append(i))
  assert [o.tokens for o in outs] == alone
  assert finished.index(0) < finished.index(1)  # row 0's slot went to request 2 ...
  assert finished.index(2) < finished.index(1)  # ... which finished before request 1


# ----------------------------------------------------------------------------- per row


GREEDY = sampling.SamplingParams()


def _tokens(text):
  return byte_level().encode(text)


def _per_row_case(byte_model):
  """Rows (A, A, B): A with a stop string hit early, A without stops, B with 7 tokens."""
  tokens_a, text_a = _greedy_text(byte_model, BYTE_PROMPTS[0])
  tokens_b, _ = _greedy_text(byte_model, BYTE_PROMPTS[1])
  early_at, early = next(_first_new_substrings(text_a, start=3))
  prompts = [_tokens(BYTE_PROMPTS[0]), _tokens(BYTE_PROMPTS[0]), _tokens(BYTE_PROMPTS[1])]
  kwargs = dict(max_new_tokens=[NEW_TOKENS, NEW_TOKENS, 7], stop=[[early], [], []],
                tokenizer=byte_model.tokenizer, chunk_size=4)
  expected = [(text_a[:early_at], "stop"), (text_a, "length"),
              (byte_model.tokenizer.decode(tokens_b[:7]), "length")]
  return prompts, kwargs, expected, (tokens_a, tokens_b)


def test_per_row_max_new_tokens_and_stop_strings(byte_model):
  prompts, kwargs, expected, (tokens_a, tokens_b) = _per_row_case(byte_model)
  outs = sampling.generate_tokens(byte_model, prompts, [GREEDY] * 3, **kwargs)
  assert [(o.text, o.finish_reason) for o in outs] == expected
  assert outs[1].tokens == tokens_a and outs[2].tokens == tokens_b[:7]
  [stop] = kwargs["stop"][0]
  n = next(n for n in range(1, NEW_TOKENS) if stop in byte_model.tokenizer.decode(tokens_a[:n]))
  assert outs[0].tokens == tokens_a[:n]


def test_on_chunk_streams_each_rows_tokens_and_on_finish_comes_early(byte_model):
  prompts, kwargs, _, (tokens_a, tokens_b) = _per_row_case(byte_model)
  events = []
  outs = sampling.generate_tokens(
      byte_model, prompts, [GREEDY] * 3, **kwargs,
      on_chunk=lambda i, tokens: events.append(("chunk", i, list(tokens))),
      on_finish=lambda i, completion: events.append(("finish", i, completion)))
  for i, out in enumerate(outs):
    chunks = [e[2] for e in events if e[:2] == ("chunk", i)]
    finishes = [n for n, e in enumerate(events) if e[:2] == ("finish", i)]
    assert len(finishes) == 1 and events[finishes[0]][2] == out
    assert all(0 < len(c) <= 4 for c in chunks)  # after every chunk of 4 decode steps
    assert max(n for n, e in enumerate(events) if e[:2] == ("chunk", i)) < finishes[0]
    streamed = sum(chunks, [])
    assert streamed[:len(out.tokens)] == out.tokens
  assert sum((e[2] for e in events if e[:2] == ("chunk", 1)), []) == tokens_a
  assert sum((e[2] for e in events if e[:2] == ("chunk", 2)), []) == tokens_b[:7]
  # Row 2 (7 tokens) finished while row 1 was still decoding.
  last_of_row_1 = max(n for n, e in enumerate(events) if e[:2] == ("chunk", 1))
  assert events.index(("finish", 2, outs[2])) < last_of_row_1


def test_on_chunk_stops_at_the_end_of_text_token(byte_model):
  tokens, _ = _greedy_text(byte_model, BYTE_PROMPTS[0])
  j = next(j for j in range(2, len(tokens)) if tokens[j] not in tokens[:j])
  streamed = []
  [out] = sampling.generate_tokens(
      byte_model, [_tokens(BYTE_PROMPTS[0])], [GREEDY], max_new_tokens=NEW_TOKENS,
      eos_token_ids=[tokens[j]], chunk_size=4, on_chunk=lambda i, t: streamed.extend(t))
  assert streamed == out.tokens == tokens[:j + 1]


def test_row_samples_depend_only_on_their_seed(byte_model):
  hot = sampling.SamplingParams(temperature=1.0)
  prompts = [_tokens(BYTE_PROMPTS[0]), _tokens(BYTE_PROMPTS[1]), _tokens(BYTE_PROMPTS[0])]
  run = lambda rows, seeds, **kw: [o.tokens for o in sampling.generate_tokens(
      byte_model, [prompts[r] for r in rows], [hot] * len(rows), max_new_tokens=NEW_TOKENS,
      seed=seeds, **kw)]
  together = run([0, 1, 2], [11, 12, 13])
  assert together[0] != together[2]  # same prompt, different seeds
  assert run([0, 1, 2], [11, 12, 13], batch_size=1) == together  # each row alone
  # A shared int seed: row i's key is derived from (seed, i), whatever the batch size.
  shared = run([0, 1, 2], 5)
  assert run([0, 1, 2], 5, batch_size=2) == shared
  assert shared[0] != shared[2]


def test_per_row_argument_errors(byte_model):
  prompt, tokenizer = _tokens("ab"), byte_model.tokenizer
  gen = lambda **kw: sampling.generate_tokens(byte_model, [prompt, prompt], [GREEDY] * 2,
                                              tokenizer=tokenizer, **kw)
  with pytest.raises(ValueError, match="max_new_tokens"):
    gen(max_new_tokens=[4])
  with pytest.raises(ValueError, match="max_new_tokens"):
    gen(max_new_tokens=[4, 0])
  with pytest.raises(ValueError, match="stop lists"):
    gen(max_new_tokens=4, stop=[["a"]])
  with pytest.raises(TypeError, match="stop"):
    gen(max_new_tokens=4, stop="ab")
  with pytest.raises(TypeError, match=r"stop\[1\]"):
    gen(max_new_tokens=4, stop=[["a"], "b"])
  with pytest.raises(ValueError, match="non-empty"):
    gen(max_new_tokens=4, stop=["a", ""])
  with pytest.raises(ValueError, match="seeds"):
    gen(max_new_tokens=4, seed=[1, 2, 3])


# ----------------------------------------------------------------------------- API


def test_num_samples_are_grouped_by_prompt(hf_phi, model):
  _, hf_model = hf_phi
  prompts = _prompts([9, 15, 12], seed=4)
  n = 3
  # Greedy: the samples of prompt i, at [i*n, (i+1)*n), are its greedy continuation;
  # batch_size 4 splits the 9 rows over three batches, cutting prompt 1's samples apart.
  outs = phi_jax.generate(model, prompts, max_new_tokens=NEW_TOKENS, num_samples=n,
                          eos_token_id=None, batch_size=4)
  assert len(outs) == len(prompts) * n
  for i, prompt in enumerate(prompts):
    reference = _hf_greedy(hf_model, prompt)
    for out in outs[i * n:(i + 1) * n]:
      assert out.prompt_tokens == len(prompt)
      assert out.tokens == reference
  # Sampled: grouped the same way, and the samples of one prompt differ.
  outs = phi_jax.generate(model, prompts, max_new_tokens=NEW_TOKENS, num_samples=n,
                          temperature=1.0, eos_token_id=None, seed=5, batch_size=2)
  assert [o.prompt_tokens for o in outs] == [len(p) for p in prompts for _ in range(n)]
  for i in range(len(prompts)):
    group = [tuple(o.tokens) for o in outs[i * n:(i + 1) * n]]
    assert len(set(group)) == n


def test_seed_reproducibility(model):
  prompts = _prompts([14, 9], seed=6)
  run = lambda seed: [o.tokens for o in phi_jax.generate(
      model, prompts, max_new_tokens=NEW_TOKENS, temperature=1.0, seed=seed,
      eos_token_id=None)]
  first = run(0)
  assert run(0) == first
  other = run(1)
  assert all(a != b for a, b in zip(first, other))
  greedy = [o.tokens for o in phi_jax.generate(model, prompts, max_new_tokens=NEW_TOKENS,
                                               eos_token_id=None)]
  assert first != greedy


def test_text_prompts_without_tokenizer_raise(model):
  assert model.tokenizer is None
  with pytest.raises(ValueError, match="tokenizer"):
    phi_jax.generate(model, ["def f():"], max_new_tokens=4)
  with pytest.raises(ValueError, match="tokenizer"):
    phi_jax.generate(model, [[1, 2]], max_new_tokens=4, stop=["\n"])


def test_text_prompts_with_explicit_tokenizer(model):
  tokenizer = byte_level()
  prompt = "ab"  # bytes 97, 98 < vocab 101
  [by_text] = phi_jax.generate(model, [prompt], max_new_tokens=NEW_TOKENS,
                               tokenizer=tokenizer, eos_token_id=None)
  [by_ids] = phi_jax.generate(model, [tokenizer.encode(prompt)], max_new_tokens=NEW_TOKENS,
                              eos_token_id=None)
  assert by_text.tokens == by_ids.tokens
  assert by_text.text == tokenizer.decode(by_ids.tokens)


@pytest.mark.parametrize("prompts", [[[]], [[1, 2], []], [[0, VOCAB]], [[-1, 3]], [[5, 10**6]]])
def test_bad_token_prompts_raise(model, prompts):
  with pytest.raises(ValueError, match="prompt"):
    phi_jax.generate(model, prompts, max_new_tokens=4)


def test_empty_text_prompt_raises(byte_model):
  with pytest.raises(ValueError, match="empty"):
    phi_jax.generate(byte_model, [""], max_new_tokens=4)


def test_bad_arguments_raise(model):
  with pytest.raises(ValueError, match="max_new_tokens"):
    phi_jax.generate(model, [[1]], max_new_tokens=0)
  with pytest.raises(ValueError, match="chunk_size"):
    phi_jax.generate(model, [[1]], max_new_tokens=4, chunk_size=0)
  with pytest.raises(ValueError, match="batch_size"):
    phi_jax.generate(model, [[1]], max_new_tokens=4, batch_size=0)
  with pytest.raises(TypeError):
    phi_jax.generate(model, "a string, not a list", max_new_tokens=4)


def test_generator_resize_and_cancel_leave_the_other_rows_unchanged(byte_model):
  """A row decodes while the generator grows from one row to four and two requests
  join; one is cancelled midway (its row is taken by the next request); the generator
  shrinks back once idle. Every finished row equals its generation alone."""
  prompts = [_tokens(BYTE_PROMPTS[0]), _tokens(BYTE_PROMPTS[1]), _tokens("abc"),
             _tokens("def g(")]
  hot = sampling.SamplingParams(temperature=1.0)
  params, max_new, seeds = [GREEDY, hot, GREEDY, hot], [NEW_TOKENS, 24, NEW_TOKENS, 12], [
      1, 2, 3, 4]
  alone = [sampling.generate_tokens(byte_model, [p], [q], max_new_tokens=m, seed=[s],
                                    chunk_size=4)[0].tokens
           for p, q, m, s in zip(prompts, params, max_new, seeds)]
  requests = [sampling.Request(p, q, m, key=sampling.row_key(s), tag=i)
              for i, (p, q, m, s) in enumerate(zip(prompts, params, max_new, seeds))]
  generator = sampling.Generator(byte_model, rows=1, chunk_size=4)
  done = {}
  step = lambda: generator.step(on_finish=lambda tag, c: done.__setitem__(tag, c.tokens))
  generator.add(requests[0])
  step()
  generator.resize(4)
  for request in requests[1:3]:
    generator.add(request)
  step()
  assert generator.active == 3
  with pytest.raises(ValueError, match="row 2 is decoding"):
    generator.resize(2)
  assert generator.cancel(1) and not generator.cancel(1) and not generator.cancel("none")
  assert generator.active == 2
  generator.add(requests[3])
  while not generator.idle:
    step()
  assert set(done) == {0, 2, 3}
  assert [done[i] for i in (0, 2, 3)] == [alone[i] for i in (0, 2, 3)]
  generator.resize(1)
  assert generator.rows == 1
  generator.add(requests[2])
  while not generator.idle:
    step()
  assert done[2] == alone[2]


def _compiled_count(generator):
  """Compiled variants of the generator's prefill and decode programs so far."""
  return generator._prefill._cache_size() + generator._decode._cache_size()


def test_warm_up_compiles_what_a_full_batch_of_that_shape_runs_and_leaves_no_trace(
    byte_model):
  """After warm_up(8, 24) on 2 rows, two 8-token prompts generating 24 tokens compile
  nothing new, and they generate what they generate without a warm-up, end-of-text
  included (the warm-up ignores it, the real rows do not)."""
  eos = byte_level().eos_id
  prompts = [_tokens("def f(x)"), _tokens("import o")]
  assert {len(p) for p in prompts} == {8}
  hot = sampling.SamplingParams(temperature=1.0)
  alone = [sampling.generate_tokens(byte_model, [p], [hot], max_new_tokens=24, seed=[s],
                                    chunk_size=4, eos_token_ids=[eos])[0].tokens
           for s, p in enumerate(prompts)]
  generator = sampling.Generator(byte_model, rows=2, chunk_size=4, eos_token_ids=[eos])
  generator.warm_up(8, 24)
  assert generator.idle and generator.max_len >= 32
  compiled = _compiled_count(generator)
  done = {}
  for s, p in enumerate(prompts):
    generator.add(sampling.Request(p, hot, 24, key=sampling.row_key(s), tag=s))
  while not generator.idle:
    generator.step(on_finish=lambda tag, c: done.__setitem__(tag, c.tokens))
  assert _compiled_count(generator) == compiled
  assert [done[0], done[1]] == alone
  with pytest.raises(ValueError, match="must be >= 1"):
    generator.warm_up(0, 4)
  generator.add(sampling.Request(prompts[0], hot, 4, key=sampling.row_key(0), tag="busy"))
  with pytest.raises(RuntimeError, match="idle"):
    generator.warm_up(8, 4)
