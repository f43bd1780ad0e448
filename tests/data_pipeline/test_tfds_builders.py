"""TFDS builders: splits, counts, metadata, idempotence, and TFDS <-> TF-free agreement."""

import json
import os
import stat

import numpy as np
import pytest

from data_pipeline import example_proto, token_dataset
from phi_jax import atomic
from phi_jax.tokenizer import byte_level
from tests.data_pipeline.test_token_dataset import (BAD_COUNTS, BAD_LINES, code_rows,
                                                    exercise_rows, write_jsonl)

tfds = pytest.importorskip("tensorflow_datasets")
from data_pipeline import tfds_builders  # noqa: E402  (after the TFDS check)

TOK = byte_level()


def _raw_records(info, split):
  """Our TF-free decoding of the split's records, in file order."""
  from array_record.python import array_record_module
  records = []
  for shard in info["splits"][split]["shards"]:
    reader = array_record_module.ArrayRecordReader(shard)
    records += [example_proto.decode(r) for r in reader.read_all()]
    reader.close()
  return records


def _tfds_records(path, split):
  """TFDS's own decoding of the same records, in file order."""
  source = tfds.builder_from_directory(path).as_data_source(split=split)
  return [source[i] for i in range(len(source))]


def _assert_agree(ours, theirs):
  assert len(ours) == len(theirs)
  for a, b in zip(ours, theirs):
    assert a.id == b["id"].decode() and a.origin == b["origin"].decode()
    assert a.prompt_length == int(b["prompt_length"])
    np.testing.assert_array_equal(a.tokens, b["tokens"])


def test_code_dataset_splits_counts_metadata_idempotence(tmp_path):
  rows = code_rows(30)
  jsonl = write_jsonl(tmp_path / "code.jsonl", rows + [dict(rows[0], text="dup")], BAD_LINES)
  data_dir = str(tmp_path / "tfds")
  path = tfds_builders.build_dataset("phi1_filtered_code", [jsonl], TOK, data_dir, 0.2)
  assert path == os.path.join(data_dir, "phi1_filtered_code", "1.0.0")
  info = token_dataset.dataset_info(path)

  validation = [r for r in rows if token_dataset.hash_fraction(r["id"]) < 0.2]
  train = [r for r in rows if r not in validation]
  assert validation and train
  for split, want in (("train", train), ("validation", validation)):
    assert info["splits"][split]["documents"] == len(want)
    assert info["splits"][split]["tokens"] == sum(len(TOK.encode(r["text"])) for r in want)
    ours = _raw_records(info, split)
    _assert_agree(ours, _tfds_records(path, split))  # TF-free decoder == TFDS's decoding
    by_id = {r["id"]: r for r in want}
    assert sorted(r.id for r in ours) == sorted(by_id)
    for record in ours:
      assert record.tokens.tolist() == TOK.encode(by_id[record.id]["text"])
  assert info["skipped"] == dict(BAD_COUNTS, duplicate_id=1)
  assert (info["eos_id"], info["vocab_size"]) == (256, 257)
  assert info["tokenizer_sha256"] == token_dataset.tokenizer_sha256(TOK)
  with open(os.path.join(path, "features.json")) as f:
    assert json.load(f) == token_dataset.FEATURES_JSON  # what the TF-free writer writes
  # The umask's modes (0755 / 0644 under 022): readable by a training job's other user.
  for directory, _, names in os.walk(os.path.join(data_dir, "phi1_filtered_code")):
    assert stat.S_IMODE(os.stat(directory).st_mode) == atomic.dir_mode(), directory
    for name in names:
      mode = stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode)
      assert mode == atomic.file_mode(), name

  stamp = os.stat(os.path.join(path, "metadata.json")).st_mtime_ns
  assert tfds_builders.build_dataset("phi1_filtered_code", [jsonl], TOK, data_dir, 0.2) == path
  assert os.stat(os.path.join(path, "metadata.json")).st_mtime_ns == stamp  # reused

  with open(jsonl, "a") as f:  # other inputs: rebuilt
    f.write(json.dumps({"id": "new", "text": "x = 1\n"}) + "\n")
  tfds_builders.build_dataset("phi1_filtered_code", [jsonl], TOK, data_dir, 0.2)
  info = token_dataset.dataset_info(path)
  assert sum(s["documents"] for s in info["splits"].values()) == len(rows) + 1
  assert os.listdir(os.path.dirname(path)) == ["1.0.0"]  # nothing half-written left


