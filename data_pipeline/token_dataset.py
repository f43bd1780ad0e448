"""The tokenized-dataset format on disk, readable and writable without TensorFlow.

A token dataset is what `tfds_builders` writes (and `write_records` writes without TF,
for tests and benchmarks): a TFDS dataset in ArrayRecord files,

    <data_dir>/<name>/1.0.0/
      dataset_info.json                       TFDS: splits, shard lengths, file format
      features.json                           TFDS: id, tokens, prompt_length, origin
      metadata.json                           ours (TFDS MetadataDict): tokenizer sha256,
                                              eos id, counts per split, skipped lines,
                                              what it was built from
      <name>-<split>.array_record-00000-of-0000N   serialized tf.train.Example records

Both writers build in a temporary directory beside the version directory and rename it
into place when every file is written, so nothing half-written looks complete.

This module also holds what both writers share: reading the curated JSONL (bad lines
skipped and counted), the stable validation split, and tokenizing documents.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from data_pipeline import catalog, example_proto
from data_pipeline import fim as fim_lib
from data_pipeline.example_proto import TokenRecord
from data_pipeline.fim import FimConfig
from data_pipeline.tokenizer import encode_ids
from phi_jax import atomic
from phi_jax.digest import file_sha256
from phi_jax.jsonl import read_jsonl
from phi_jax.tokenizer import Tokenizer

VERSION = "1.0.0"
FILE_FORMAT = "array_record"
SPLITS = ("train", "validation")
FILEPATH_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
ARRAY_RECORD_OPTIONS = "group_size:1"  # as TFDS writes them: one record per chunk
MAX_SHARD_BYTES = 1 << 30
FORMAT = "phi_jax.token_dataset/1"
# The curated sets: name -> kind ("text": {"id","text"}; "exercise": {"id","prompt","solution"}).
DATASETS = catalog.DATASETS  # the curated datasets and the kind of their records

# features.json exactly as TFDS writes it for tfds_builders' FeaturesDict
# (tests/data_pipeline/test_tfds_builders.py checks the two agree).
_TEXT = {"pythonClassName": "tensorflow_datasets.core.features.text_feature.Text", "text": {}}
FEATURES_JSON = {
    "featuresDict": {"features": {
        "id": _TEXT,
        "origin": _TEXT,
        "prompt_length": {
            "pythonClassName": "tensorflow_datasets.core.features.scalar.Scalar",
            "tensor": {"dtype": "int32", "encoding": "none", "shape": {}}},
        "tokens": {
            "pythonClassName": "tensorflow_datasets.core.features.tensor_feature.Tensor",
            "tensor": {"dtype": "int32", "encoding": "none", "shape": {"dimensions": ["-1"]}}},
    }},
    "pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
}


class DatasetError(ValueError):
  """A token dataset is missing, incomplete, or does not fit how it is used."""


# ---------------------------------------------------------------------- small shared pieces
def tokenizer_sha256(tokenizer: Tokenizer) -> str:
  """The sha256 of the tokenizer's JSON (what datasets and checkpoints record)."""
  return hashlib.sha256(tokenizer.to_json_str().encode()).hexdigest()


def hash_fraction(key: str) -> float:
  """A stable number in [0, 1) per document id (the same on every machine and run)."""
  return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2.0**64


def version_dir(data_dir: str, name: str) -> str:
  return os.path.join(os.path.abspath(data_dir), name, VERSION)


def shard_filename(name: str, split: str, index: int, count: int) -> str:
  return f"{name}-{split}.{FILE_FORMAT}-{index:05d}-of-{count:05d}"


# ---------------------------------------------------------------------- JSONL documents
def _read_lines(path: str, skipped: collections.Counter) -> Iterator[tuple[int, dict]]:
  """(line number, object) of each non-blank JSON-object line; bad lines are counted
  in `skipped` ("invalid_utf8", "invalid_json", "not_an_object") instead of raising."""
  return read_jsonl(path, on_error=lambda reason, where, detail: skipped.update([reason]))


