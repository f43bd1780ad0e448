"""The curate step on datatrove in a job of two hosts (two processes on this machine,
jax.distributed on loopback): each host runs its block of every phase's tasks, the
phases meet at barriers, host 0 joins the shards, and the curated file and stats are
byte for byte those of one host."""

import json
import os
import re
import sysconfig

import pytest

from tests.phi_jax.train.test_multihost import launch

pytest.importorskip("datatrove")
STDLIB = sysconfig.get_paths()["stdlib"]


def _stdlib(name):
  with open(os.path.join(STDLIB, name), encoding="utf-8") as f:
    return f.read()


def _reports(results):
  return [json.loads(next(line for line in out.splitlines() if line.startswith('{"process"')))
          for _, out, _ in results]


def test_two_hosts_curate_their_tasks_and_write_what_one_host_writes(tmp_path):
  data = tmp_path / "stack"
  data.mkdir()
  texts = [_stdlib(n) for n in ("colorsys.py", "heapq.py", "bisect.py", "textwrap.py",
                                "shlex.py")]
  texts.append(re.sub(r"\bmaxc\b", "max_component", texts[0]))  # a near-copy, another file
  texts.append(texts[1].replace("    ", "\t"))  # an exact copy (whitespace), another file
  for i, text in enumerate(texts):
    with open(data / f"part-{i:03d}.jsonl", "w") as f:
      f.write(json.dumps({"content": text}) + "\n")
  spec = str(data / "*.jsonl")
  (one,) = _reports(launch(1, "curate", tmp_path / "one", spec, timeout=300))
  two = _reports(launch(2, "curate", tmp_path / "two", spec, timeout=300))
  assert one["documents"] == 5
  for host in two:
    assert {k: host[k] for k in ("documents", "bytes", "stats")} == {
        k: one[k] for k in ("documents", "bytes", "stats")}
  assert ((tmp_path / "two" / "code.jsonl").read_bytes()
          == (tmp_path / "one" / "code.jsonl").read_bytes())
  # 7 shards (one per file), 7 key partitions: host 0 runs tasks 0-2, host 1 tasks 3-6
  assert one["ranks"] == {"filter": list(range(7)), "group": list(range(7)),
                          "clusters": [0], "dedup": list(range(7))}
  assert two[0]["ranks"] == {"filter": [0, 1, 2], "group": [0, 1, 2], "dedup": [0, 1, 2]}
  assert two[1]["ranks"] == {"filter": [3, 4, 5, 6], "group": [3, 4, 5, 6], "clusters": [0],
                             "dedup": [3, 4, 5, 6]}
