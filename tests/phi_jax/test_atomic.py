from __future__ import annotations

import os

import pytest

from phi_jax import atomic


def test_writer_renames_when_complete(tmp_path):
  path = tmp_path / "sub" / "out.jsonl"
  with atomic.Writer(str(path)) as f:
    f.write("a\n")
    assert not path.exists()  # nothing at the target until the block completes
    f.write("b\n")
  assert path.read_text() == "a\nb\n"
  assert os.listdir(path.parent) == ["out.jsonl"]
  assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_writer_keeps_the_old_file_on_error(tmp_path):
  path = tmp_path / "out.jsonl"
  path.write_text("complete\n")
  with pytest.raises(RuntimeError):
    with atomic.Writer(str(path)) as f:
      f.write("half")
      raise RuntimeError("stopped")
  assert path.read_text() == "complete\n"
  assert os.listdir(tmp_path) == ["out.jsonl"]  # no temp file left