def _fields(row: dict, kind: str) -> tuple[str, tuple[str, ...], str] | str:
  """(id, texts, origin) of a JSONL object, or the reason it is skipped."""
  doc_id = row.get("id")
  if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool) or doc_id == "":
    return "bad_id"
  names = ("text",) if kind == "text" else ("prompt", "solution")
  texts = tuple(row.get(name) for name in names)
  if not all(isinstance(text, str) for text in texts):
    return "bad_" + "_or_".join(names)
  if not "".join(texts):
    return "empty"
  origin = row.get("origin", "")
  return str(doc_id), texts, origin if isinstance(origin, str) else str(origin)


class JsonlDocuments:
  """The documents of curated JSONL files, split into train/validation.

  Reads the files once at construction (checking every line, finding duplicate ids
  and choosing the validation documents) and again, tokenizing, per split in
  `records`. Validation = documents whose `hash_fraction(id)` is below
  validation_fraction; at least one when the fraction is > 0 and there are >= 2
  documents. Skipped lines are counted in `skipped` by reason: invalid_json,
  not_an_object, bad_id, bad_text (or bad_prompt_or_solution), empty, duplicate_id
  (every occurrence of an id after its first).

  Args:
    jsonl_paths: files (.jsonl or .jsonl.gz) in the schema of `kind`.
    kind: "text" ({"id", "text", "origin"}) or "exercise" ({"id", "prompt",
      "solution", "origin"}: tokens are encode(prompt) + encode(solution),
      prompt_length = len(encode(prompt))).
    validation_fraction: in [0, 1).
    fim: the fill-in-the-middle transform of text documents (`data_pipeline.fim`);
      None = none.
  """

  def __init__(self, jsonl_paths: Sequence[str], kind: str, validation_fraction: float,
               fim: FimConfig | None = None):
    if kind not in ("text", "exercise"):
      raise ValueError(f"kind must be 'text' or 'exercise', got {kind!r}")
    if fim is not None and kind != "text":
      raise ValueError("the fill-in-the-middle transform applies to text documents, not "
                       f"{kind} documents")
    if not 0.0 <= validation_fraction < 1.0:
      raise ValueError(f"validation_fraction = {validation_fraction}: must be in [0, 1)")
    self.paths = [os.path.abspath(p) for p in jsonl_paths]
    missing = [p for p in self.paths if not os.path.isfile(p)]
    if missing:
      raise FileNotFoundError(f"JSONL input(s) not found: {missing}")
    self.kind = kind
    self.fim = fim
    self.validation_fraction = float(validation_fraction)
    self.skipped: collections.Counter = collections.Counter()
    self._lines: list[np.ndarray] = []  # per file: line numbers of kept documents
    self._held_out: list[np.ndarray] = []  # per file: whether each is in validation
    self._plan()

  def _plan(self) -> None:
    lines, hashes, file_of = [], [], []
    for index, path in enumerate(self.paths):
      for number, row in _read_lines(path, self.skipped):
        fields = _fields(row, self.kind)
        if isinstance(fields, str):
          self.skipped[fields] += 1
          continue
        lines.append(number)
        hashes.append(int.from_bytes(hashlib.sha256(fields[0].encode()).digest()[:8], "big"))
        file_of.append(index)
    hashes_u64 = np.asarray(hashes, np.uint64)
    keep = np.zeros(len(hashes_u64), bool)
    _, first = np.unique(hashes_u64, return_index=True)  # first occurrence of each id
    keep[first] = True
    self.skipped["duplicate_id"] += int(len(keep) - keep.sum())
    fraction = hashes_u64.astype(np.float64) / 2.0**64
    held_out = fraction < self.validation_fraction
    held_out &= keep
    if self.validation_fraction > 0 and not held_out.any() and keep.sum() >= 2:
      candidates = np.where(keep, fraction, np.inf)
      held_out[int(np.argmin(candidates))] = True
    lines_arr, file_arr = np.asarray(lines, np.int64), np.asarray(file_of, np.int64)
    for index in range(len(self.paths)):
      mine = (file_arr == index) & keep
      self._lines.append(lines_arr[mine])
      self._held_out.append(held_out[mine])
    self.counts = {"train": int((keep & ~held_out).sum()), "validation": int(held_out.sum())}

  def splits(self) -> list[str]:
    """The splits that have documents, in SPLITS order."""
    return [split for split in SPLITS if self.counts[split]]

  def records(self, split: str, tokenizer: Tokenizer,
              batch_size: int = 256) -> Iterator[TokenRecord]:
    """The tokenized documents of `split`, in file order."""
    if split not in SPLITS:
      raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    batch: list[tuple[str, tuple[str, ...], str]] = []
    for index, path in enumerate(self.paths):
      wanted = self._lines[index][self._held_out[index] == (split == "validation")]
      if not len(wanted):
        continue
      position, ignored = 0, collections.Counter()
      for number, row in _read_lines(path, ignored):
        if position == len(wanted):
          break
        if number != wanted[position]:
          continue
        position += 1
        fields = _fields(row, self.kind)
        if isinstance(fields, str):
          raise DatasetError(f"{path}:{number}: changed while the dataset was being built")
        batch.append(fields)
        if len(batch) == batch_size:
          yield from self._tokenize(batch, tokenizer)
          batch = []
      if position != len(wanted):
        raise DatasetError(f"{path}: changed while the dataset was being built")
    if batch:
      yield from self._tokenize(batch, tokenizer)

  def _tokenize(self, batch, tokenizer: Tokenizer) -> Iterator[TokenRecord]:
    if self.fim is not None:
      tokens = fim_lib.tokenize([(doc_id, texts[0]) for doc_id, texts, _ in batch],
                                tokenizer, self.fim)
      for (doc_id, _, origin), doc_tokens in zip(batch, tokens):
        yield TokenRecord(id=doc_id, tokens=doc_tokens, prompt_length=0, origin=origin)
      return
    columns = list(zip(*(texts for _, texts, _ in batch)))
    encoded = [encode_ids(tokenizer, list(column)) for column in columns]
    for i, (doc_id, _, origin) in enumerate(batch):
      parts = [ids[i] for ids in encoded]
      tokens = np.fromiter(itertools.chain.from_iterable(parts), np.int32,
                           sum(map(len, parts)))
      prompt_length = len(parts[0]) if self.kind == "exercise" else 0
      yield TokenRecord(id=doc_id, tokens=tokens, prompt_length=prompt_length, origin=origin)


