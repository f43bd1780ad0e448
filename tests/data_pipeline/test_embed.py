"""data_pipeline.embed: mean-pooled final hidden states, checked against brute force,
batching/bucketing invariance, and the transformers import path."""

import functools
import os

import jax
import numpy as np
import pytest
from flax import nnx

from data_pipeline import embed as embed_lib
from data_pipeline.embed import (Embedder, bucket_lengths, l2_normalize, load_embeddings,
                                 save_embeddings)
from phi_jax import tokenizer as tokenizer_lib
from phi_jax.config import PhiConfig
from tests.conftest import phi_logits, random_model

CONFIG = PhiConfig(vocab_size=320, d_model=64, num_layers=2, num_heads=2, mlp_dim=128,
                   rotary_dim=16, max_seq_len=128, dtype="float32")
MAX_LEN = 96

TEXTS = [
    "def add(a, b):\n  return a + b\n",
    "x",
    "",                                                     # no tokens: a zero row
    "class Point:\n  def __init__(self, x, y):\n    self.x, self.y = x, y\n",
    "for i in range(10):\n  print(i * i)\n" * 8,             # longer than MAX_LEN tokens
]


@pytest.fixture(scope="module")
def model():
  return random_model(CONFIG, seed=3)


@pytest.fixture(scope="module")
def embedder(model):
  return Embedder(model, tokenizer_lib.byte_level(), min_bucket=16)


@functools.partial(jax.jit, static_argnums=0)
def _hidden_states(graphdef, state, tokens_BT):
  return nnx.merge(graphdef, state).hidden_states(tokens_BT)


def brute_force_embedding(model, tokenizer, text, max_len):
  """The numpy mean of the model's final hidden states over the text alone (no padding)."""
  ids = tokenizer.encode(text)[:max_len]
  if not ids:
    return np.zeros(model.config.d_model, np.float32)
  hidden_TE = np.asarray(_hidden_states(*nnx.split(model), np.asarray([ids], np.int32)))[0]
  return hidden_TE.astype(np.float64).mean(axis=0)


def test_hidden_states_are_the_logits_path_without_the_head(model):
  tokens_BT = np.asarray([tokenizer_lib.byte_level().encode(TEXTS[0])], np.int32)
  hidden_BTE = _hidden_states(*nnx.split(model), tokens_BT)
  assert hidden_BTE.shape == (1, tokens_BT.shape[1], CONFIG.d_model)
  np.testing.assert_allclose(np.asarray(model.lm_head(hidden_BTE)), phi_logits(model, tokens_BT),
                             rtol=1e-5, atol=1e-5)
  # After the final LayerNorm: each position is scale * normalised + bias.
  h = np.asarray(hidden_BTE)[0]
  scale = np.asarray(model.final_norm.scale[...])
  bias = np.asarray(model.final_norm.bias[...])
  normalised = (h - bias) / scale
  np.testing.assert_allclose(normalised.mean(-1), 0.0, atol=1e-4)
  np.testing.assert_allclose(normalised.std(-1), 1.0, atol=1e-3)


def test_mean_pooling_matches_brute_force_per_example(model, embedder):
  x_ND = embedder.embed(TEXTS, batch_size=4, max_len=MAX_LEN, progress=False)
  assert x_ND.shape == (len(TEXTS), CONFIG.d_model) and x_ND.dtype == np.float32
  for i, text in enumerate(TEXTS):
    expected = brute_force_embedding(model, embedder.tokenizer, text, MAX_LEN)
    np.testing.assert_allclose(x_ND[i], expected, rtol=1e-4, atol=1e-5, err_msg=repr(text))
  assert not x_ND[2].any()  # the empty text
  assert len(embedder.tokenizer.encode(TEXTS[4])) > MAX_LEN  # it was truncated


def test_batching_padding_and_bucketing_do_not_change_embeddings(model):
  tokenizer = tokenizer_lib.byte_level()
  reference = Embedder(model, tokenizer, min_bucket=MAX_LEN).embed(
      TEXTS, batch_size=1, max_len=MAX_LEN, progress=False)
  for batch_size, min_bucket in ((2, 8), (16, 32)):
    embedder = Embedder(model, tokenizer, min_bucket=min_bucket, devices=jax.devices()[:1])
    x_ND = embedder.embed(TEXTS, batch_size=batch_size, max_len=MAX_LEN, progress=False)
    np.testing.assert_allclose(x_ND, reference, rtol=1e-4, atol=1e-5)
    # Fixed shapes: one compilation per bucket, whatever the number of batches.
    buckets = bucket_lengths(MAX_LEN, min(min_bucket, MAX_LEN))
    assert embedder.compiled_shapes <= {(batch_size, b) for b in buckets}
    assert len(embedder.compiled_shapes) == (2 if batch_size == 2 else 1)  # 32 and 96
  reversed_x = Embedder(model, tokenizer, min_bucket=8, devices=jax.devices()[:1]).embed(
      TEXTS[::-1], batch_size=2, max_len=MAX_LEN, progress=False)
  np.testing.assert_allclose(reversed_x[::-1], reference, rtol=1e-4, atol=1e-5)  # input order


