"""Text embeddings from a phi_jax model: mean-pooled final hidden states.

THE embedding module of phi_jax: the quality filter (a classifier on embeddings, as
phi-1 used CodeGen-350M's) and the embedding-distance decontamination both use it.

    embedder = Embedder.from_pretrained("workdir/phi1/pretrain/checkpoints")  # or an HF dir
    X_ND = embedder.embed(texts, batch_size=32, max_len=512)    # fp32 [N, d_model]
    X_ND = l2_normalize(X_ND)                                    # for cosine / L2 distances

An embedding is the mean, over the text's real tokens (padding excluded), of the
model's final hidden states: after the final LayerNorm, before the lm_head
(`PhiForCausalLM.hidden_states`), accumulated in fp32. Texts are tokenized, cut to
their first `max_len` tokens, sorted by length and batched; each batch is right-padded
to the smallest of a few bucket lengths (powers of two from `min_bucket`, and max_len)
and the batch dimension to `batch_size`, so the jitted forward compiles once per bucket,
not once per batch. Results come back in input order. A text with no tokens (empty)
gets a zero vector.

At scale each host embeds its own shard on its own accelerators: the embedder runs on
`jax.local_devices()` (or the `devices` given), each padded batch split along the batch
axis over them (batch_size is rounded up to a multiple of the device count), with no
cross-host communication. `embed_chunks` streams: it embeds an iterable of texts a
chunk at a time (length-sorted and bucketed within the chunk), so a host's shard never
has to be in memory; `data_pipeline.classifier.stream_scores` scores records that way.
On several hosts `Embedder.embed_block` embeds one host's block of the length-sorted
batches (bit for bit `embed`'s rows) and `embed_to_file` gathers the hosts' blocks into
one embeddings file (data_pipeline/host_blocks.py).
`make_embedder(..., dtype="bfloat16")` runs the forward in bf16 (pooling stays fp32).

What the embeddings mean depends on the model: the paper's come from a pretrained code
model. A randomly initialised model (`Embedder.from_config`, what the offline tiny
pipeline uses when no pretrained checkpoint is on the machine) gives random features:
a fixed random nonlinear function of the tokens, enough to exercise the pipeline and
to separate surface statistics, not a semantic representation. Point the embedder at
a pretrained checkpoint for the real recipe.
"""

from __future__ import annotations

import functools
import io
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from phi_jax import atomic, hosts
from phi_jax.config import PhiConfig
from phi_jax.model import PhiForCausalLM
from phi_jax.progress import Progress
from phi_jax.tokenizer import Tokenizer

from data_pipeline import host_blocks
from data_pipeline.tokenizer import encode_ids

DEFAULT_MIN_BUCKET = 32


