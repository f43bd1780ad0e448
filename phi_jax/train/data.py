"""The interim training data: a token array built from documents, and its batches.

Until the real data pipeline lands, training reads a `TokenSource`: documents (the
Python standard library's .py files, a .jsonl with a "text" field, or a directory of
.py files) are tokenized, each followed by `<|endoftext|>`, and concatenated into one
int32 array per split, cached under the stage directory:

    <cache_dir>/tokens-<split>.npy    the token stream
    <cache_dir>/tokens-<split>.json   what it was built from (written last: the
                                      completion marker; a matching one is reused)

`BatchIterator` slices the stream into non-overlapping sequences of exactly seq_len
tokens (the paper's packing: sequences cross document boundaries; the tail shorter
than seq_len is dropped), shuffles them once per epoch by (seed, epoch) and yields
{"tokens", "loss_mask"} batches of numpy arrays. Each host reads only its rows of the
global batch. Its state (epoch, position, seed) is JSON, so a restored iterator yields
exactly the batch an uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
import tempfile
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from phi_jax import atomic
from phi_jax.jsonl import read_jsonl
from phi_jax.tokenizer import Tokenizer

SPLITS = ("train", "validation")
CACHE_VERSION = 1
_SKIP_DIRS = ("site-packages", "dist-packages", "__pycache__")


class DataError(ValueError):
  """The data source is missing, empty or too small for the requested batches."""


# ---------------------------------------------------------------------- documents
def _read_py_file(path: str) -> str | None:
  """The text of a .py file, or None when it is unreadable or not UTF-8 text."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError:
    return None
  if b"\0" in raw:
    return None
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError:
    return None


def _py_files(root: str) -> list[str]:
  """Sorted paths (relative to root) of the .py files under root, packages skipped."""
  found = []
  for directory, subdirs, files in os.walk(root):
    subdirs[:] = sorted(d for d in subdirs if d not in _SKIP_DIRS)
    found.extend(os.path.relpath(os.path.join(directory, name), root)
                 for name in files if name.endswith(".py"))
  return sorted(found)


def _sample_files(root: str, max_documents: int, seed: int) -> list[tuple[str, str]]:
  """(relative path, text) of a seeded sample of readable .py files, sorted by path."""
  paths = _py_files(root)
  order = (np.random.default_rng(seed).permutation(len(paths)) if max_documents
           else range(len(paths)))
  documents = []
  for index in order:
    text = _read_py_file(os.path.join(root, paths[index]))
    if text:
      documents.append((paths[index], text))
      if max_documents and len(documents) == max_documents:
        break
  return sorted(documents)


def _read_jsonl(path: str, max_documents: int, seed: int) -> list[tuple[str, str]]:
  documents = []
  for number, row in read_jsonl(path, error=DataError):
    if "text" not in row:
      raise DataError(f"{path}:{number}: expected a JSON object with a \"text\" field")
    documents.append((f"line:{number}", str(row["text"])))
  if max_documents and len(documents) > max_documents:
    keep = np.sort(np.random.default_rng(seed).permutation(len(documents))[:max_documents])
    documents = [documents[i] for i in keep]
  return documents


def load_documents(source: str, max_documents: int, seed: int) -> list[tuple[str, str]]:
  """(key, text) of every document of config.data.source; key is stable per document."""
  if source == "stdlib":
    return _sample_files(sysconfig.get_paths()["stdlib"], max_documents, seed)
  if os.path.isfile(source) and source.endswith(".jsonl"):
    return _read_jsonl(source, max_documents, seed)
  if os.path.isdir(source):
    return _sample_files(source, max_documents, seed)
  raise DataError(f"config.data.source = {source!r}: expected 'stdlib', a .jsonl file with "
                  f"a \"text\" field per line, or a directory of .py files")


def _hash_fraction(key: str) -> float:
  """A stable number in [0, 1) per document key (the same on every machine and run)."""
  return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


