"""phi_jax.jsonl: the append-only record files a killed writer leaves behind."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from phi_jax.jsonl import Appender, read_appended
from tests.conftest import REPO_ROOT


def test_appended_records_round_trip(tmp_path):
  path = str(tmp_path / "sub" / "r.jsonl")
  assert read_appended(path) == []
  with Appender(path) as out:
    out.write([{"id": 1}, {"id": 2, "text": "é\n"}])
    out.write([])
  with Appender(path) as out:  # a second writer appends
    out.write([{"id": 3}])
  assert read_appended(path) == [(1, {"id": 1}), (2, {"id": 2, "text": "é\n"}), (3, {"id": 3})]


def test_a_half_written_last_line_is_dropped_and_cut_off(tmp_path):
  path = tmp_path / "r.jsonl"
  path.write_bytes(b'{"id": 1}\n{"id": 2}\n{"id": 3, "te')
  assert read_appended(str(path), repair=False) == [(1, {"id": 1}), (2, {"id": 2})]
  assert path.read_bytes().endswith(b'"te')  # left alone without repair
  assert read_appended(str(path)) == [(1, {"id": 1}), (2, {"id": 2})]
  assert path.read_bytes() == b'{"id": 1}\n{"id": 2}\n'
  with Appender(str(path)) as out:
    out.write([{"id": 3}])
  assert [row["id"] for _, row in read_appended(str(path))] == [1, 2, 3]


@pytest.mark.parametrize("content, message", [
    (b'{"id": 1}\nnot json\n{"id": 3}\n', "r.jsonl:2: corrupt record"),
    (b'{"id": 1}\n[1, 2]\n', "r.jsonl:2: expected a JSON object, got list"),
    (b'\xff\xfe\n', "r.jsonl:1: corrupt record"),
])
def test_a_bad_complete_line_is_corruption_named_by_line(tmp_path, content, message):
  path = tmp_path / "r.jsonl"
  path.write_bytes(content)
  with pytest.raises(ValueError, match=message):
    read_appended(str(path))
  assert path.read_bytes() == content  # nothing repaired


def test_a_writer_killed_mid_stream_loses_at_most_its_last_line(tmp_path):
  """A child appends records until SIGKILL; whatever it left reads back as a prefix."""
  path = str(tmp_path / "r.jsonl")
  code = (f"import sys; sys.path.insert(0, {REPO_ROOT!r})\n"
          "from phi_jax.jsonl import Appender\n"
          f"out = Appender({path!r})\n"
          "i = 0\n"
          "while True:\n"
          "  out.write([{'id': i, 'pad': 'x' * 5000}]); i += 1\n")
  child = subprocess.Popen([sys.executable, "-c", code])
  try:
    while not os.path.exists(path) or os.path.getsize(path) < 200_000:
      assert child.poll() is None
      time.sleep(0.01)
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait()
  ids = [row["id"] for _, row in read_appended(path)]
  assert ids == list(range(len(ids))) and len(ids) >= 39
  with open(path, "rb") as f:
    assert all(json.loads(line)["id"] == i for i, line in enumerate(f))


def test_a_range_of_records_is_read_and_counted_like_the_whole_file(tmp_path):
  import gzip
  from phi_jax.jsonl import count_jsonl, read_jsonl
  text = '{"i": 0}\n\n   \n{"i": 1}\nnot json\n{"i": 3}\n{"i": 4}'  # no final newline
  for name, opener in (("r.jsonl", open), ("r.jsonl.gz", gzip.open)):
    path = str(tmp_path / name)
    with opener(path, "wt") as f:
      f.write(text)
    assert count_jsonl(path) == 5
    # the bad line (record 2) is not decoded outside its range
    assert list(read_jsonl(path, stop=2)) == [(1, {"i": 0}), (4, {"i": 1})]
    assert list(read_jsonl(path, start=3)) == [(6, {"i": 3}), (7, {"i": 4})]
    assert list(read_jsonl(path, start=5)) == [] and list(read_jsonl(path, stop=0)) == []
    with pytest.raises(ValueError, match=r"r.jsonl(.gz)?:5: invalid JSON"):
      list(read_jsonl(path, start=2, stop=3))
