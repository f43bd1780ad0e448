"""The training data loader: token datasets -> packed, sharded, resumable batches (no TF).

Reads the ArrayRecord files of one or more token datasets (`tfds_builders` /
`token_dataset.write_records`) with grain, random access, decoding the
`tf.train.Example` records with `example_proto` (never importing TensorFlow):

  documents   the split's documents of every dataset, in order (a "mixture" is the
              datasets' documents together); host_sharding="documents" (the default):
              host `shard_index` of `shard_count` takes documents shard_index,
              shard_index + shard_count, ... and reads only those, so the global batch
              depends on the number of hosts; host_sharding="rows": every host reads
              every document, packs the same global batches and keeps its rows
              (batch_size // shard_count of them, in host order), so the global batches,
              the loss and the saved position equal a one-host run's for any number of
              hosts, for the price of each host reading all the data
  epochs      epoch e visits each of the host's documents once, in grain's index
              permutation for seed + e (a new permutation each epoch; shuffle=False
              keeps file order); epochs follow each other without a gap
  packing     each document's tokens followed by <|endoftext|>, concatenated and sliced
              into rows of seq_len tokens (the paper's packing: rows cross document and
              epoch boundaries; no padding); batch_size // shard_count rows per batch
  batches     numpy dicts: tokens int32 [b, seq_len]; loss_mask int32 [b, seq_len]
              (the trainer's convention: the loss at position t, predicting token t+1,
              counts iff loss_mask[t+1] == 1; 0 on an exercise's prompt tokens, 1 on its
              solution, on every <|endoftext|> and everywhere in code/textbooks); with
              segment_ids=True also segment_ids (1, 2, ... per document piece within a
              row, the EOS belongs to the document it ends) and positions (0, 1, ...
              from the start of each piece: a document continued from the previous row
              starts again at 0, as the model sees it)
  state       {"doc": the first document (index in the host's epoch-after-epoch stream)
              with tokens not yet emitted, "offset": how many of its tokens were,
              ...}: JSON; a restored loader rebuilds the grain pipeline from that
              document, so it yields exactly the batches an uninterrupted one would,
              for any worker_count

worker_count > 0 reads and decodes documents in that many grain processes
(`mp_prefetch`); packing stays in this process, so the batches do not depend on it.
With num_epochs set the stream ends after that many epochs (the last partial batch is
dropped); with None it never ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import numpy as np
from absl import flags

from data_pipeline import example_proto, token_dataset
from data_pipeline.token_dataset import DatasetError

STATE_VERSION = 1
HOST_SHARDING = ("documents", "rows")


def dataset_info(dataset_dir: str) -> dict[str, Any]:
  """Counts, tokenizer sha256 and eos id of a built token dataset (see
  token_dataset.dataset_info); raises DatasetError naming the path if it is not one."""
  return token_dataset.dataset_info(dataset_dir)


def _check_datasets(dataset_dirs: Sequence[str], split: str, eos_id: int,
                    tokenizer_sha256: str | None) -> list[dict[str, Any]]:
  if isinstance(dataset_dirs, str) or not dataset_dirs:
    raise ValueError(f"dataset_dirs must be a non-empty list of dataset directories, got "
                     f"{dataset_dirs!r}")
  infos = [token_dataset.dataset_info(d) for d in dataset_dirs]
  for info in infos:
    if split not in info["splits"]:
      raise DatasetError(f"{info['path']}: no split {split!r} (has {sorted(info['splits'])})")
    if info["eos_id"] != eos_id:
      raise DatasetError(f"{info['path']}: tokenized with <|endoftext|> = {info['eos_id']}, "
                         f"but the loader was asked for eos_id={eos_id} (another tokenizer?)")
    if tokenizer_sha256 is not None and info["tokenizer_sha256"] != tokenizer_sha256:
      raise DatasetError(f"{info['path']}: tokenized by tokenizer sha256 "
                         f"{info['tokenizer_sha256']}, but the model's tokenizer is "
                         f"{tokenizer_sha256}")
  shas = {info["tokenizer_sha256"] for info in infos}
  if len(shas) > 1:
    raise DatasetError(f"datasets {[i['path'] for i in infos]} were tokenized by different "
                       f"tokenizers ({sorted(shas)}); a mixture needs one")
  return infos


class Loader(grain.DatasetIterator):
  """Iterator of packed batches; see the module docstring. Built by `make_loader`.

  Attributes:
    tokens_per_epoch: tokens of one epoch over all hosts: every document's tokens
      plus its <|endoftext|> (the number of training tokens that make an epoch).
    documents_per_epoch: documents this host visits per epoch.
    rows: batch rows per host (batch_size // shard_count).
  """

  def __init__(self, documents: grain.MapDataset, *, seq_len: int, rows: int, eos_id: int,
               segment_ids: bool, mask_prompts: bool, worker_count: int, read_threads: int,
               tokens_per_epoch: int, documents_per_epoch: int, identity: dict[str, Any],
               packed_rows: int | None = None, first_row: int = 0):
    super().__init__()
    self._documents = documents
    self.seq_len, self.rows, self.eos_id = seq_len, rows, eos_id
    # rows packed per batch (the global batch with host_sharding="rows"), and the first
    # of the `rows` kept
    self._packed_rows = packed_rows or rows
    self._keep = slice(first_row, first_row + rows)
    self._segment_ids = segment_ids
    self._mask_prompts = mask_prompts
    self._worker_count, self._read_threads = worker_count, read_threads
    self.tokens_per_epoch = tokens_per_epoch
    self.documents_per_epoch = documents_per_epoch
    self._identity = identity
    self._it = None
    self._seek(0, 0, 0)

  # ---------------------------------------------------------------- position
  def _seek(self, doc: int, offset: int, batches: int) -> None:
    """Restarts reading at document `doc` of the stream, `offset` tokens in."""
    if self._it is not None:
      self._it.close()
    self._doc, self._offset, self._batches = doc, offset, batches
    self._current: tuple[np.ndarray, int] | None = None  # tokens of document self._doc
    self._ended = doc >= len(self._documents)
    self._it = None
    if not self._ended:
      ds = self._documents[doc:].to_iter_dataset(grain.ReadOptions(
          num_threads=self._read_threads, prefetch_buffer_size=max(64, 8 * self._packed_rows)))
      if self._worker_count:
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags (defaults here)
          flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=self._worker_count, per_worker_buffer_size=16))
      self._it = iter(ds)

  def _fetch(self) -> bool:
    """Makes self._current the document self._doc; False at the end of the stream."""
    if self._current is None:
      if self._ended:
        return False
      try:
        tokens, prompt_length = next(self._it)
      except StopIteration:
        self._ended = True
        return False
      self._current = (tokens, int(prompt_length) if self._mask_prompts else 0)
    return True

  # ---------------------------------------------------------------- batches
  def __next__(self) -> dict[str, np.ndarray]:
    self._assert_not_closed()
    shape = (self._packed_rows, self.seq_len)
    tokens = np.empty(shape, np.int32)
    loss_mask = np.empty(shape, np.int32)
    segments = np.empty(shape, np.int32)
    positions = np.empty(shape, np.int32)
    doc, offset, current = self._doc, self._offset, self._current
    for row in range(self._packed_rows):
      filled, segment = 0, 0
      while filled < self.seq_len:
        if not self._fetch():
          # The stream ended inside this batch: drop it (no padding), stay at the end.
          self._doc, self._offset, self._current = doc, offset, current
          self._ended = True
          raise StopIteration
        doc_tokens, prompt_length = self._current
        length = len(doc_tokens) + 1  # + <|endoftext|>
        take = min(self.seq_len - filled, length - self._offset)
        end = self._offset + take
        window = slice(filled, filled + take)
        body = min(end, len(doc_tokens))
        tokens[row, filled:filled + body - self._offset] = doc_tokens[self._offset:body]
        if end == length:
          tokens[row, filled + take - 1] = self.eos_id
        # loss_mask: 0 on prompt tokens (indices < prompt_length), 1 after (EOS too).
        loss_mask[row, window] = np.arange(self._offset, end) >= prompt_length
        segment += 1
        segments[row, window] = segment
        positions[row, window] = np.arange(take)
        filled += take
        self._offset = end
        if end == length:
          self._doc, self._offset, self._current = self._doc + 1, 0, None
    self._batches += 1
    batch = {"tokens": tokens, "loss_mask": loss_mask}
    if self._segment_ids:
      batch["segment_ids"] = segments
      batch["positions"] = positions
    if self._packed_rows != self.rows:
      batch = {k: np.ascontiguousarray(v[self._keep]) for k, v in batch.items()}
    return batch

  def epoch_documents(self, epoch: int):
    """The token arrays of this host's documents in `epoch`, in the order it reads them
    (without <|endoftext|>): what its batches of that epoch are packed from."""
    start = epoch * self.documents_per_epoch
    for i in range(start, min(start + self.documents_per_epoch, len(self._documents))):
      yield np.asarray(self._documents[i][0])

  # ---------------------------------------------------------------- state
  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable position: restore it with set_state on an equal loader."""
    return dict(self._identity, version=STATE_VERSION, doc=self._doc, offset=self._offset,
                batches=self._batches, epoch=self._doc // self.documents_per_epoch)

  def set_state(self, state: dict[str, Any]) -> None:
    """Continues from `state` (get_state of a loader over the same data and options)."""
    if int(state.get("version", -1)) != STATE_VERSION:
      raise DatasetError(f"data loader state version {state.get('version')!r}, expected "
                         f"{STATE_VERSION}")
    changed = {k: (state.get(k), v) for k, v in self._identity.items() if state.get(k) != v}
    if changed:
      raise DatasetError("data loader state is for other data or options; (state, this "
                         f"loader): {changed}")
    self._seek(int(state["doc"]), int(state["offset"]), int(state["batches"]))

  def close(self) -> None:
    """Stops grain's reader threads and worker processes (idempotent)."""
    if self._it is not None:
      self._it.close()
      self._it = None
    super().close()

  def __str__(self) -> str:
    return f"Loader({self._identity})"


def make_loader(dataset_dirs: Sequence[str], *, split: str, seq_len: int, batch_size: int,
                seed: int, eos_id: int, segment_ids: bool = False,
                shard_index: int | None = None, shard_count: int | None = None,
                worker_count: int = 0, num_epochs: int | None = None,
                shuffle: bool = True, tokenizer_sha256: str | None = None,
                read_threads: int = 2, mask_prompts: bool = True,
                host_sharding: str = "documents") -> Loader:
  """The grain loader of packed training batches over token datasets.

  Args:
    dataset_dirs: version directories of built token datasets (build_dataset's
      return value); several = their documents together.
    split: "train" or "validation".
    seq_len: tokens per row.
    batch_size: global rows per batch; each host gets batch_size // shard_count.
    seed: document order (epoch e uses seed + e); in [0, 2**32).
    eos_id: the model tokenizer's <|endoftext|> id (checked against the datasets).
    segment_ids: also emit segment_ids and positions.
    shard_index, shard_count: this host and the number of hosts (default: JAX's
      process index and count).
    worker_count: grain processes reading and decoding documents (0: in-process).
    num_epochs: stop after this many epochs (None: never).
    shuffle: False keeps the files' document order (comparisons, evaluation).
    tokenizer_sha256: the model tokenizer's sha256 (token_dataset.tokenizer_sha256),
      checked against the datasets when given.
    read_threads: grain reader threads in each reading process.
    mask_prompts: loss_mask 0 on exercises' prompt tokens (the finetuning default);
      False = every token counts.
    host_sharding: "documents" (each host reads its share of the documents) or
      "rows" (each host reads all, packs the global batch and keeps its rows: batches
      and loader state independent of the number of hosts); see the module docstring.

  Raises:
    DatasetError: a directory is not a built token dataset, lacks the split, was
      tokenized with another tokenizer / eos id, or the split has fewer tokens than
      one sequence (the message names the path).
    ValueError: inconsistent arguments.
  """
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  shard_index, shard_count = int(shard_index), int(shard_count)
  if seq_len < 1 or batch_size < 1:
    raise ValueError(f"seq_len ({seq_len}) and batch_size ({batch_size}) must be >= 1")
  if shard_count < 1 or not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
  if host_sharding not in HOST_SHARDING:
    raise ValueError(f"host_sharding={host_sharding!r} must be one of {HOST_SHARDING}")
  by_rows = host_sharding == "rows"
  if batch_size % shard_count:
    raise ValueError(f"batch_size={batch_size} must be a multiple of the number of hosts "
                     f"(shard_count={shard_count})")
  if not 0 <= seed < 2**32:
    raise ValueError(f"seed={seed} must be in [0, 2**32)")
  if worker_count < 0 or read_threads < 0:
    raise ValueError(f"worker_count ({worker_count}) and read_threads ({read_threads}) must "
                     f"be >= 0")
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f"num_epochs={num_epochs} must be >= 1 or None")
  infos = _check_datasets(dataset_dirs, split, eos_id, tokenizer_sha256)
  splits = [info["splits"][split] for info in infos]
  documents = sum(s["documents"] for s in splits)
  tokens_per_epoch = sum(s["tokens"] + s["documents"] for s in splits)
  where = ", ".join(info["path"] for info in infos)
  if tokens_per_epoch < seq_len:
    raise DatasetError(f"the {split} split of {where} has {tokens_per_epoch} tokens (with "
                       f"<|endoftext|>), fewer than one sequence of seq_len={seq_len}")
  host_documents = documents if by_rows else len(range(shard_index, documents, shard_count))
  if host_documents == 0:
    raise DatasetError(f"the {split} split of {where} has {documents} documents, fewer than "
                       f"the {shard_count} hosts")

  paths = [path for s in splits for path in s["shards"]]
  ds = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(paths))
  if not by_rows:
    ds = ds[shard_index::shard_count]
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs).map(example_proto.decode_tokens)
  identity = {"datasets": [f"{info['name']}/{split}:{s['documents']}"
                           for info, s in zip(infos, splits)],
              "tokenizer_sha256": infos[0]["tokenizer_sha256"], "split": split,
              "seq_len": int(seq_len), "seed": int(seed), "shuffle": bool(shuffle),
              "documents_per_epoch": host_documents}
  rows = batch_size // shard_count
  if by_rows:  # the position is the global stream's: any number of hosts may restore it
    identity.update(host_sharding="rows", batch_size=int(batch_size))
  else:
    identity.update(rows=rows, shard_index=shard_index, shard_count=shard_count)
  return Loader(ds, seq_len=int(seq_len), rows=rows, eos_id=int(eos_id),
                segment_ids=segment_ids, mask_prompts=bool(mask_prompts),
                worker_count=int(worker_count),
                read_threads=int(read_threads), tokens_per_epoch=tokens_per_epoch,
                documents_per_epoch=host_documents, identity=identity,
                packed_rows=batch_size if by_rows else rows,
                first_row=shard_index * rows if by_rows else 0)
