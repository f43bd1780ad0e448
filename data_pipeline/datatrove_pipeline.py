"""The curate step on datatrove's executors: shard-parallel filters, dedup across shards
through a keyed shuffle on files (data_pipeline/curation.py describes the phases).

    run_dir = run(shards, settings, work_dir, workers=2)   # LocalPipelineExecutor
    run_dir = run(shards, settings, work_dir, executor=slurm)   # any executor factory
    curation.collect(shards, settings, work_dir, run_dir, out_path)   # the result

datatrove has no shuffle of its own: its MinHash dedup, like this module, has each task
write its keys into one file per key partition, and then one task per partition read
that partition's files from every shard. Four executors, each depending on the last:

  filter    one task per shard: the filter steps (curation.curate_shard), then the
            shard's keys: (text hash, record) and, per LSH band, (band key, (record,
            signature)), each written to keys/<partition>/<shard>.pkl, partition =
            hash(key) mod P
  group     one task per partition: groups its keys; an exact-hash group drops all but
            its smallest record; the records of an LSH bucket give the pairs whose MinHash
            estimate is >= threshold (dedup.bucket_pairs)
  clusters  one task: union-find over every partition's pairs (dedup.removals); writes
            each shard's removals (exact and near) to removals/<shard>.pkl
  dedup     one task per shard: curation.dedup_shard with that shard's removals

Every file is written whole (temp then rename) before datatrove marks the task complete
(logs/<phase>/completions/), so a killed run resumes: a rerun skips the complete tasks
and redoes the others. The work directory is keyed by the fingerprint of the shards and
settings (and `dedup.SHINGLE_HASH_VERSION`, as the keys hold MinHash signatures), so a
changed input never reuses stale work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from data_pipeline import curation, dedup, host_blocks
from phi_jax import atomic, hosts

# Test hook: on a multi-host run, the process SIGKILLs itself after running its block of
# this phase's tasks ('filter', 'group', 'clusters', 'dedup'), before the phase's barrier.
KILL_IN_PHASE_ENV = "PHI_JAX_TEST_KILL_IN_CURATE_PHASE"

def _repo_root() -> str:
  return os.path.dirname(os.path.dirname(os.path.abspath(curation.__file__)))


@contextlib.contextmanager
def _workers_import_this_checkout() -> Iterator[None]:
  """The executor's worker processes (forkserver) import the step code from this
  checkout, whatever the interpreter has installed."""
  old = os.environ.get("PYTHONPATH")
  os.environ["PYTHONPATH"] = os.pathsep.join([_repo_root()] + ([old] if old else []))
  try:
    yield
  finally:
    if old is None:
      os.environ.pop("PYTHONPATH", None)
    else:
      os.environ["PYTHONPATH"] = old


def _partition(key: bytes, partitions: int) -> int:
  return int.from_bytes(key[-8:], "little") % partitions


def _load(path: str) -> Any:
  with open(path, "rb") as f:
    return pickle.load(f)


def _save(obj: Any, path: str) -> None:
  atomic.write_bytes(path, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


class Job:
  """The curate step's phases over `shards`, as functions of a task's rank."""

  def __init__(self, shards: Sequence[curation.Shard], settings: curation.CurationSettings,
               work_dir: str, partitions: int):
    self.shards, self.settings, self.partitions = list(shards), settings, partitions
    # the keys files hold signatures: a changed shingle hash must not reuse them
    key = json.dumps([[s.fingerprint(settings) for s in self.shards], partitions,
                      dedup.SHINGLE_HASH_VERSION])
    self.run_dir = os.path.join(work_dir, "run-" + hashlib.sha256(key.encode())
                                .hexdigest()[:16])
    self.work_dir = work_dir

  def path(self, *parts: str) -> str:
    return os.path.join(self.run_dir, *parts)

  def filter(self, rank: int) -> None:
    shard = self.shards[rank]
    curation.curate_shard(shard, self.settings, self.work_dir)
    bands, rows = self.settings.near_dedup().hasher.bands(self.settings.near_dup_threshold)
    exact: list[list] = [[] for _ in range(self.partitions)]
    near: list[list] = [[] for _ in range(self.partitions)]
    for key, text_hash, signature in curation.shard_signatures(shard, self.settings,
                                                              self.work_dir):
      member = (key, shard.index)
      exact[_partition(text_hash, self.partitions)].append((text_hash, member))
      for band in dedup.band_keys(np.frombuffer(signature, np.uint64), bands, rows):
        near[_partition(band, self.partitions)].append((band, (member, signature)))
    for p in range(self.partitions):
      _save({"exact": exact[p], "near": near[p]},
            self.path("keys", f"{p:05d}", f"{shard.name}.pkl"))

  def group(self, rank: int) -> None:
    exact: dict[bytes, list] = {}
    near: dict[bytes, list] = {}
    for shard in self.shards:
      keys = _load(self.path("keys", f"{rank:05d}", f"{shard.name}.pkl"))
      for text_hash, member in keys["exact"]:
        exact.setdefault(text_hash, []).append(member)
      for band, item in keys["near"]:
        near.setdefault(band, []).append(item)
    exact_removed = {}
    for members in exact.values():
      kept = min(members)
      exact_removed.update({member: kept for member in members if member != kept})
    pairs = {pair for members in near.values() if len(members) > 1
             for pair in dedup.bucket_pairs(members, self.settings.near_dup_threshold)}
    _save({"exact": exact_removed, "pairs": sorted(pairs)},
          self.path("groups", f"{rank:05d}.pkl"))

  def clusters(self, rank: int) -> None:
    del rank  # one task
    exact_removed, pairs = {}, set()
    for p in range(self.partitions):
      group = _load(self.path("groups", f"{p:05d}.pkl"))
      exact_removed.update(group["exact"])
      pairs.update(group["pairs"])
    near_removed = dedup.removals(pairs)
    per_shard: list[dict] = [{"exact": {}, "near": {}} for _ in self.shards]
    for kind, removed in (("exact", exact_removed), ("near", near_removed)):
      for (key, shard_index), (kept, _) in removed.items():
        per_shard[shard_index][kind][key] = kept
    for shard, removals in zip(self.shards, per_shard):
      _save(removals, self.path("removals", f"{shard.name}.pkl"))

  def dedup(self, rank: int) -> None:
    shard = self.shards[rank]
    removals = _load(self.path("removals", f"{shard.name}.pkl"))
    curation.dedup_shard(shard, self.work_dir, self.run_dir, removals["exact"],
                         removals["near"])


class Phase(PipelineStep):
  """A datatrove step that runs one phase of a `Job` for the task's rank."""
  name = "curate"
  type = "phi_jax"

  def __init__(self, job: Job, phase: str):
    super().__init__()
    self.job, self.phase = job, phase
    self.name = f"curate {phase}"

  def run(self, data, rank: int = 0, world_size: int = 1):
    del data, world_size
    getattr(self.job, self.phase)(rank)


