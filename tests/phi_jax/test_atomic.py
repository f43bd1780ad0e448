"""phi_jax.atomic: whole-or-nothing writes with the modes an ordinary open/mkdir gives."""

import os
import stat

import pytest

from phi_jax import atomic


@pytest.fixture(params=[0o022, 0o027, 0o002])
def mask(request):
  old = os.umask(request.param)
  yield request.param
  os.umask(old)


def mode(path):
  return stat.S_IMODE(os.stat(path).st_mode)


def test_umask_is_read_without_changing_it(mask):
  assert atomic.umask() == mask
  assert atomic.umask() == mask
  assert atomic.file_mode() == 0o666 & ~mask and atomic.dir_mode() == 0o777 & ~mask


def test_files_get_the_mode_open_gives(tmp_path, mask):
  with open(tmp_path / "plain", "w") as f:
    f.write("x")
  atomic.write_text(str(tmp_path / "sub" / "a.txt"), "hello")
  atomic.write_json({"a": 1}, str(tmp_path / "b.json"))
  atomic.write_jsonl([{"a": 1}], str(tmp_path / "c.jsonl"))
  for name in ("sub/a.txt", "b.json", "c.jsonl"):
    assert mode(tmp_path / name) == mode(tmp_path / "plain") == 0o666 & ~mask, name
  assert (tmp_path / "sub" / "a.txt").read_text() == "hello"


def test_directories_get_the_mode_mkdir_gives(tmp_path, mask):
  os.mkdir(tmp_path / "plain")
  with atomic.AtomicDirectory(str(tmp_path / "out")) as tmp:
    atomic.write_text(os.path.join(tmp, "f.txt"), "x")
  assert mode(tmp_path / "out") == mode(tmp_path / "plain") == 0o777 & ~mask
  assert mode(tmp_path / "out" / "f.txt") == 0o666 & ~mask
  assert mode(atomic.temp_dir(str(tmp_path / "t"))) == 0o777 & ~mask


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
  path = tmp_path / "a.txt"
  atomic.write_text(str(path), "old")
  with pytest.raises(RuntimeError):
    with atomic.writing(str(path), "w") as f:
      f.write("half")
      raise RuntimeError("killed")
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]
  with pytest.raises(ValueError, match="mode"):
    with atomic.writing(str(path), "a"):
      pass


def test_atomic_directory_replaces_only_on_success(tmp_path):
  out = tmp_path / "out"
  with atomic.AtomicDirectory(str(out)) as tmp:
    atomic.write_text(os.path.join(tmp, "v"), "1")
  with pytest.raises(FileExistsError, match="overwrite"):
    with atomic.AtomicDirectory(str(out)):
      pass
  with pytest.raises(RuntimeError):
    with atomic.AtomicDirectory(str(out), overwrite=True) as tmp:
      atomic.write_text(os.path.join(tmp, "v"), "2")
      raise RuntimeError("killed")
  assert (out / "v").read_text() == "1" and os.listdir(tmp_path) == ["out"]
  with atomic.AtomicDirectory(str(out), overwrite=True) as tmp:
    atomic.write_text(os.path.join(tmp, "w"), "2")
  assert os.listdir(out) == ["w"] and os.listdir(tmp_path) == ["out"]
