"""The token-dataset format without TF: JSONL documents, splits, the writer, dataset_info.

Also the small corpora the other data_pipeline tests build datasets from.
"""

import json
import os
import stat

import numpy as np
import pytest

from data_pipeline import example_proto, token_dataset
from data_pipeline.token_dataset import DatasetError, JsonlDocuments, TokenRecord
from phi_jax import atomic
from phi_jax.tokenizer import byte_level


# ---------------------------------------------------------------------- corpora
def code_rows(n, prefix="c", seed=0):
  """n code records of varied lengths (1 to ~400 bytes), distinct texts."""
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n):
    body = "".join(f"    y = x * {j} + {i}  # ü\n" for j in range(int(rng.integers(0, 12))))
    rows.append({"id": f"{prefix}{i}", "text": f"def {prefix}_{i}(x):\n{body}    return x\n",
                 "origin": f"{prefix}/{i}.py", "license": "mit", "meta": {}})
  return rows


def exercise_rows(n, seed=0):
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n):
    prompt = f"def e_{i}(a, b):\n    \"\"\"Returns {'a ' * int(rng.integers(1, 6))}b.\"\"\"\n"
    solution = "".join(f"    a = a + {j}\n" for j in range(int(rng.integers(0, 6)))) + \
        "    return a + b\n"
    rows.append({"id": f"e{i}", "prompt": prompt, "solution": solution, "origin": f"ex/{i}",
                 "license": "mit", "meta": {}})
  return rows


def write_jsonl(path, rows, bad_lines=()):
  """rows as JSONL, with raw `bad_lines` inserted after the first row."""
  lines = [json.dumps(r, ensure_ascii=False) for r in rows]
  lines[1:1] = list(bad_lines)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(lines) + "\n")
  return str(path)


BAD_LINES = ("{not json", "[1, 2]", json.dumps({"text": "no id"}),
             json.dumps({"id": "x", "text": 5}), json.dumps({"id": "y", "text": ""}))
BAD_COUNTS = {"invalid_json": 1, "not_an_object": 1, "bad_id": 1, "bad_text": 1, "empty": 1}


# ---------------------------------------------------------------------- JsonlDocuments
def test_documents_split_by_id_hash_and_bad_lines_are_counted(tmp_path):
  rows = code_rows(40)
  path = write_jsonl(tmp_path / "a.jsonl", rows + [dict(rows[3], text="duplicate id")],
                     BAD_LINES)
  with open(path, "ab") as f:
    f.write(b"\xff\xfe not utf-8\n")
  docs = JsonlDocuments([path], "text", 0.25)
  assert dict(docs.skipped) == dict(BAD_COUNTS, duplicate_id=1, invalid_utf8=1)
  tok = byte_level()
  got = {s: list(docs.records(s, tok, batch_size=7)) for s in ("train", "validation")}
  want_validation = [r for r in rows if token_dataset.hash_fraction(r["id"]) < 0.25]
  assert [r.id for r in got["validation"]] == [r["id"] for r in want_validation]
  assert [r.id for r in got["train"]] == [r["id"] for r in rows if r not in want_validation]
  assert docs.counts == {"train": len(got["train"]), "validation": len(got["validation"])}
  by_id = {r["id"]: r for r in rows}
  for record in got["train"] + got["validation"]:  # the first occurrence of the duplicate
    assert record.tokens.tolist() == tok.encode(by_id[record.id]["text"])
    assert record.prompt_length == 0 and record.origin == by_id[record.id]["origin"]


