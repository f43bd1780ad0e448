"""Tests of data_pipeline.records: Record/Exercise JSON round trips, ids, JSONL files."""

import hashlib
import json

import pytest

from data_pipeline.records import (Exercise, Record, RecordError, read_records, record_id,
                                   write_records)


def test_record_id_is_sha1_of_origin_and_row():
  assert record_id("/a/b.py") == hashlib.sha1(b"/a/b.py").hexdigest()
  assert record_id("data.jsonl", 7) == hashlib.sha1(b"data.jsonl#7").hexdigest()
  assert record_id("data.jsonl", 7) != record_id("data.jsonl", 8)


def test_record_json_round_trip_through_json_text():
  record = Record(id="x1", text="def f():\n  return 'é'\n", origin="/src/f.py",
                  license="MIT", meta={"language": "python", "stars": 3})
  obj = json.loads(json.dumps(record.to_json()))
  assert obj == {"id": "x1", "text": record.text, "origin": "/src/f.py", "license": "MIT",
                 "meta": {"language": "python", "stars": 3}}
  assert Record.from_json(obj) == record
  # license and meta are optional in the JSON
  assert Record.from_json({"id": "a", "text": "t", "origin": "o"}) == Record("a", "t", "o")


def test_exercise_json_round_trip():
  exercise = Exercise(id="e", prompt="def f():\n  \"\"\"Doc.\"\"\"\n", solution="  return 1\n",
                      origin="/src/f.py", meta={"function": "f"})
  obj = exercise.to_json()
  assert set(obj) == {"id", "prompt", "solution", "origin", "license", "meta"}
  assert Exercise.from_json(json.loads(json.dumps(obj))) == exercise


@pytest.mark.parametrize("obj, message", [
    ({"id": "a", "origin": "o"}, "missing the field 'text'"),
    ({"id": "a", "text": 3, "origin": "o"}, "field 'text' must be a string"),
    ({"id": "a", "text": "t", "origin": "o", "meta": []}, "'meta' must be an object"),
    ({"id": "a", "text": "t", "origin": "o", "license": 1}, "'license' must be a string"),
    ({"id": "a", "text": "t", "origin": "o", "colour": "red"}, "unknown Record field"),
    (["not", "an", "object"], "expected a JSON object"),
])
def test_from_json_names_the_problem_and_where(obj, message):
  with pytest.raises(RecordError, match=f"^f.jsonl:3: .*{message}"):
    Record.from_json(obj, where="f.jsonl:3")


def test_write_and_read_records(tmp_path):
  records = [Record(id=str(i), text=f"x = {i}\n", origin=f"o{i}", meta={"i": i})
             for i in range(3)]
  path = str(tmp_path / "out" / "records.jsonl")
  assert write_records(records, path) == 3
  assert list(read_records(path)) == records
  assert [json.loads(line)["id"] for line in open(path)] == ["0", "1", "2"]
  exercises = [Exercise(id="e", prompt="p", solution="s", origin="o")]
  write_records(exercises, path)
  assert list(read_records(path, Exercise)) == exercises


def test_read_records_names_file_and_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"id": "a", "text": "t", "origin": "o"}\n{"id": "b"}\n')
  with pytest.raises(RecordError, match=r"bad.jsonl:2: Record is missing the field 'text'"):
    list(read_records(str(path)))
