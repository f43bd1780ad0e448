"""The data stage's embed and classify steps on two hosts (two processes on this
machine, one CPU device each, jax.distributed on loopback): each embeds its block of
the annotated sample and scores its block of the curated code, process 0 merges the
parts, and the outputs are byte-identical to one process's."""

import json
import os
import shutil

import numpy as np
import pytest

from data_pipeline import host_blocks
from phi_jax.jsonl import count_jsonl
from recipe import graph, runner
from tests.phi_jax.train.multihost_driver import quality_config
from tests.phi_jax.train.test_multihost import launch

OUTPUTS = ("quality/embeddings.npz", "quality/scores.jsonl", "curated/filtered_code.jsonl",
           "quality/scores.json", "quality/scores.png", "quality/classifier.pkl")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
  """A workdir whose data stage ran up to `annotate`: the embed step's inputs."""
  workdir = tmp_path_factory.mktemp("upstream")
  ctx = runner.Context(quality_config(), str(workdir), graph.build())
  runner.execute(ctx, runner.make_plan(ctx, ["curate", "annotate"]))
  return str(workdir)


def _summaries(results):
  return [json.loads(next(line for line in out.splitlines() if line.startswith('{"process"')))
          for _, out, _ in results]


def _path(workdir, name):
  return os.path.join(workdir, "data", name)


def _read(workdir, name):
  with open(_path(workdir, name), "rb") as f:
    return f.read()


def _embeddings(workdir):
  with np.load(_path(workdir, "quality/embeddings.npz"), allow_pickle=False) as data:
    return {key: data[key] for key in data.files}


def test_two_hosts_embed_and_score_their_blocks_and_merge_what_one_host_writes(
    upstream, tmp_path):
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  for workdir in (one, two):
    shutil.copytree(os.path.join(upstream, "data"), os.path.join(workdir, "data"))
  # parts a crashed run left: of another host count, and of this one (rewritten)
  scores = _path(two, "quality/scores.jsonl")
  for stale in (host_blocks.part_path(scores, 2, 3), host_blocks.part_path(scores, 1, 2)):
    with open(stale, "w") as f:
      f.write('{"id": "stale", "score": 1.0}\n')

  (single,) = _summaries(launch(1, "quality", one, timeout=240))
  hosts = _summaries(launch(2, "quality", two, timeout=240))

  num_docs = count_jsonl(_path(one, "curated/code.jsonl"))
  chunk = quality_config().data.quality.score_chunk_size
  assert num_docs > 2 * chunk  # each host scores whole chunks, more than one in all
  assert single["scored"] == [num_docs]
  blocks = [host_blocks.block_bounds(num_docs, i, 2, align=chunk) for i in range(2)]
  assert [h["scored"] for h in hosts] == [[stop - start] for start, stop in blocks]
  assert all(stop > start for start, stop in blocks)

  annotated = single["embed"]["documents"]
  # the first embed_block call of each host is the embed step's (classify's come after)
  assert single["embedded"][0] == annotated and annotated > 2 * 4  # batches of 4
  assert all(h["embedded"][0] > 0 for h in hosts)
  assert sum(h["embedded"][0] for h in hosts) == annotated
  for name in OUTPUTS:  # byte-identical
    assert _read(two, name) == _read(one, name), name
  x_ND = _embeddings(one)["x"]
  assert x_ND.shape[0] == annotated
  assert (np.abs(x_ND).sum(axis=1) > 0).all()  # every annotated document embedded
  assert 0 < single["classify"]["kept"] < num_docs
  assert single["classify"]["documents"] == num_docs
  for host in hosts:  # every host's summaries are the whole job's
    for step in ("embed", "classify"):
      paths = {k: v.replace(two, one) for k, v in host[step].items() if k in ("plot", "out")}
      assert {**host[step], **paths} == single[step], step
  for workdir in (one, two):
    for directory in ("quality", "curated"):
      names = os.listdir(_path(workdir, directory))
      assert not [n for n in names if ".part-" in n or ".tmp-" in n], names
