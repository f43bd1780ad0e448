"""recipe.runner in a job of two hosts (two processes on this machine, jax.distributed
on loopback): process 0 keeps the books, every process runs each node (process 0 alone
a primary_only one), a node that fails on one host fails on both and its old output
comes back, and hosts that plan differently stop before anything runs."""

import json
import os

from recipe import runner
from tests.phi_jax.train.test_multihost import launch


def _reports(results):
  return [json.loads(next(line for line in out.splitlines() if line.startswith('{"process"')))
          for _, out, _ in results]


def _read(path):
  with open(path) as f:
    return f.read()


def test_two_hosts_run_every_node_and_the_books_are_kept_once(tmp_path):
  workdir = str(tmp_path / "work")
  reports = _reports(launch(2, "runner", workdir, "0", "", timeout=240))
  assert [r["process"] for r in reports] == [0, 1]
  assert all(r["summaries"] == [{"seed": 0}] * 3 for r in reports), reports
  for node, ran_on in (("a", ["ran-by-0", "ran-by-1"]), ("b", ["ran-by-0", "ran-by-1"]),
                       ("c", ["ran-by-0"])):  # c: primary_only
    directory = os.path.join(workdir, node)
    assert sorted(os.listdir(directory)) == [runner.COMPLETE, "out.txt", *ran_on]
    assert json.loads(_read(os.path.join(directory, runner.COMPLETE)))["summary"] == {"seed": 0}

  # seed 1: a and b rerun; b fails on process 1 only, so it fails on both, and b's
  # previous output is put back; a, which finished everywhere, is complete
  reports = _reports(launch(2, "runner", workdir, "1", "1", timeout=240))
  assert reports[1]["error"] == "RuntimeError: boom on process 1"
  assert reports[0]["error"] == "StageError: [b] failed on process(es) [1]: see their output"
  assert json.loads(_read(os.path.join(workdir, "a", runner.COMPLETE)))["summary"] == {
      "seed": 1}
  b = os.path.join(workdir, "b")
  assert _read(os.path.join(b, "out.txt")) == "0"
  assert json.loads(_read(os.path.join(b, runner.COMPLETE)))["summary"] == {"seed": 0}
  assert not os.path.exists(os.path.join(workdir, runner.PREVIOUS_DIR, "b"))

  # hosts with different configs plan different work: nothing runs anywhere
  before = {n: _read(os.path.join(workdir, n, runner.COMPLETE)) for n in ("a", "b", "c")}
  reports = _reports(launch(2, "runner", workdir, "index", "", timeout=240))
  for report in reports:
    assert report["error"].startswith("StageError: process(es) [1] planned other work "
                                      "than process 0"), report
  assert {n: _read(os.path.join(workdir, n, runner.COMPLETE)) for n in ("a", "b", "c")} == before
