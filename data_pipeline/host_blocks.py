"""A step's work split over the hosts of a job: contiguous blocks in, merged parts out.

In a job of N processes (`jax.distributed`, one per host, every host running the same
command on a work directory all hosts see), a step that maps a list of records to
output files in order can give each host one contiguous block of the records and merge
what the hosts wrote:

    shard_index, num_shards = sources.host_shard()
    start, stop = block_bounds(count_jsonl(path), shard_index, num_shards)
    records = read_block(path, shard_index, num_shards)      # this host's block, streamed
    result = write_blocks(["out/scores.jsonl"], write, shard_index=shard_index,
                          num_shards=num_shards, name="classify")

Block i of M records is records i*M//N .. (i+1)*M//N - 1, so the blocks in process
order are the records in file order, each exactly once (a host whose block is empty
writes empty parts). With `align`, blocks are made of whole groups of `align` records
(the last group may be shorter): a step that works a chunk at a time then sees the
same chunks as one process does, so its results do not depend on the number of hosts
even where a computation's rounding depends on what else is in its batch.

`write_blocks` runs `write(paths)`, which writes this host's part of each output
(atomically, as every output), then waits for every host (a named barrier that also
says whether every host succeeded), and process 0 merges the parts in order into each
output, atomically, removes them, and runs `after_merge`; a second barrier lets every
host see the merged outputs before it goes on. Part i of N of `dir/name.ext` is
`dir/name.part-0000i-of-0000N.ext`. A rerun after a crash cannot mix old parts with
new ones: every host rewrites its part of this N before the first barrier, the merge
reads only parts of this N, and the merge removes the parts of every N. With one
process there are no parts and no barriers: `write` writes the outputs themselves, by
the same code.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from phi_jax import atomic, hosts
from phi_jax.jsonl import count_jsonl

from data_pipeline import records as records_lib

_T = TypeVar("_T")
PART_DIGITS = 5
COPY_BUFFER_BYTES = 16 << 20


class BlockError(RuntimeError):
  """A part is missing or malformed, or another host failed: the merged output is not
  written."""


def block_bounds(num_records: int, shard_index: int, num_shards: int, *,
                 align: int = 1) -> tuple[int, int]:
  """[start, stop) of block `shard_index` of `num_shards` over `num_records` records.

  The blocks of shard_index 0 .. num_shards-1 are contiguous, in order, and cover every
  record once; their sizes differ by at most one group of `align` records (a block may
  be empty when there are fewer groups than shards).
  """
  for name, value, low in (("num_records", num_records, 0), ("num_shards", num_shards, 1),
                           ("align", align, 1)):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
      raise ValueError(f"block_bounds: {name} must be an integer >= {low}, got {value!r}")
  if isinstance(shard_index, bool) or not isinstance(shard_index, int) \
      or not 0 <= shard_index < num_shards:
    raise ValueError(f"block_bounds: shard_index must be in [0, {num_shards}), got "
                     f"{shard_index!r}")
  groups = -(-num_records // align)
  start = shard_index * groups // num_shards * align
  stop = (shard_index + 1) * groups // num_shards * align
  return min(start, num_records), min(stop, num_records)


def read_block(path: str, shard_index: int, num_shards: int, *, align: int = 1,
               cls: type[_T] = records_lib.Record) -> Iterator[_T]:  # type: ignore[assignment]
  """This host's block of the records of the JSONL file `path` (`records.read_records`),
  streamed. The records are counted first (without decoding them) unless there is one
  shard; the records before the block are read but not decoded."""
  if num_shards == 1:
    block_bounds(0, shard_index, num_shards)  # checks the arguments
    return records_lib.read_records(path, cls)
  start, stop = block_bounds(count_jsonl(path), shard_index, num_shards, align=align)
  return records_lib.read_records(path, cls, start=start, stop=stop)


def part_path(path: str, shard_index: int, num_shards: int) -> str:
  """`dir/name.part-IIIII-of-NNNNN.ext`: part `shard_index` of `num_shards` of `path`."""
  root, ext = os.path.splitext(path)
  return (f"{root}.part-{shard_index:0{PART_DIGITS}d}-of-{num_shards:0{PART_DIGITS}d}"
          f"{ext}")


def output_path(path: str, shard_index: int, num_shards: int) -> str:
  """Where this host writes its share of `path`: `path` itself with one shard, else
  its part."""
  return path if num_shards == 1 else part_path(path, shard_index, num_shards)


def existing_parts(path: str) -> list[str]:
  """The part files of `path` on disk, of any number of shards, sorted."""
  root, ext = os.path.splitext(path)
  pattern = re.compile(re.escape(os.path.basename(root)) + r"\.part-\d+-of-\d+"
                       + re.escape(ext) + "$")
  candidates = glob.glob(glob.escape(root) + ".part-*-of-*" + glob.escape(ext))
  return sorted(p for p in candidates if pattern.match(os.path.basename(p)))


def remove_parts(path: str) -> list[str]:
  """Removes every part file of `path` (of any number of shards); returns them."""
  parts = existing_parts(path)
  for part in parts:
    os.remove(part)
  return parts


def check_parts(path: str, num_shards: int) -> list[str]:
  """The `num_shards` parts of `path` in order; BlockError naming every missing one."""
  parts = [part_path(path, i, num_shards) for i in range(num_shards)]
  missing = [p for p in parts if not os.path.isfile(p)]
  if missing:
    raise BlockError(
        f"cannot merge {path}: {len(missing)} of its {num_shards} parts are missing: "
        f"{', '.join(missing)} (is the work directory on a filesystem every host sees?)")
  return parts


def merge_parts(path: str, num_shards: int, *, remove: bool = True) -> int:
  """Concatenates the parts of `path` (line files: JSONL) in order into `path`,
  atomically; then, with `remove`, removes the parts of every number of shards.
  Returns the bytes written.

  Raises:
    BlockError: a part is missing, or a non-empty part does not end with a newline (a
      cut-off file); `path` is then left as it was.
  """
  written = concatenate_lines(check_parts(path, num_shards), path)
  if remove:
    remove_parts(path)
  return written


def concatenate_lines(sources: Sequence[str], path: str) -> int:
  """Concatenates the line files `sources` in order into `path`, atomically, as byte
  copies (nothing is decoded or held); returns the bytes written. BlockError when a
  non-empty source does not end with a newline (a cut-off file); `path` is then left as
  it was."""
  written = 0
  with atomic.writing(path, "wb") as out:
    for source in sources:
      with open(source, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size:
          f.seek(-1, os.SEEK_END)
          if f.read(1) != b"\n":
            raise BlockError(f"cannot write {path}: its part {source} does not end with a "
                             f"newline (a cut-off file)")
          f.seek(0)
        shutil.copyfileobj(f, out, COPY_BUFFER_BYTES)
        written += size
  return written


def write_blocks(outputs: Sequence[str], write: Callable[[list[str]], _T], *,
                 shard_index: int, num_shards: int, name: str,
                 merge: Callable[[str, int], object] = merge_parts,
                 after_merge: Callable[[], object] | None = None,
                 sync: Callable[[str, bool], list[bool]] = hosts.sync) -> _T:
  """Runs this host's share of a step whose outputs are merged from per-host parts.

  Args:
    outputs: the merged output files.
    write: writes this host's share: called with the paths to write, one per output
      (the outputs themselves with one shard, else this host's parts); each must be
      written atomically. Its return value is returned.
    shard_index, num_shards: this host and the number of hosts (`sources.host_shard`).
    name: the step's name, in the barriers' names and in errors.
    merge: merge(output, num_shards) joins the parts of one output and removes them
      (default `merge_parts`: line files).
    after_merge: run by process 0 once the outputs are merged (or by the one process
      after `write`), before the hosts go on: e.g. a summary every host then reads.
    sync: the barrier (default `phi_jax.hosts.sync`); sync(name, ok) -> every host's ok.

  Raises:
    BlockError: another host failed to write its parts, or process 0 failed to merge
      them (this host's own failure is raised as itself).
  """
  block_bounds(0, shard_index, num_shards)  # checks the arguments
  paths = [output_path(out, shard_index, num_shards) for out in outputs]
  if num_shards == 1:
    result = write(paths)
    for out in outputs:
      remove_parts(out)  # left by an earlier run on several hosts
    if after_merge is not None:
      after_merge()
    return result
  result, failed = hosts.run_and_sync(f"{name}: every host wrote its parts",
                                      lambda: write(paths), sync)
  if failed:
    raise BlockError(f"{name}: process(es) {failed} failed to write their parts (see their "
                     f"logs); nothing was merged")

  def merge_all() -> None:
    if shard_index == 0:
      for out in outputs:
        merge(out, num_shards)
      if after_merge is not None:
        after_merge()

  _, failed = hosts.run_and_sync(f"{name}: process 0 merged the parts", merge_all, sync)
  if failed:
    raise BlockError(f"{name}: process 0 failed to merge the parts (see its log)")
  return result