def split_documents(documents: list[tuple[str, str]], validation_fraction: float,
                    split: str) -> list[tuple[str, str]]:
  """The documents of one split: validation holds those whose key hashes below the
  fraction (at least one document when the fraction is > 0 and there are two or more)."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  held_out = {key for key, _ in documents if _hash_fraction(key) < validation_fraction}
  if validation_fraction > 0 and not held_out and len(documents) > 1:
    held_out = {min((key for key, _ in documents), key=_hash_fraction)}
  want_held_out = split == "validation"
  return [(key, text) for key, text in documents if (key in held_out) == want_held_out]


# ---------------------------------------------------------------------- the token array
def _save_npy_atomic(array: np.ndarray, path: str) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      np.save(f, array)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


class TokenSource:
  """One split of config.data as a flat int32 token array (built once, cached).

  Args:
    data_config: config.data (source, max_documents, validation_fraction).
    tokenizer: the model's tokenizer; it must have `<|endoftext|>`.
    seq_len: tokens per training sequence (checked: the split needs at least one).
    split: 'train' or 'validation'.
    seed: seeds the document sample (config.seed).
    cache_dir: where tokens-<split>.npy/.json live; None = build in memory only.
  """

  def __init__(self, data_config: Any, tokenizer: Tokenizer, seq_len: int, split: str = "train",
               seed: int = 0, cache_dir: str | None = None):
    if tokenizer.eos_id is None:
      raise DataError("the tokenizer has no <|endoftext|> token to join documents with")
    if not 0.0 <= float(data_config.validation_fraction) < 1.0:
      raise DataError(f"config.data.validation_fraction = {data_config.validation_fraction}: "
                      f"must be in [0, 1)")
    self.split = split
    self.seq_len = int(seq_len)
    self.built_from = {
        "version": CACHE_VERSION, "split": split, "seed": int(seed),
        "source": os.path.abspath(data_config.source) if data_config.source != "stdlib"
                  else "stdlib:" + sysconfig.get_paths()["stdlib"],
        "max_documents": int(data_config.max_documents),
        "validation_fraction": float(data_config.validation_fraction),
        "tokenizer_sha256": hashlib.sha256(tokenizer.to_json_str().encode()).hexdigest(),
    }
    self.tokens = self._load_or_build(data_config, tokenizer, seed, cache_dir)
    if len(self.tokens) < self.seq_len:
      raise DataError(
          f"the {split} split of config.data.source={data_config.source!r} has "
          f"{len(self.tokens)} tokens, fewer than one sequence of seq_len={seq_len}; use more "
          f"documents (config.data.max_documents, validation_fraction) or a shorter seq_len")

  @property
  def num_sequences(self) -> int:
    return len(self.tokens) // self.seq_len

  def _load_or_build(self, data_config, tokenizer, seed, cache_dir) -> np.ndarray:
    if cache_dir is not None:
      array_path = os.path.join(cache_dir, f"tokens-{self.split}.npy")
      info_path = os.path.join(cache_dir, f"tokens-{self.split}.json")
      cached = self._cached(array_path, info_path)
      if cached is not None:
        return cached
    documents = split_documents(
        load_documents(data_config.source, int(data_config.max_documents), int(seed)),
        float(data_config.validation_fraction), self.split)
    if not documents:
      raise DataError(f"the {self.split} split of config.data.source={data_config.source!r} "
                      f"has no documents")
    eos = tokenizer.eos_id
    pieces = []
    for ids in tokenizer.encode_batch([text for _, text in documents]):
      pieces.append(np.asarray(ids, np.int32))
      pieces.append(np.asarray([eos], np.int32))
    tokens = np.concatenate(pieces)
    if cache_dir is not None:
      _save_npy_atomic(tokens, array_path)
      info = dict(self.built_from, documents=len(documents), tokens=int(len(tokens)))
      atomic.write_json(info, info_path)  # last: the array above is complete
    return tokens

  def _cached(self, array_path: str, info_path: str) -> np.ndarray | None:
    if not (os.path.isfile(array_path) and os.path.isfile(info_path)):
      return None
    try:
      with open(info_path) as f:
        info = json.load(f)
    except (OSError, json.JSONDecodeError):
      return None
    if {k: info.get(k) for k in self.built_from} != self.built_from:
      return None
    tokens = np.load(array_path, mmap_mode="r")
    if tokens.dtype != np.int32 or tokens.ndim != 1 or len(tokens) != info.get("tokens"):
      return None
    return tokens


# ---------------------------------------------------------------------- batches
class BatchIterator:
  """Deterministic, resumable, host-sharded batches of seq_len-token sequences.

  The sequences are the non-overlapping windows tokens[i*seq_len:(i+1)*seq_len]. Epoch
  e visits all of them once in the order np.random.default_rng([seed, e]).permutation;
  batches run on across epoch boundaries, so every sequence appears exactly once per
  epoch. Host `shard_index` of `shard_count` gets rows [shard_index*b, (shard_index+1)*b)
  of each global batch (b = batch_size // shard_count) and reads only those.

  Batches: {"tokens": int32 [b, seq_len], "loss_mask": int32 [b, seq_len]} with the
  mask all ones (the loss at position t, predicting token t+1, counts iff
  loss_mask[t+1] == 1; the last position of each sequence has no target).
  """

  def __init__(self, source: TokenSource, batch_size: int, seed: int = 0,
               shard_index: int | None = None, shard_count: int | None = None):
    self.source = source
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.shard_index = jax.process_index() if shard_index is None else int(shard_index)
    self.shard_count = jax.process_count() if shard_count is None else int(shard_count)
    if self.batch_size <= 0 or self.batch_size % self.shard_count:
      raise DataError(f"batch_size={batch_size} must be a positive multiple of the number of "
                      f"hosts ({self.shard_count})")
    if not 0 <= self.shard_index < self.shard_count:
      raise DataError(f"shard_index={shard_index} not in [0, {self.shard_count})")
    self.epoch = 0
    self.position = 0  # sequences of this epoch already consumed (all hosts together)
    self._order_epoch, self._order = None, None

  def _permutation(self, epoch: int) -> np.ndarray:
    if self._order_epoch != epoch:
      self._order = np.random.default_rng([self.seed, epoch]).permutation(
          self.source.num_sequences)
      self._order_epoch = epoch
    return self._order

  def _next_indices(self) -> list[int]:
    """The sequence indices of the next global batch (advances the state)."""
    indices = []
    while len(indices) < self.batch_size:
      order = self._permutation(self.epoch)
      take = min(self.batch_size - len(indices), len(order) - self.position)
      indices.extend(order[self.position:self.position + take].tolist())
      self.position += take
      if self.position == len(order):
        self.epoch, self.position = self.epoch + 1, 0
    return indices

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    indices = self._next_indices()
    per_host = self.batch_size // self.shard_count
    mine = indices[self.shard_index * per_host:(self.shard_index + 1) * per_host]
    seq_len, tokens = self.source.seq_len, self.source.tokens
    rows = np.stack([np.asarray(tokens[i * seq_len:(i + 1) * seq_len]) for i in mine])
    return {"tokens": rows.astype(np.int32), "loss_mask": np.ones_like(rows, np.int32)}

  def get_state(self) -> dict:
    return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
            "batch_size": self.batch_size, "num_sequences": self.source.num_sequences}

  def set_state(self, state: dict) -> None:
    """Continues from `state` (get_state of an iterator over the same data)."""
    if int(state["seed"]) != self.seed:
      raise DataError(f"data iterator state has seed {state['seed']}, this run uses "
                      f"{self.seed}")
    stored = state.get("num_sequences")
    if stored is not None and int(stored) != self.source.num_sequences:
      raise DataError(f"data iterator state is for {stored} sequences but the data now has "
                      f"{self.source.num_sequences}: the data or seq_len changed since the "
                      f"checkpoint")
    self.epoch, self.position = int(state["epoch"]), int(state["position"])