def test_bucket_lengths_and_normalisation():
  assert bucket_lengths(512, 32) == [32, 64, 128, 256, 512]
  assert bucket_lengths(96, 16) == [16, 32, 64, 96]
  assert bucket_lengths(8, 32) == [8]
  x = np.asarray([[3.0, 4.0], [0.0, 0.0]])
  np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])


def test_embed_rejects_bad_arguments(embedder):
  with pytest.raises(ValueError, match="max_len 200 exceeds the model's max_seq_len 128"):
    embedder.embed(["x"], max_len=200)
  with pytest.raises(ValueError, match="batch_size"):
    embedder.embed(["x"], batch_size=0)
  with pytest.raises(TypeError, match=r"texts\[1\]"):
    embedder.embed(["x", None], max_len=8)
  with pytest.raises(ValueError, match="no tokenizer"):
    Embedder(random_model(CONFIG))


def test_hf_checkpoint_embeddings_match_transformers(hf_phi_dir, tmp_path):
  import torch

  directory, torch_model = hf_phi_dir(vocab_size=320, hidden_size=64, intermediate_size=128,
                                      num_attention_heads=4)
  tokenizer = tokenizer_lib.byte_level()
  tokenizer.save(directory)  # stored with the weights: from_pretrained picks it up
  embedder = Embedder.from_pretrained(directory, dtype="float32")
  assert embedder.source == directory and embedder.d_model == 64
  texts = ["def f(x):\n  return x + 1\n", "print('hi')", "a = [1, 2, 3]\n" * 3]
  x_ND = embedder.embed(texts, batch_size=2, max_len=32, normalize=True, progress=False)
  for i, text in enumerate(texts):
    ids = torch.tensor([tokenizer.encode(text)[:32]])
    with torch.no_grad():
      hidden = torch_model.model(input_ids=ids).last_hidden_state[0].double().numpy()
    expected = hidden.mean(axis=0)
    np.testing.assert_allclose(x_ND[i], expected / np.linalg.norm(expected), atol=2e-5)
  np.testing.assert_allclose(np.linalg.norm(x_ND, axis=1), 1.0, rtol=1e-5)


def test_codegen_checkpoint_embeddings_match_transformers_in_every_host_block(tmp_path):
  """The paper's embedder is CodeGen-350M: a transformers CodeGen directory with its own
  tokenizer embeds as transformers' mean-pooled last hidden states, and the hosts'
  blocks (embed_block) are embed's rows bit for bit."""
  import torch
  from tests.conftest import make_hf_codegen

  directory = str(tmp_path / "codegen")
  torch_model = make_hf_codegen(directory)
  embedder = embed_lib.make_embedder(directory, CONFIG.to_dict(), max_len=32, dtype="float32",
                                     devices=jax.devices()[:1])
  assert embedder.source == directory and embedder.d_model == 64
  assert embedder.model.config.architecture == "codegen"
  texts = TEXTS * 2
  whole = embedder.embed(texts, batch_size=2, max_len=32, progress=False)
  for i, text in enumerate(texts):
    ids = embedder.tokenizer.encode(text)[:32]
    if not ids:
      assert not whole[i].any()
      continue
    with torch.no_grad():
      hidden = torch_model.transformer(input_ids=torch.tensor([ids])).last_hidden_state
    np.testing.assert_allclose(whole[i], hidden[0].double().numpy().mean(axis=0), atol=2e-5)
  rows, x_RD = [], []
  for shard_index in range(3):
    rows_R, block_RD = embedder.embed_block(texts, 2, 32, shard_index=shard_index,
                                            num_shards=3, progress=False)
    rows.append(rows_R)
    x_RD.append(block_RD)
  rows_R = np.concatenate(rows)
  assert np.array_equal(np.concatenate(x_RD), whole[rows_R])


def test_embeddings_round_trip_through_a_file(tmp_path):
  x_ND = np.random.RandomState(0).standard_normal((3, 5)).astype(np.float32)
  path = str(tmp_path / "emb" / "x.npz")
  save_embeddings(path, ["a", 7, "c"], x_ND, source="test")
  ids, loaded = load_embeddings(path)
  assert ids == ["a", 7, "c"]
  np.testing.assert_array_equal(loaded, x_ND)
  with pytest.raises(ValueError, match="2 ids but embeddings of shape"):
    save_embeddings(path, ["a", "b"], x_ND)
  (tmp_path / "bad.npz").write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="bad.npz: not an embeddings file"):
    load_embeddings(str(tmp_path / "bad.npz"))


