"""data_pipeline.host_blocks: contiguous blocks of a JSONL file per host, and the merge of
the hosts' parts (hosts simulated by threads with a barrier; the two-process run of
the classify step is tests/recipe/test_data_multihost.py)."""

import json
import os
import threading

import pytest

from data_pipeline import host_blocks
from data_pipeline.records import Record, read_records, write_records


@pytest.mark.parametrize("align", [1, 3, 8])
def test_blocks_cover_every_record_once_in_order(align):
  for num_records in range(0, 30):
    for num_shards in range(1, 12):  # also more shards than records (empty blocks)
      bounds = [host_blocks.block_bounds(num_records, i, num_shards, align=align)
                for i in range(num_shards)]
      covered = [r for start, stop in bounds for r in range(start, stop)]
      assert covered == list(range(num_records)), (num_records, num_shards, bounds)
      sizes = [stop - start for start, stop in bounds]
      assert max(sizes) - min(sizes) <= align
      # each block starts at a whole group of `align` records
      assert all(start % align == 0 or start == num_records for start, _ in bounds)


def test_unaligned_blocks_are_i_m_over_n():
  assert [host_blocks.block_bounds(10, i, 4) for i in range(4)] == \
      [(0, 2), (2, 5), (5, 7), (7, 10)]
  assert [host_blocks.block_bounds(2, i, 3) for i in range(3)] == [(0, 0), (0, 1), (1, 2)]
  assert [host_blocks.block_bounds(0, i, 2) for i in range(2)] == [(0, 0), (0, 0)]
  # whole chunks of 4: 3 chunks (the last of 2) over 2 hosts
  assert [host_blocks.block_bounds(10, i, 2, align=4) for i in range(2)] == [(0, 4), (4, 10)]


@pytest.mark.parametrize("args, message", [
    ((5, 2, 2), r"shard_index must be in \[0, 2\)"),
    ((5, -1, 2), r"shard_index must be in \[0, 2\)"),
    ((5, 0, 0), "num_shards must be an integer >= 1"),
    ((-1, 0, 1), "num_records must be an integer >= 0"),
])
def test_bad_block_arguments_are_named(args, message):
  with pytest.raises(ValueError, match=message):
    host_blocks.block_bounds(*args)


def _records(n):
  return [Record(id=f"r{i}", text=f"x = {i}\n", origin="test") for i in range(n)]


@pytest.mark.parametrize("num_records", [0, 1, 7, 23])
@pytest.mark.parametrize("align", [1, 4])
def test_read_block_concatenates_to_the_file(tmp_path, num_records, align):
  path = str(tmp_path / "code.jsonl")
  write_records(_records(num_records), path)
  want = [r.id for r in read_records(path)]
  for num_shards in (1, 2, 3, num_records + 2):
    got = [r.id for i in range(num_shards)
           for r in host_blocks.read_block(path, i, num_shards, align=align)]
    assert got == want


def test_read_block_skips_blank_lines_and_does_not_decode_other_blocks(tmp_path):
  path = tmp_path / "code.jsonl"
  lines = [r.to_json() for r in _records(4)]
  path.write_text("\n".join(json.dumps(line) for line in lines[:2]) + "\n\n  \nnot json\n"
                  + "\n".join(json.dumps(line) for line in lines[2:]) + "\n")
  # 5 records (the bad line counts): host 1 of 2 reads records 2..4 from the bad one on
  with pytest.raises(ValueError, match=r"code.jsonl:5: "):
    list(host_blocks.read_block(str(path), 1, 2))
  assert [r.id for r in host_blocks.read_block(str(path), 0, 2)] == ["r0", "r1"]


def test_part_names():
  assert host_blocks.part_path("/w/quality/scores.jsonl", 3, 16) == \
      "/w/quality/scores.part-00003-of-00016.jsonl"
  assert host_blocks.output_path("/w/a.jsonl", 0, 1) == "/w/a.jsonl"
  assert host_blocks.output_path("/w/a.npz", 1, 2) == "/w/a.part-00001-of-00002.npz"


def _write_parts(path, contents):
  for i, data in enumerate(contents):
    with open(host_blocks.part_path(path, i, len(contents)), "wb") as f:
      f.write(data)


def test_merge_concatenates_in_order_and_removes_parts_of_every_count(tmp_path):
  path = str(tmp_path / "scores.jsonl")
  _write_parts(path, [b'{"id": 0}\n{"id": 1}\n', b"", b'{"id": 2}\n'])
  _write_parts(path, [b"stale\n", b"stale\n"])  # an earlier run on two hosts
  other = tmp_path / "scores_other.part-00000-of-00001.jsonl"  # not a part of scores
  other.write_bytes(b"x\n")
  assert host_blocks.merge_parts(path, 3) == 30
  with open(path, "rb") as f:
    assert f.read() == b'{"id": 0}\n{"id": 1}\n{"id": 2}\n'
  assert sorted(os.listdir(tmp_path)) == ["scores.jsonl", "scores_other.part-00000-of-00001.jsonl"]


