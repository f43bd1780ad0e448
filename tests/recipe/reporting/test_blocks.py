"""The report's path display: the same cells wherever the report is built from."""

import os

from recipe.reporting import blocks


def test_paths_show_the_same_from_any_working_directory(tmp_path, monkeypatch):
  workdir = tmp_path / "work"
  deep = tmp_path / "a" / "b" / "c" / "d"
  deep.mkdir(parents=True)
  for cwd in (tmp_path, deep):
    monkeypatch.chdir(cwd)
    # inside the work directory: relative to it
    assert blocks.rel(str(workdir / "data" / "tokenizer"), str(workdir)) == "data/tokenizer"
    assert blocks.where(f"{workdir}/code.jsonl:7", str(workdir)) == "code.jsonl:7"
    # a relative path outside it: as written, not resolved against the cwd
    assert blocks.where("filtered_code.jsonl:7", "/elsewhere/work") == "filtered_code.jsonl:7"
    assert blocks.rel("lib/copy.py", "/elsewhere/work") == "lib/copy.py"
    # an absolute path outside it: its last three components
    assert blocks.rel("/home/u/src/pkg/mod/file.py", str(workdir)) == "…/pkg/mod/file.py"
    assert blocks.rel("/x/y.py", str(workdir)) == "/x/y.py"
  assert os.getcwd() == str(deep)