def l2_normalize(x_ND: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  """Rows scaled to unit L2 norm (zero rows stay zero)."""
  x_ND = np.asarray(x_ND, np.float32)
  norms = np.linalg.norm(x_ND, axis=-1, keepdims=True)
  return x_ND / np.maximum(norms, eps)


def bucket_lengths(max_len: int, min_bucket: int = DEFAULT_MIN_BUCKET) -> list[int]:
  """The padded lengths: powers of two from min_bucket below max_len, then max_len."""
  buckets, length = [], min_bucket
  while length < max_len:
    buckets.append(length)
    length *= 2
  return buckets + [max_len]


@functools.partial(jax.jit, static_argnums=0)
def _mean_pooled(graphdef, state, tokens_BT: jax.Array, mask_BT: jax.Array) -> jax.Array:
  """fp32 [B, E]: the mean of the final hidden states over each row's real tokens."""
  model = nnx.merge(graphdef, state)
  hidden_BTE = model.hidden_states(tokens_BT, attention_mask=mask_BT).astype(jnp.float32)
  mask_BT1 = mask_BT.astype(jnp.float32)[:, :, None]
  counts_B1 = jnp.maximum(mask_BT1.sum(axis=1), 1.0)
  return (hidden_BTE * mask_BT1).sum(axis=1) / counts_B1


class Embedder:
  """Embeds texts with a phi_jax model (see the module docstring).

  Args:
    model: a PhiForCausalLM (any size, any dtype; pooling is in fp32).
    tokenizer: default: `model.tokenizer` (set by from_pretrained when stored).
    min_bucket: the shortest padded length.
    source: what the model is, for records and reports (a path, or 'random-init').
    devices: the devices a batch is split over (default: this host's,
      `jax.local_devices()`); the parameters are replicated on each.

  Attributes:
    d_model: the embedding size.
    compiled_shapes: the (batch, length) shapes the forward ran with so far (one
      compilation each).
  """

  def __init__(self, model: PhiForCausalLM, tokenizer: Tokenizer | None = None, *,
               min_bucket: int = DEFAULT_MIN_BUCKET, source: str = "model",
               devices: Sequence[jax.Device] | None = None):
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
      raise ValueError(f"Embedder: no tokenizer: the model from {source} stores none; pass "
                       f"tokenizer=...")
    if tokenizer.vocab_size > model.config.vocab_size:
      raise ValueError(f"Embedder: the tokenizer has {tokenizer.vocab_size} tokens but the "
                       f"model's vocab_size is {model.config.vocab_size} ({source})")
    if isinstance(min_bucket, bool) or not isinstance(min_bucket, int) or min_bucket < 1:
      raise ValueError(f"Embedder: min_bucket must be a positive integer, got {min_bucket!r}")
    self.model = model
    self.tokenizer = tokenizer
    self.min_bucket = min_bucket
    self.source = source
    self.d_model = model.config.d_model
    self.compiled_shapes: set[tuple[int, int]] = set()
    self.devices = list(devices) if devices is not None else jax.local_devices()
    if not self.devices:
      raise ValueError("Embedder: no devices")
    mesh = Mesh(np.asarray(self.devices), ("batch",))
    self._batch_sharding = NamedSharding(mesh, PartitionSpec("batch"))
    self._graphdef, state = nnx.split(model)
    self._state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))
    self._pad_id = tokenizer.eos_id or 0

  @classmethod
  def from_pretrained(cls, path: str, tokenizer: Tokenizer | None = None,
                      **overrides) -> Embedder:
    """An embedder of the model at `path`: an Orbax checkpoint or a transformers dir.

    overrides: PhiConfig fields (e.g. dtype='float32'), as in
    phi_jax.pretrained.from_pretrained.
    """
    from phi_jax import pretrained  # pylint: disable=import-outside-toplevel
    model = pretrained.from_pretrained(path, **overrides)
    return cls(model, tokenizer, source=path)

  @classmethod
  def from_config(cls, config: PhiConfig, tokenizer: Tokenizer, seed: int = 0,
                  devices: Sequence[jax.Device] | None = None) -> Embedder:
    """A randomly initialised model's embedder: random features (see the module doc)."""
    from phi_jax import pretrained  # pylint: disable=import-outside-toplevel
    return cls(pretrained.init_model(config, seed), tokenizer,
               source=f"random-init (seed {seed}): random features", devices=devices)

  def tokenize(self, texts: Sequence[str], max_len: int) -> list[list[int]]:
    """Token ids of each text, cut to its first max_len tokens."""
    for index, text in enumerate(texts):
      if not isinstance(text, str):
        raise TypeError(f"Embedder.embed: texts[{index}] is a {type(text).__name__}, not a str")
    return [ids[:max_len] for ids in encode_ids(self.tokenizer, list(texts))]

  def embed(self, texts: Sequence[str], batch_size: int = 32, max_len: int = 512, *,
            normalize: bool = False, progress: bool = True) -> np.ndarray:
    """fp32 embeddings [N, d_model] of `texts`, in input order.

    Args:
      texts: the strings to embed.
      batch_size: texts per forward pass, over all the embedder's devices (rounded up
        to a multiple of their count).
      max_len: tokens kept per text (its first max_len); at most the model's
        max_seq_len.
      normalize: scale each row to unit L2 norm.
      progress: print a progress line on stderr (every ~15 s, and at the end) when
        there are more than a few batches.
    """
    rows_R, x_RD = self.embed_block(texts, batch_size, max_len, progress=progress)
    out_ND = np.zeros((len(texts), self.d_model), np.float32)
    out_ND[rows_R] = x_RD
    return l2_normalize(out_ND) if normalize else out_ND

  def embed_block(self, texts: Sequence[str], batch_size: int = 32, max_len: int = 512, *,
                  shard_index: int = 0, num_shards: int = 1, progress: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The rows of block `shard_index` of `num_shards` of the batches `embed` runs.

    The texts are tokenized and length-sorted as in `embed`, and the sorted batches are
    split in contiguous blocks (`host_blocks.block_bounds`); this runs only its block's
    batches, each the same batch as in `embed`, so its rows are bit for bit `embed`'s
    (on the same number of devices). Empty texts belong to no block (`embed` gives them
    zero rows). Arguments as in `embed`.

    Returns:
      (rows [R] int64: indices into `texts`, fp32 embeddings [R, d_model]).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
      raise ValueError(f"Embedder.embed: batch_size must be a positive integer, got "
                       f"{batch_size!r}")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
      raise ValueError(f"Embedder.embed: max_len must be a positive integer, got {max_len!r}")
    if max_len > self.model.config.max_seq_len:
      raise ValueError(f"Embedder.embed: max_len {max_len} exceeds the model's max_seq_len "
                       f"{self.model.config.max_seq_len} ({self.source})")
    batch_size = -(-batch_size // len(self.devices)) * len(self.devices)
    token_lists = self.tokenize(texts, max_len)
    order = sorted(range(len(token_lists)), key=lambda i: len(token_lists[i]))
    order = [i for i in order if token_lists[i]]  # empty texts keep their zero row
    buckets = bucket_lengths(max_len, min(self.min_bucket, max_len))
    first, last = host_blocks.block_bounds(-(-len(order) // batch_size), shard_index,
                                           num_shards)
    order = order[first * batch_size:last * batch_size]
    out_RD = np.zeros((len(order), self.d_model), np.float32)
    meter = Progress("embed", len(order), enabled=progress and last - first > 4,
                     unit="texts")
    for start in range(0, len(order), batch_size):
      rows = order[start:start + batch_size]
      longest = len(token_lists[rows[-1]])
      length = next(b for b in buckets if b >= longest)
      tokens_BT = np.full((batch_size, length), self._pad_id, np.int32)
      mask_BT = np.zeros((batch_size, length), np.int32)
      for b, i in enumerate(rows):
        tokens_BT[b, :len(token_lists[i])] = token_lists[i]
        mask_BT[b, :len(token_lists[i])] = 1
      self.compiled_shapes.add((batch_size, length))
      pooled_BE = _mean_pooled(self._graphdef, self._state,
                               jax.device_put(tokens_BT, self._batch_sharding),
                               jax.device_put(mask_BT, self._batch_sharding))
      out_RD[start:start + len(rows)] = np.asarray(pooled_BE)[:len(rows)]
      meter.update(start + len(rows))
    meter.update(len(order), final=True)
    return np.asarray(order, np.int64), out_RD


def embed_chunks(embedder: Embedder, texts: Iterable[str], *, chunk_size: int = 4096,
                 batch_size: int = 32, max_len: int = 512, normalize: bool = False
                 ) -> Iterator[np.ndarray]:
  """fp32 embeddings [n, d_model] of `texts`, `chunk_size` texts at a time, in input order.

  Streams: only one chunk of texts and embeddings is in memory; within a chunk the
  texts are length-sorted and bucketed as in `Embedder.embed` (larger chunks pad less).
  """
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
    raise ValueError(f"embed_chunks: chunk_size must be a positive integer, got "
                     f"{chunk_size!r}")
  iterator = iter(texts)
  while chunk := list(itertools.islice(iterator, chunk_size)):
    yield embedder.embed(chunk, batch_size=batch_size, max_len=max_len,
                         normalize=normalize, progress=False)


def make_embedder(embed_model: str, model: Mapping[str, Any], *, max_len: int = 512,
                  seed: int = 0, dtype: str | None = None,
                  devices: Sequence[jax.Device] | None = None) -> Embedder:
  """The embedder a config names: of `embed_model` (an Orbax checkpoint, transformers
  dir or hub id) or, when it is '', a random-init model of shape `model` (PhiConfig
  fields) with the byte-level tokenizer, its vocab and max_seq_len raised to fit
  (random features: see the module docstring). `dtype` ('bfloat16', 'float32'):
  the forward's compute dtype (default: the model's); `devices`: see `Embedder`."""
  overrides = {"dtype": dtype} if dtype else {}
  if embed_model:
    embedder = Embedder.from_pretrained(embed_model, **overrides)
    if devices is not None:
      embedder = Embedder(embedder.model, embedder.tokenizer, source=embedder.source,
                          devices=devices)
    return embedder
  from phi_jax import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
  config = PhiConfig.from_mapping(dict(model), where="embedding model")
  byte_level = tokenizer_lib.byte_level()
  config = config.replace(vocab_size=max(config.vocab_size, byte_level.vocab_size),
                          max_seq_len=max(config.max_seq_len, max_len), **overrides)
  return Embedder.from_config(config, byte_level, seed=seed, devices=devices)


# -- embeddings on disk --------------------------------------------------------------------


def save_embeddings(path: str, ids: Sequence[str | int], x_ND: np.ndarray, *,
                    source: str = "") -> None:
  """Writes ids and fp32 embeddings [N, d] as one .npz, atomically (temp + rename)."""
  x_ND = np.asarray(x_ND, np.float32)
  if x_ND.ndim != 2 or x_ND.shape[0] != len(ids):
    raise ValueError(f"save_embeddings: {path}: {len(ids)} ids but embeddings of shape "
                     f"{x_ND.shape}")
  buffer = io.BytesIO()
  np.savez(buffer, ids=np.asarray([str(i) for i in ids]), x=x_ND,
           id_is_int=np.asarray([isinstance(i, int) for i in ids]), source=np.asarray(source))
  atomic.write_bytes(path, buffer.getvalue())


def load_embeddings(path: str) -> tuple[list[str | int], np.ndarray]:
  """(ids, fp32 embeddings [N, d]) written by save_embeddings."""
  try:
    with np.load(path, allow_pickle=False) as data:
      ids = [int(i) if is_int else str(i) for i, is_int in zip(data["ids"], data["id_is_int"])]
      return ids, data["x"].astype(np.float32)
  except (OSError, KeyError, ValueError) as e:
    raise ValueError(f"load_embeddings: {path}: not an embeddings file ({e})") from None


def embed_to_file(embedder: Embedder, ids: Sequence[str | int], texts: Sequence[str],
                  path: str, *, batch_size: int = 32, max_len: int = 512,
                  shard_index: int = 0, num_shards: int = 1,
                  sync: Callable[[str, bool], list[bool]] = hosts.sync) -> int:
  """Embeds `texts` into one `save_embeddings` file at `path`, on one host or several.

  With one shard: `Embedder.embed` of every text, saved. With `num_shards` hosts (every
  host passing the same ids and texts): each embeds its block of the length-sorted
  batches (`Embedder.embed_block`, bit for bit `embed`'s rows) into a part
  (`<name>.part-IIIII-of-NNNNN.npz`: its rows and their embeddings), and process 0
  gathers the parts into the rows of one file in the order of `ids`
  (data_pipeline/host_blocks.py). Returns the number of dimensions.
  """
  if len(ids) != len(texts):
    raise ValueError(f"embed_to_file: {path}: {len(ids)} ids but {len(texts)} texts")

  def write(paths: list[str]) -> None:
    if num_shards == 1:
      save_embeddings(paths[0], ids, embedder.embed(texts, batch_size, max_len),
                      source=embedder.source)
      return
    rows_R, x_RD = embedder.embed_block(texts, batch_size, max_len, shard_index=shard_index,
                                        num_shards=num_shards)
    buffer = io.BytesIO()
    np.savez(buffer, rows=rows_R, x=x_RD)
    atomic.write_bytes(paths[0], buffer.getvalue())

  def merge(out: str, shards: int) -> None:
    x_ND = np.zeros((len(texts), embedder.d_model), np.float32)
    seen = np.zeros(len(texts), bool)
    for part in host_blocks.check_parts(out, shards):
      try:
        with np.load(part, allow_pickle=False) as data:
          rows_R, x_RD = data["rows"], data["x"]
      except (OSError, KeyError, ValueError) as e:
        raise host_blocks.BlockError(f"cannot merge {out}: its part {part} is not an "
                                     f"embeddings part ({e})") from None
      if x_RD.shape != (len(rows_R), embedder.d_model) or (rows_R < 0).any() \
          or (rows_R >= len(texts)).any() or seen[rows_R].any():
        raise host_blocks.BlockError(f"cannot merge {out}: its part {part} has rows outside "
                                     f"the {len(texts)} texts, or already given")
      seen[rows_R] = True
      x_ND[rows_R] = x_RD
    save_embeddings(out, ids, x_ND, source=embedder.source)
    host_blocks.remove_parts(out)

  host_blocks.write_blocks([path], write, shard_index=shard_index, num_shards=num_shards,
                           name=f"embeddings {os.path.basename(path)}", merge=merge, sync=sync)
  return embedder.d_model