def test_make_embedder_random_init_fits_the_byte_level_tokenizer():
  from data_pipeline.embed import make_embedder  # pylint: disable=g-import-not-at-top
  shape = dict(vocab_size=64, d_model=32, num_layers=1, num_heads=2, mlp_dim=64,
               rotary_dim=8, max_seq_len=64, dtype="float32")
  embedder = make_embedder("", shape, max_len=128, seed=3)
  assert embedder.source.startswith("random-init (seed 3)")
  assert embedder.model.config.vocab_size >= embedder.tokenizer.vocab_size == 257
  assert embedder.model.config.max_seq_len == 128 and embedder.d_model == 32
  assert embedder.embed(["def f(): pass"], max_len=128, progress=False).shape == (1, 32)


def test_batches_split_over_the_local_devices_give_the_same_embeddings(model):
  tokenizer = tokenizer_lib.byte_level()
  reference = Embedder(model, tokenizer, devices=jax.devices()[:1]).embed(
      TEXTS, batch_size=1, max_len=MAX_LEN, progress=False)
  embedder = Embedder(model, tokenizer, min_bucket=8)  # default: jax.local_devices()
  assert embedder.devices == jax.local_devices() and len(embedder.devices) == 8
  x_ND = embedder.embed(TEXTS, batch_size=3, max_len=MAX_LEN, progress=False)
  np.testing.assert_allclose(x_ND, reference, rtol=1e-4, atol=1e-5)
  assert {batch for batch, _ in embedder.compiled_shapes} == {8}  # 3 rounded up to 8


def test_embed_chunks_streams_in_input_order(model):
  tokenizer = tokenizer_lib.byte_level()
  embedder = Embedder(model, tokenizer, min_bucket=8, devices=jax.devices()[:2])
  whole = embedder.embed(TEXTS, batch_size=2, max_len=MAX_LEN, progress=False)
  pulled = []

  def texts():
    for text in TEXTS:
      pulled.append(text)
      yield text

  chunks = embed_lib.embed_chunks(embedder, texts(), chunk_size=2, batch_size=2,
                                  max_len=MAX_LEN)
  first = next(chunks)
  assert first.shape == (2, CONFIG.d_model) and len(pulled) == 2  # nothing read ahead
  streamed = np.concatenate([first, *chunks])
  np.testing.assert_allclose(streamed, whole, rtol=1e-4, atol=1e-5)


def test_the_blocks_of_embed_block_are_embed_bit_for_bit(model):
  embedder = Embedder(model, tokenizer_lib.byte_level(), min_bucket=8,
                      devices=jax.devices()[:1])
  texts = TEXTS * 3  # 15 texts, 3 of them empty: 6 batches of 2
  whole = embedder.embed(texts, batch_size=2, max_len=MAX_LEN, progress=False)
  for num_shards in (1, 2, 4, 9):  # 9: more hosts than batches
    rows, x_RD = [], []
    for shard_index in range(num_shards):
      rows_R, block_RD = embedder.embed_block(texts, 2, MAX_LEN, shard_index=shard_index,
                                              num_shards=num_shards, progress=False)
      rows.append(rows_R)
      x_RD.append(block_RD)
    rows_R = np.concatenate(rows)
    assert sorted(rows_R.tolist()) == [i for i, t in enumerate(texts) if t]  # each once
    assert np.array_equal(np.concatenate(x_RD), whole[rows_R])


def test_embed_to_file_gathers_the_hosts_blocks_in_order(model, tmp_path):
  from tests.data_pipeline.test_host_blocks import ThreadHosts
  embedder = Embedder(model, tokenizer_lib.byte_level(), min_bucket=8,
                      devices=jax.devices()[:1])
  ids = [f"doc{i}" for i in range(len(TEXTS) * 2)]
  texts = TEXTS * 2
  one = str(tmp_path / "one" / "embeddings.npz")
  assert embed_lib.embed_to_file(embedder, ids, texts, one, batch_size=2,
                                 max_len=MAX_LEN) == CONFIG.d_model
  want_ids, want = load_embeddings(one)
  assert want_ids == ids and np.array_equal(
      want, embedder.embed(texts, batch_size=2, max_len=MAX_LEN, progress=False))
  three = str(tmp_path / "three" / "embeddings.npz")

  def host(index, sync):
    return embed_lib.embed_to_file(embedder, ids, texts, three, batch_size=2, max_len=MAX_LEN,
                                   shard_index=index, num_shards=3, sync=sync)

  assert ThreadHosts(3).run(host) == [CONFIG.d_model] * 3
  got_ids, got = load_embeddings(three)
  assert got_ids == ids and np.array_equal(got, want)
  assert os.listdir(tmp_path / "three") == ["embeddings.npz"]  # the parts removed