def local_executor(pipeline, tasks: int, workers: int, logging_dir: str, depends=None, *,
                   first: int = 0, last: int | None = None):
  """datatrove's LocalPipelineExecutor: `workers` processes run ranks first .. last-1 of
  the `tasks` ranks (default all)."""
  last = tasks if last is None else last
  return LocalPipelineExecutor(pipeline=pipeline, tasks=tasks,
                               workers=max(1, min(workers, last - first)),
                               logging_dir=logging_dir, depends=depends,
                               local_tasks=last - first, local_rank_offset=first)


def run(shards: Sequence[curation.Shard], settings: curation.CurationSettings,
        work_dir: str, *, workers: int = 0, partitions: int = 0,
        executor: Callable[..., Any] | None = None, shard_index: int = 0,
        num_shards: int = 1,
        sync: Callable[[str, bool], list[bool]] = hosts.sync) -> str:
  """Runs the curate step over `shards` with datatrove; the per-shard outputs land under
  `work_dir` (curation.read_shard_stats and curation.join_shards read them).

  Args:
    shards: curation.plan_shards(...).
    settings: what the steps do.
    work_dir: per-shard outputs, keys, removals and the executors' logs.
    workers: processes of the local executor (0: one per core).
    partitions: key partitions of the shuffle (0: one per shard, at most 64).
    executor: a factory (pipeline, tasks, workers, logging_dir, depends) -> executor to
      run elsewhere (datatrove's SlurmPipelineExecutor or RayPipelineExecutor with the
      cluster's settings bound); default the local one.
    shard_index, num_shards: this host and the hosts of a multi-host job
      (`sources.host_shard`) that run the step together on one work directory: each
      runs a contiguous block of every phase's tasks on its own local executor, and
      the phases are separated by barriers (`sync`) instead of datatrove's dependency
      polling. The local executor only.
    sync: the barrier: sync(name, ok) -> every host's ok (default `phi_jax.hosts.sync`).

  Returns:
    the run's directory under work_dir (its final/ holds the deduplicated shards:
    curation.collect joins them). An executor that submits to a cluster returns before
    the tasks finish: collect once they have.
  """
  if not shards:
    raise curation.CurationError("no shard to curate (the sources listed no input)")
  workers = workers or os.cpu_count() or 1
  job = Job(shards, settings, work_dir, partitions or min(len(shards), 64))
  logs = job.path("logs")
  phases = [("filter", len(shards), workers), ("group", job.partitions, workers),
            ("clusters", 1, 1), ("dedup", len(shards), workers)]
  if num_shards > 1:
    if executor is not None:
      raise curation.CurationError("a multi-host job runs the curate step on each host's "
                                   "local executor; a cluster executor runs it alone")
    with _workers_import_this_checkout():
      for phase, tasks, phase_workers in phases:
        _run_host_block(job, phase, tasks, phase_workers, os.path.join(logs, phase),
                        shard_index, num_shards, sync)
    return job.run_dir
  make = executor or local_executor
  previous = None
  for phase, tasks, phase_workers in phases:
    previous = make([Phase(job, phase)], tasks, phase_workers, os.path.join(logs, phase),
                    depends=previous)
  with _workers_import_this_checkout():
    previous.run()
  return job.run_dir