def test_exercises_dataset_keeps_the_prompt_boundary(tmp_path):
  rows = exercise_rows(10)
  jsonl = write_jsonl(tmp_path / "ex.jsonl", rows)
  path = tfds_builders.build_dataset("phi1_exercises", [jsonl], TOK, str(tmp_path), 0.0)
  info = token_dataset.dataset_info(path)
  assert list(info["splits"]) == ["train"] and info["kind"] == "exercise"
  by_id = {r["id"]: r for r in rows}
  for record in _tfds_records(path, "train"):
    row = by_id[record["id"].decode()]
    prompt, solution = TOK.encode(row["prompt"]), TOK.encode(row["solution"])
    assert record["tokens"].tolist() == prompt + solution
    assert int(record["prompt_length"]) == len(prompt)


def test_tfds_reads_what_the_tf_free_writer_writes(tmp_path):
  rows = code_rows(12, prefix="t")
  jsonl = write_jsonl(tmp_path / "t.jsonl", rows)
  built = tfds_builders.build_dataset("phi1_textbooks", [jsonl], TOK, str(tmp_path / "a"))
  records = _raw_records(token_dataset.dataset_info(built), "train")
  written = token_dataset.write_records("phi1_textbooks", {"train": records},
                                        str(tmp_path / "b"), TOK)
  _assert_agree(records, _tfds_records(written, "train"))
  # The registered builder class reads it too (tfds.builder by name + data_dir).
  source = tfds.builder("phi1_textbooks", data_dir=str(tmp_path / "b")).as_data_source()
  _assert_agree(records, [source["train"][i] for i in range(len(source["train"]))])
  infos = []
  for path in (built, written):
    with open(os.path.join(path, "dataset_info.json")) as f:
      infos.append(json.load(f))
  assert infos[0]["splits"] == infos[1]["splits"]  # same shards, counts and bytes
  assert {k: infos[0][k] for k in ("fileFormat", "name", "version")} == \
      {k: infos[1][k] for k in ("fileFormat", "name", "version")}


def test_fim_datasets_agree_between_the_writers_and_fim_settings_rebuild(tmp_path):
  from data_pipeline import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
  from data_pipeline.fim import FimConfig  # pylint: disable=g-import-not-at-top
  from phi_jax import fim  # pylint: disable=g-import-not-at-top
  tokenizer = tok_lib.with_special_tokens(TOK, fim.FIM_TOKENS)
  jsonl = write_jsonl(tmp_path / "c.jsonl", code_rows(30))
  config = FimConfig(rate=0.5, seed=4)
  data_dir = str(tmp_path / "tfds")
  path = tfds_builders.build_dataset("phi1_filtered_code", [jsonl], tokenizer, data_dir, 0.0,
                                     fim=config)
  free = token_dataset.write_jsonl_dataset("phi1_filtered_code", [jsonl], tokenizer,
                                           str(tmp_path / "free"), fim=config)
  ours = _raw_records(token_dataset.dataset_info(path), "train")
  theirs = {r["id"].decode(): r for r in _tfds_records(free, "train")}
  _assert_agree(ours, [theirs[r.id] for r in ours])  # the same records (TFDS orders by key)
  assert any(fim.fim_ids(tokenizer).prefix in r.tokens for r in ours)
  stamp = os.stat(os.path.join(path, "metadata.json")).st_mtime_ns
  tfds_builders.build_dataset("phi1_filtered_code", [jsonl], tokenizer, data_dir, 0.0,
                              fim=config)
  assert os.stat(os.path.join(path, "metadata.json")).st_mtime_ns == stamp  # reused
  tfds_builders.build_dataset("phi1_filtered_code", [jsonl], tokenizer, data_dir, 0.0,
                              fim=FimConfig(rate=0.5, seed=5))
  assert os.stat(os.path.join(path, "metadata.json")).st_mtime_ns != stamp  # rebuilt
