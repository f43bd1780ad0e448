"""phi_jax.atomic: whole-or-nothing writes, streamed and filtered rewrites."""

import json
import os

import pytest

from phi_jax import atomic


def test_writing_renames_on_success_and_leaves_the_old_file_on_failure(tmp_path):
  path = str(tmp_path / "sub" / "out.txt")
  with atomic.writing(path, "w") as f:
    f.write("one\n")
    assert not os.path.exists(path)  # nothing visible until the block ends
  assert open(path).read() == "one\n"
  with pytest.raises(RuntimeError):
    with atomic.writing(path, "w") as f:
      f.write("two\n")
      raise RuntimeError("interrupted")
  assert open(path).read() == "one\n"
  assert os.listdir(tmp_path / "sub") == ["out.txt"]  # no temp file left behind
  assert oct(os.stat(path).st_mode & 0o777) == "0o644"


def test_filter_jsonl_keeps_matching_lines_byte_for_byte(tmp_path):
  path = str(tmp_path / "rows.jsonl")
  lines = ['{"id": 1, "error": "x"}\n', '{"id": 2,  "text": "caf\\u00e9"}\n', "\n",
           '{"id": 3}\n']
  with open(path, "w") as f:
    f.writelines(lines)
  assert atomic.filter_jsonl(path, lambda row: "error" not in row) == 1
  assert open(path).read() == lines[1] + lines[3]
  with open(path, "a") as f:
    f.write("[1]\n")
  before = open(path).read()
  with pytest.raises(ValueError, match=r"rows.jsonl:3: expected a JSON object"):
    atomic.filter_jsonl(path, lambda row: True)
  assert open(path).read() == before
  assert [json.loads(x)["id"] for x in before.splitlines()[:2]] == [2, 3]