@pytest.mark.parametrize("contents, message", [
    ([b"a\n", None, b"c\n", None], "2 of its 4 parts are missing: .*scores.part-00001-of-00004"
                                   ".jsonl, .*scores.part-00003-of-00004.jsonl"),
    ([b"a\n", b'{"id": 1'], "part .*scores.part-00001-of-00002.jsonl does not end with a "
                            "newline"),
])
def test_a_missing_or_cut_off_part_is_named_and_nothing_is_written(tmp_path, contents,
                                                                   message):
  path = str(tmp_path / "scores.jsonl")
  with open(path, "wb") as f:
    f.write(b"previous\n")
  for i, data in enumerate(contents):
    if data is not None:
      with open(host_blocks.part_path(path, i, len(contents)), "wb") as f:
        f.write(data)
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(host_blocks.BlockError, match=message):
    host_blocks.merge_parts(path, len(contents))
  with open(path, "rb") as f:
    assert f.read() == b"previous\n"
  assert sorted(os.listdir(tmp_path)) == before  # no temp file, the parts kept


class ThreadHosts:
  """`num_shards` hosts as threads: sync(name, ok) is a barrier that also gathers oks
  and checks every host arrived with the same name."""

  def __init__(self, num_shards):
    self.num_shards = num_shards
    self.barrier = threading.Barrier(num_shards)
    self.arrivals = {}
    self.lock = threading.Lock()

  def sync(self, index):
    def sync(name, ok):
      with self.lock:
        self.arrivals.setdefault(name, {})[index] = ok
      self.barrier.wait(timeout=20)
      got = self.arrivals[name]
      self.barrier.wait(timeout=20)
      return [got[i] for i in range(self.num_shards)]
    return sync

  def run(self, host):
    """host(index, sync) in every thread; each thread's result or exception."""
    results = [None] * self.num_shards

    def target(index):
      try:
        results[index] = host(index, self.sync(index))
      except Exception as e:  # pylint: disable=broad-except
        results[index] = e

    threads = [threading.Thread(target=target, args=(i,)) for i in range(self.num_shards)]
    for t in threads:
      t.start()
    for t in threads:
      t.join(timeout=60)
    return results


def _copy_block(source, outputs, num_shards, merged, fail=None):
  """A step on `num_shards` thread hosts: each copies its block of `source` to the first
  output and its ids to the second."""

  def host(index, sync):
    def write(paths):
      if index == fail:
        raise OSError(f"host {index} failed")
      block = list(host_blocks.read_block(source, index, num_shards))
      write_records(block, paths[0])
      with open(paths[1], "w") as f:
        f.write("".join(r.id + "\n" for r in block))
      return len(block)
    return host_blocks.write_blocks(outputs, write, shard_index=index, num_shards=num_shards,
                                    name="copy", after_merge=lambda: merged.append(index),
                                    sync=sync)

  return ThreadHosts(num_shards).run(host)


@pytest.mark.parametrize("num_shards", [1, 2, 3, 9])
def test_hosts_write_parts_and_process_0_merges_them(tmp_path, num_shards):
  source = str(tmp_path / "code.jsonl")
  write_records(_records(7), source)
  outputs = [str(tmp_path / "out" / "copy.jsonl"), str(tmp_path / "out" / "ids.txt")]
  os.makedirs(tmp_path / "out")
  stale = host_blocks.part_path(outputs[0], 0, 5)  # a crashed run's part
  with open(stale, "w") as f:
    f.write("stale\n")
  merged = []
  counts = _copy_block(source, outputs, num_shards, merged)
  assert sum(counts) == 7 and merged == [0]
  with open(source, "rb") as a, open(outputs[0], "rb") as b:
    assert a.read() == b.read()
  with open(outputs[1]) as f:
    assert f.read() == "".join(f"r{i}\n" for i in range(7))
  assert sorted(os.listdir(tmp_path / "out")) == ["copy.jsonl", "ids.txt"]


def test_a_failed_host_fails_every_host_and_nothing_is_merged(tmp_path):
  source = str(tmp_path / "code.jsonl")
  write_records(_records(7), source)
  outputs = [str(tmp_path / "copy.jsonl"), str(tmp_path / "ids.txt")]
  merged = []
  results = _copy_block(source, outputs, 3, merged, fail=1)
  assert isinstance(results[1], OSError)
  for i in (0, 2):
    assert isinstance(results[i], host_blocks.BlockError)
    assert "process(es) [1] failed to write their parts" in str(results[i])
  assert merged == [] and not any(os.path.exists(p) for p in outputs)


def test_a_failed_merge_fails_every_host(tmp_path):
  outputs = [str(tmp_path / "out.jsonl")]

  def host(index, sync):
    def write(paths):
      if index != 1:  # host 1 writes no part: as if it could not see the directory
        with open(paths[0], "w") as f:
          f.write(f"{index}\n")
    return host_blocks.write_blocks(outputs, write, shard_index=index, num_shards=2,
                                    name="copy", sync=sync)

  results = ThreadHosts(2).run(host)
  assert isinstance(results[0], host_blocks.BlockError)
  assert "part-00001-of-00002.jsonl" in str(results[0])
  assert isinstance(results[1], host_blocks.BlockError)
  assert "process 0 failed to merge" in str(results[1])
  assert not os.path.exists(outputs[0])