def test_small_fraction_still_holds_out_one_document(tmp_path):
  rows = code_rows(5)
  docs = JsonlDocuments([write_jsonl(tmp_path / "a.jsonl", rows)], "text", 1e-9)
  lowest = min(rows, key=lambda r: token_dataset.hash_fraction(r["id"]))["id"]
  assert [r.id for r in docs.records("validation", byte_level())] == [lowest]
  assert docs.counts == {"train": 4, "validation": 1}
  assert JsonlDocuments([write_jsonl(tmp_path / "b.jsonl", rows)], "text", 0.0).splits() == \
      ["train"]
  one = JsonlDocuments([write_jsonl(tmp_path / "c.jsonl", rows[:1] * 1)], "text", 0.5)
  assert one.counts["train"] + one.counts["validation"] == 1


def test_exercise_tokens_keep_the_prompt_boundary(tmp_path):
  rows = exercise_rows(12)
  docs = JsonlDocuments([write_jsonl(tmp_path / "e.jsonl", rows)], "exercise", 0.0)
  tok = byte_level()
  for row, record in zip(rows, docs.records("train", tok, batch_size=5)):
    assert record.tokens.tolist() == tok.encode(row["prompt"]) + tok.encode(row["solution"])
    assert record.prompt_length == len(tok.encode(row["prompt"]))


# ---------------------------------------------------------------------- writer / reader
def _records(n, seed=0):
  rng = np.random.default_rng(seed)
  return [TokenRecord(id=f"r{i}", tokens=rng.integers(0, 256, int(rng.integers(1, 300)),
                                                      dtype=np.int32),
                      prompt_length=int(i % 3), origin=f"o{i}") for i in range(n)]


def test_write_records_and_dataset_info(tmp_path):
  from array_record.python import array_record_module
  tok = byte_level()
  train, validation = _records(30), _records(4, seed=1)
  path = token_dataset.write_records("toy_set", {"train": train, "validation": validation},
                                     str(tmp_path), tok, max_shard_bytes=1500)
  assert path == os.path.join(str(tmp_path), "toy_set", "1.0.0")
  info = token_dataset.dataset_info(path)
  assert info["eos_id"] == 256 and info["tokenizer_sha256"] == token_dataset.tokenizer_sha256(tok)
  assert info["splits"]["train"]["documents"] == 30
  assert info["splits"]["train"]["tokens"] == sum(len(r.tokens) for r in train)
  assert len(info["splits"]["train"]["shards"]) > 1  # split by max_shard_bytes
  read = []
  for shard, length in zip(info["splits"]["train"]["shards"],
                           info["splits"]["train"]["shard_lengths"]):
    reader = array_record_module.ArrayRecordReader(shard)
    assert reader.num_records() == length
    read += [example_proto.decode(r) for r in reader.read_all()]
    reader.close()
  assert [r.id for r in read] == [r.id for r in train]
  for a, b in zip(read, train):
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert a.prompt_length == b.prompt_length
  assert not [n for n in os.listdir(tmp_path / "toy_set") if n != "1.0.0"]  # no temp dirs left
  # The umask's modes (0755 / 0644 under 022), readable by a training job's other user.
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o777 & ~atomic.umask()
  for name in os.listdir(path):
    assert stat.S_IMODE(os.stat(os.path.join(path, name)).st_mode) == 0o666 & ~atomic.umask()

  # Rewriting replaces the old dataset whole.
  token_dataset.write_records("toy_set", {"train": train[:3]}, str(tmp_path), tok)
  assert set(token_dataset.dataset_info(path)["splits"]) == {"train"}
  assert len(os.listdir(path)) == 4


def test_dataset_info_errors_name_the_path(tmp_path):
  with pytest.raises(DatasetError, match=f"{tmp_path}/nope: no such dataset directory"):
    token_dataset.dataset_info(str(tmp_path / "nope"))
  with pytest.raises(DatasetError, match="not a built token dataset"):
    token_dataset.dataset_info(str(tmp_path))
  path = token_dataset.write_records("t", {"train": _records(3)}, str(tmp_path), byte_level())
  os.remove(os.path.join(path, token_dataset.shard_filename("t", "train", 0, 1)))
  with pytest.raises(DatasetError, match="missing shard file"):
    token_dataset.dataset_info(path)
