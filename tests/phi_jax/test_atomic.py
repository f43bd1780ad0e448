"""phi_jax.atomic: whole-or-nothing writes (streamed and filtered too) with the modes an
ordinary open/mkdir gives."""

import json
import os
import stat

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
  assert os.stat(path).st_mode & 0o777 == atomic.file_mode()


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