def inputs_description(name: str, jsonl_paths: Sequence[str], tokenizer: Tokenizer,
                       validation_fraction: float,
                       fim: FimConfig | None = None) -> dict[str, Any]:
  """What a dataset is built from; equal descriptions = the same dataset (reusable)."""
  paths = [os.path.abspath(p) for p in jsonl_paths]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise FileNotFoundError(f"JSONL input(s) of {name} not found: {missing}")
  inputs = [{"path": p, "sha256": file_sha256(p)} for p in paths]
  description = {"name": name, "version": VERSION, "format": FORMAT, "inputs": inputs,
                 "tokenizer_sha256": tokenizer_sha256(tokenizer),
                 "validation_fraction": float(validation_fraction)}
  if fim is not None:
    description["fim"] = fim.describe()
  description["sha256"] = hashlib.sha256(
      json.dumps(description, sort_keys=True).encode()).hexdigest()
  return description


def base_metadata(tokenizer: Tokenizer, kind: str) -> dict[str, Any]:
  """The metadata.json fields every token dataset has (counts are added as written)."""
  if tokenizer.eos_id is None:
    raise DatasetError("the tokenizer has no <|endoftext|> token (documents are joined with it)")
  return {"format": FORMAT, "kind": kind, "tokenizer_sha256": tokenizer_sha256(tokenizer),
          "eos_id": int(tokenizer.eos_id), "vocab_size": int(tokenizer.vocab_size),
          "splits": {}, "skipped": {}}