def _run_host_block(job: Job, phase: str, tasks: int, workers: int, logging_dir: str,
                    shard_index: int, num_shards: int,
                    sync: Callable[[str, bool], list[bool]]) -> None:
  """Runs this host's contiguous block of a phase's tasks, then waits for every host;
  CurationError when a host failed (every host stops before the next phase)."""
  first, last = host_blocks.block_bounds(tasks, shard_index, num_shards)

  def run_block() -> None:
    if last == first:
      return
    local_executor([Phase(job, phase)], tasks, workers, logging_dir, first=first,
                   last=last).run()
    if os.environ.get(KILL_IN_PHASE_ENV) == phase:
      print(f"[curate] test hook: SIGKILL after this host's {phase} tasks, before the "
            f"barrier", flush=True)
      os.kill(os.getpid(), signal.SIGKILL)
    incomplete = [r for r in range(first, last) if not _task_complete(logging_dir, r)]
    if incomplete:
      raise curation.CurationError(f"the curate step's {phase} tasks {incomplete} did not "
                                   f"complete (their logs: {logging_dir})")

  _, failed = hosts.run_and_sync(f"curate {phase}", run_block, sync)
  if failed:
    raise curation.CurationError(f"the curate step's {phase} phase failed on host(s) "
                                 f"{failed} (their logs: {logging_dir})")


def _task_complete(logging_dir: str, rank: int) -> bool:
  """datatrove's completion marker of task `rank` (written when its pipeline ended)."""
  return os.path.isfile(os.path.join(logging_dir, "completions", f"{rank:05d}"))
