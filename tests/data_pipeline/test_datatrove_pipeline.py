"""A curate run on datatrove killed (SIGKILL) mid-run resumes: the shards it finished are
not redone, nothing it left is taken for complete, and the rerun's documents and stats
equal an in-process run's (no record lost or duplicated)."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from data_pipeline import curation

pytest.importorskip("datatrove")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTINGS = curation.CurationSettings(max_files=120, seed=5)
SHARD_FILES = 4
RUN = """
import sys
from data_pipeline import curation
settings = curation.CurationSettings(max_files=120, seed=5)
curation.curate(["stdlib"], settings, sys.argv[1], runner="datatrove", workers=1,
                shard_files=4, work_dir=sys.argv[2])
"""


def _strip(stats):
  return [{k: v for k, v in s.items() if k not in ("elapsed_s", "records_per_s")}
          for s in stats]


@pytest.mark.slow  # ~10-20 s: a subprocess, two engine runs and an in-process run
def test_a_killed_run_resumes_without_losing_or_duplicating_records(tmp_path):
  work_dir, out = str(tmp_path / "shards"), str(tmp_path / "engine.jsonl")
  env = dict(os.environ, PYTHONPATH=REPO)
  proc = subprocess.Popen([sys.executable, "-c", RUN, out, work_dir], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
  done_pattern = os.path.join(work_dir, "filtered", "*.stats.json")
  deadline = time.monotonic() + 120
  while len(glob.glob(done_pattern)) < 3 and time.monotonic() < deadline:
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(0.005)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  shards = curation.plan_shards(["stdlib"], SETTINGS, SHARD_FILES)
  finished = sorted(glob.glob(done_pattern))
  assert 3 <= len(finished) < len(shards), "killed mid-run: some shards done, not all"
  assert not os.path.exists(out)
  before = {}
  for stats_path in finished:  # what a shard marks complete is complete
    records = stats_path.replace(".stats.json", ".jsonl")
    with open(stats_path, encoding="utf-8") as f:
      stats = json.load(f)
    with open(records, encoding="utf-8") as f:
      assert sum(1 for _ in f) == stats["steps"][-1]["out"]
    before[stats_path] = os.stat(stats_path).st_mtime_ns

  engine = curation.curate(["stdlib"], SETTINGS, out, runner="datatrove", workers=1,
                           shard_files=SHARD_FILES, work_dir=work_dir)
  local = curation.curate(["stdlib"], SETTINGS, str(tmp_path / "local.jsonl"))
  assert {p: os.stat(p).st_mtime_ns for p in before} == before  # not redone
  with open(out, "rb") as a, open(tmp_path / "local.jsonl", "rb") as b:
    assert a.read() == b.read()
  assert _strip(engine["stats"]) == _strip(local["stats"])
  assert engine["shards"] == len(shards) == 30


def test_a_file_gone_between_listing_and_reading_is_counted_not_fatal(tmp_path):
  source = tmp_path / "code"
  source.mkdir()
  for i in range(6):
    (source / f"m{i}.py").write_text(f"def f{i}(x):\n  return x + {i} * {i}\n")
  shards = curation.plan_shards([str(source)], SETTINGS, shard_files=2)
  os.remove(source / "m3.py")  # listed in a shard, gone before that shard is read
  from data_pipeline import datatrove_pipeline  # pylint: disable=g-import-not-at-top
  work_dir = str(tmp_path / "shards")
  run_dir = datatrove_pipeline.run(shards, SETTINGS, work_dir, workers=1)
  result = curation.collect(shards, SETTINGS, work_dir, run_dir, str(tmp_path / "out.jsonl"))
  source_stats = result["stats"][0]
  assert (source_stats["in"], source_stats["out"]) == (6, 5)
  assert source_stats["dropped"] == {"unreadable": 1}
  assert source_stats["examples"] == [
      f"unreadable: {source}/m3.py (No such file or directory)"]
  assert result["documents"] == 5


def test_signatures_of_another_shingle_hash_are_not_reused(monkeypatch):
  """The run directory (whose keys files hold MinHash signatures) depends on the shingle
  hash's version: a resumed run never mixes signatures of two hashes."""
  from data_pipeline import datatrove_pipeline, dedup  # pylint: disable=g-import-not-at-top
  shards = [curation.Shard(0, "stdlib", ("a.py",))]
  run_dir = datatrove_pipeline.Job(shards, SETTINGS, "work", 1).run_dir
  assert datatrove_pipeline.Job(shards, SETTINGS, "work", 1).run_dir == run_dir
  monkeypatch.setattr(dedup, "SHINGLE_HASH_VERSION", dedup.SHINGLE_HASH_VERSION + 1)
  assert datatrove_pipeline.Job(shards, SETTINGS, "work", 1).run_dir != run_dir