# ---------------------------------------------------------------------- writing without TF
def _write_split(directory: str, name: str, split: str, records: Iterable[TokenRecord],
                 max_shard_bytes: int) -> dict[str, Any]:
  """Writes one split's shards; its dataset_info.json entry and counts."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  shard_lengths, num_bytes, documents, tokens = [], 0, 0, 0
  writer, shard_bytes, tmp_names = None, 0, []
  for record in records:
    serialized = example_proto.encode(record)
    if writer is None or (shard_bytes and shard_bytes + len(serialized) > max_shard_bytes):
      if writer is not None:
        writer.close()
      tmp_names.append(os.path.join(directory, f".{split}-shard-{len(tmp_names)}"))
      writer = array_record_module.ArrayRecordWriter(tmp_names[-1], ARRAY_RECORD_OPTIONS)
      shard_lengths.append(0)
      shard_bytes = 0
    writer.write(serialized)
    shard_lengths[-1] += 1
    shard_bytes += len(serialized)
    num_bytes += len(serialized)
    documents += 1
    tokens += len(record.tokens)
  if writer is not None:
    writer.close()
  for index, tmp_name in enumerate(tmp_names):
    os.replace(tmp_name, os.path.join(directory,
                                      shard_filename(name, split, index, len(tmp_names))))
  entry = {"filepathTemplate": FILEPATH_TEMPLATE, "name": split, "numBytes": str(num_bytes),
           "shardLengths": [str(n) for n in shard_lengths]}
  return {"entry": entry, "counts": {"documents": documents, "tokens": tokens}}


def write_records(name: str, records_by_split: Mapping[str, Iterable[TokenRecord]],
                  data_dir: str, tokenizer: Tokenizer, *, kind: str = "text",
                  metadata: Mapping[str, Any] | None = None,
                  max_shard_bytes: int = MAX_SHARD_BYTES) -> str:
  """Writes a token dataset without TensorFlow; returns its version directory.

  The files are those `tfds_builders` writes (TFDS reads them with
  tfds.builder(name, data_dir=...).as_data_source()). An existing dataset of the same
  name is replaced, atomically.

  Args:
    name: the dataset name (any snake_case name; the curated ones are in DATASETS).
    records_by_split: split -> its documents, written in the order given; splits
      with no documents are left out (as TFDS does).
    data_dir: the TFDS data directory.
    tokenizer: the documents' tokenizer (its sha256, eos id and vocab size are recorded).
    kind: "text" or "exercise" (recorded in the metadata).
    metadata: extra metadata.json fields.
    max_shard_bytes: start a new shard file past this many record bytes.
  """
  unknown = sorted(set(records_by_split) - set(SPLITS))
  if unknown:
    raise ValueError(f"splits must be among {SPLITS}, got {unknown}")
  target = version_dir(data_dir, name)
  tmp = atomic.temp_dir(target, prefix=f"incomplete.{os.path.basename(target)}.")
  try:
    meta = base_metadata(tokenizer, kind)
    meta.update(metadata or {})
    entries = []
    for split in SPLITS:
      if split not in records_by_split:
        continue
      written = _write_split(tmp, name, split, records_by_split[split], max_shard_bytes)
      if written["counts"]["documents"]:
        entries.append(written["entry"])
        meta["splits"][split] = written["counts"]
    info = {"description": f"phi_jax token dataset {name} ({kind} documents)",
            "fileFormat": FILE_FORMAT, "moduleName": "data_pipeline.token_dataset",
            "name": name, "releaseNotes": {VERSION: "Tokenized documents."},
            "splits": entries, "version": VERSION}
    atomic.write_json(FEATURES_JSON, os.path.join(tmp, "features.json"))
    atomic.write_json(meta, os.path.join(tmp, "metadata.json"))
    atomic.write_json(info, os.path.join(tmp, "dataset_info.json"))
    atomic.replace_dir(tmp, target)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return target


# ---------------------------------------------------------------------- reading
def _load_json(path: str, what: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      value = json.load(f)
  except FileNotFoundError:
    raise DatasetError(f"{os.path.dirname(path)}: not a built token dataset (no {what} "
                       f"{os.path.basename(path)}); build it with "
                       f"data_pipeline.tfds_builders.build_dataset") from None
  except (OSError, json.JSONDecodeError) as e:
    raise DatasetError(f"{path}: unreadable {what} ({e})") from None
  if not isinstance(value, dict):
    raise DatasetError(f"{path}: expected a JSON object")
  return value


def dataset_info(dataset_dir: str) -> dict[str, Any]:
  """What a built token dataset holds, checked against its files.

  Returns {"path", "name", "version", "kind", "tokenizer_sha256", "eos_id",
  "vocab_size", "skipped", "built_from", "splits": {split: {"documents", "tokens",
  "shards": [paths], "shard_lengths": [int]}}}. Raises DatasetError naming the path
  when the directory is missing, is not a built token dataset, or lacks shard files.
  """
  path = os.path.abspath(dataset_dir)
  if not os.path.isdir(path):
    raise DatasetError(f"{path}: no such dataset directory")
  info = _load_json(os.path.join(path, "dataset_info.json"), "TFDS dataset info")
  meta = _load_json(os.path.join(path, "metadata.json"), "token dataset metadata")
  if meta.get("format") != FORMAT:
    raise DatasetError(f"{path}/metadata.json: format {meta.get('format')!r}, expected "
                       f"{FORMAT!r} (not a phi_jax token dataset)")
  if info.get("fileFormat") != FILE_FORMAT:
    raise DatasetError(f"{path}/dataset_info.json: fileFormat {info.get('fileFormat')!r}, "
                       f"expected {FILE_FORMAT!r}")
  name = info.get("name", "")
  splits = {}
  for entry in info.get("splits", []):
    split = entry["name"]
    lengths = [int(n) for n in entry.get("shardLengths", [])]
    shards = [os.path.join(path, shard_filename(name, split, i, len(lengths)))
              for i in range(len(lengths))]
    absent = [s for s in shards if not os.path.isfile(s)]
    if absent:
      raise DatasetError(f"{path}: split {split!r} is missing shard file(s) {absent}")
    counts = meta.get("splits", {}).get(split)
    if counts is None or int(counts["documents"]) != sum(lengths):
      raise DatasetError(f"{path}: metadata.json counts for split {split!r} ({counts}) do "
                         f"not match dataset_info.json's {sum(lengths)} records")
    splits[split] = {"documents": int(counts["documents"]), "tokens": int(counts["tokens"]),
                     "shards": shards, "shard_lengths": lengths}
  return {"path": path, "name": name, "version": info.get("version"), "kind": meta.get("kind"),
          "tokenizer_sha256": meta.get("tokenizer_sha256"), "eos_id": meta.get("eos_id"),
          "vocab_size": meta.get("vocab_size"), "skipped": meta.get("skipped", {}),
          "built_from": meta.get("built_from"), "splits": splits}


def write_jsonl_dataset(name: str, jsonl_paths: Sequence[str], tokenizer: Tokenizer,
                        data_dir: str, *, validation_fraction: float = 0.0,
                        kind: str | None = None, fim: FimConfig | None = None) -> str:
  """Tokenizes curated JSONL into the dataset `name` without TensorFlow; returns its
  version directory. The same files as `tfds_builders.build_dataset` (which the data
  stage uses when TFDS is installed); this one serves TF-free machines, tests and
  benchmarks. `fim`: the fill-in-the-middle transform of text documents (None = none)."""
  kind = kind or DATASETS.get(name, "text")
  documents = JsonlDocuments(jsonl_paths, kind, validation_fraction, fim=fim)
  return write_records(
      name, {split: documents.records(split, tokenizer) for split in documents.splits()},
      data_dir, tokenizer, kind=kind,
      metadata={"skipped": dict(documents.skipped),
                "built_from": inputs_description(name, jsonl_paths, tokenizer,
                                                 validation_fraction, fim)})
