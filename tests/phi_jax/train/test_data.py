"""The interim token source: splits, caching, per-epoch coverage, resumable sharded batches."""

import json
import os

import ml_collections
import numpy as np
import pytest

from phi_jax import tokenizer as tokenizer_lib
from phi_jax.train import data

SEQ_LEN = 64


def data_config(**overrides):
  config = ml_collections.ConfigDict(dict(source="stdlib", max_documents=20,
                                          validation_fraction=0.1))
  config.update(overrides)
  return config


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  return data.TokenSource(data_config(), tokenizer_lib.byte_level(), SEQ_LEN, "train", seed=0,
                          cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_splits_are_disjoint_and_cached(tmp_path):
  tok = tokenizer_lib.byte_level()
  train = data.TokenSource(data_config(), tok, SEQ_LEN, "train", cache_dir=str(tmp_path))
  val = data.TokenSource(data_config(), tok, SEQ_LEN, "validation", cache_dir=str(tmp_path))
  info = {s: json.load(open(tmp_path / f"tokens-{s}.json")) for s in data.SPLITS}
  assert info["train"]["documents"] + info["validation"]["documents"] == 20
  assert info["validation"]["documents"] >= 1
  assert len(train.tokens) == info["train"]["tokens"]
  assert len(val.tokens) == info["validation"]["tokens"] > 0
  assert train.tokens[-1] == tok.eos_id and train.tokens.dtype == np.int32
  docs = data.load_documents("stdlib", 20, 0)
  held_out = {k for k, _ in data.split_documents(docs, 0.1, "validation")}
  assert held_out and not held_out & {k for k, _ in data.split_documents(docs, 0.1, "train")}
  # Reused from the cache (memory-mapped), identical.
  again = data.TokenSource(data_config(), tok, SEQ_LEN, "train", cache_dir=str(tmp_path))
  assert isinstance(again.tokens, np.memmap) and np.array_equal(again.tokens, train.tokens)
  assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
  # Another config builds anew.
  other = data.TokenSource(data_config(max_documents=10), tok, SEQ_LEN, "train",
                           cache_dir=str(tmp_path))
  assert len(other.tokens) < len(train.tokens)


def test_jsonl_and_errors(tmp_path):
  path = tmp_path / "docs.jsonl"
  path.write_text("".join(json.dumps({"text": "x = 1\n" * 40}) + "\n" for _ in range(5)))
  tok = tokenizer_lib.byte_level()
  src = data.TokenSource(data_config(source=str(path), validation_fraction=0.0), tok, SEQ_LEN)
  assert len(src.tokens) == 5 * (240 + 1)
  (tmp_path / "bad.jsonl").write_text('{"content": 1}\n')
  with pytest.raises(data.DataError, match="bad.jsonl:1"):
    data.TokenSource(data_config(source=str(tmp_path / "bad.jsonl")), tok, SEQ_LEN)
  with pytest.raises(data.DataError, match="fewer than one sequence"):
    data.TokenSource(data_config(source=str(path), validation_fraction=0.0), tok, 100000)
  with pytest.raises(data.DataError, match="config.data.source"):
    data.TokenSource(data_config(source=str(tmp_path / "missing")), tok, SEQ_LEN)


def test_every_sequence_once_per_epoch(source):
  n = source.num_sequences
  it = data.BatchIterator(source, batch_size=4, seed=3, shard_index=0, shard_count=1)
  seen = []
  while len(seen) < n:
    seen.extend(next(it)["tokens"])
  seen = np.stack(seen[:n])
  expected = np.asarray(source.tokens[:n * SEQ_LEN]).reshape(n, SEQ_LEN)
  # Same multiset of rows: sort rows lexicographically and compare.
  key = lambda a: a[np.lexsort(a.T[::-1])]
  assert np.array_equal(key(seen), key(expected))
  # Each token of the stream (bar the short tail) exactly once.
  assert np.array_equal(np.sort(seen.ravel()), np.sort(expected.ravel()))
  assert it.get_state()["epoch"] == 1


def test_restored_iterator_continues_exactly(source):
  it = data.BatchIterator(source, batch_size=4, seed=1, shard_index=0, shard_count=1)
  for _ in range(source.num_sequences // 4 + 3):  # past an epoch boundary
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it)["tokens"] for _ in range(5)]
  restored = data.BatchIterator(source, batch_size=4, seed=1, shard_index=0, shard_count=1)
  restored.set_state(state)
  for want in expected:
    batch = next(restored)
    assert np.array_equal(batch["tokens"], want)
    assert batch["loss_mask"].shape == want.shape and batch["loss_mask"].all()
  with pytest.raises(data.DataError, match="seed"):
    data.BatchIterator(source, 4, seed=2, shard_index=0, shard_count=1).set_state(state)


def test_two_shards_partition_the_batch(source):
  whole = data.BatchIterator(source, 4, seed=0, shard_index=0, shard_count=1)
  halves = [data.BatchIterator(source, 4, seed=0, shard_index=i, shard_count=2) for i in (0, 1)]
  for _ in range(3):
    parts = [next(h)["tokens"] for h in halves]
    assert all(p.shape == (2, SEQ_LEN) for p in parts)
    assert np.array_equal(np.concatenate(parts), next(whole)["tokens"])
  with pytest.raises(data.DataError, match="multiple"):
    data.BatchIterator(source, 3, shard_index=0, shard_count=2)
