"""The data stage's curate step (sources -> filters -> exact and near dedup), run
in-process or as shards on a distributed engine, with the same result.

    settings = CurationSettings(max_chars=100_000, near_dup_threshold=0.8, seed=0, ...)
    result = curate(["stdlib"], settings, "out/code.jsonl", runner="local")   # one process
    result = curate(["stdlib"], settings, "out/code.jsonl", runner="datatrove", workers=2,
                    work_dir="out/curate_shards")                    # datatrove executors

Both runners run the same `Step`s (`CurationSettings.filter_steps` and `dedup_steps`) and
write the same documents in the same order, with the same per-step stats (timings aside).

In-process (`runner="local"`), the records of every source stream through the filter
steps and the two dedup steps (`run_steps`).

On an engine, the sources are cut into shards (`plan_shards`: a file source's sampled
file list in runs of `shard_files` files, a JSONL or HF source whole) and:

  1. each shard runs the filter steps (`curate_shard`) and writes its kept records and
     its stats under `work_dir/filtered/`, each file atomically; a shard whose output is
     complete (stats written last, same inputs) is not redone, so a killed run resumes;
  2. the dedup decision is made across shards with a keyed shuffle
     (data_pipeline/datatrove_pipeline.py): records grouped by exact text hash, and by
     LSH band key (`dedup.band_keys`) into candidate pairs verified by their MinHash
     estimate (`dedup.bucket_pairs`); the clusters of the pairs keep their smallest
     record (`dedup.removals`), as the in-process steps do;
  3. each shard drops what the decision removes (`dedup_shard`), counting into the same
     dedup stats, and writes the run's `final/` (a directory per run's inputs); the
     final shards are joined, in shard order, into the output file (atomically).

Bad input is counted, never fatal, on both paths: the sources' reasons (not_utf8,
binary, too_large_file, invalid_json, unreadable, ...) and `missing_shard` for a source
file that is gone when it is read; each is named in the stats' examples and in the log
(`log_bad_inputs`, at the end of the step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

from data_pipeline import dedup, filters, host_blocks, sources
from data_pipeline.records import Record, read_records, write_records
from data_pipeline.settings import DataSettings
from data_pipeline.steps import Step, StepStats, run_steps
from phi_jax import atomic, hosts

RUNNERS = ("local", "datatrove")
MISSING_SHARD = "missing_shard"
# reasons a source or step drops an input because the input itself is bad (not because a
# filter judged a good document); they are logged one line each
BAD_INPUT_REASONS = frozenset({"not_utf8", "binary", "too_large_file", "unreadable",
                               "invalid_json", "not_an_object", "missing_text_field",
                               "text_not_string", MISSING_SHARD})


class CurationError(ValueError):
  """A curation setting or source is wrong (the message names it)."""


@dataclasses.dataclass(frozen=True)
class CurationSettings:
  """What the curate step does (picklable: engine workers rebuild the steps from it).

  The fields are `config.data`'s (data_pipeline/settings.py's DataSettings owns their
  defaults, ranges and documentation) plus the run's seed; `from_data` builds them from it.

  Attributes:
    max_files: file sources: a seeded sample of this many files; JSONL/HF sources: at most
      this many records (0: all).
    seed: sampling and MinHash seed.
    text_field, license_field: JSONL/HF field names ('' = the source's default / none).
    max_chars: SizeFilter's limit.
    near_dup_threshold, num_perm: MinHash near-dedup settings.
  """
  max_files: int = DataSettings.max_files
  seed: int = 0
  text_field: str = ""
  license_field: str = ""
  max_chars: int = DataSettings.max_chars
  near_dup_threshold: float = DataSettings.near_dup_threshold
  num_perm: int = DataSettings.num_perm

  @classmethod
  def from_data(cls, data: Any, seed: int) -> CurationSettings:
    """From `config.data` (a DataSettings or a config with its fields) and the run's seed."""
    return cls(max_files=data.max_files, seed=seed, text_field=data.text_field,
               license_field=data.license_field, max_chars=data.max_chars,
               near_dup_threshold=data.near_dup_threshold, num_perm=data.num_perm)

  def filter_steps(self) -> list[Step]:
    """The per-record steps (each record judged alone: they run per shard).

    Each keeps a record by its own text and metadata alone, so their order decides only
    which step counts a drop, never what is kept: the text-only ones come first so that
    the parse (the chain's cost) is spent on fewer of the files dropped later.
    """
    return [filters.SizeFilter(max_chars=self.max_chars), filters.AutogeneratedFilter(),
            filters.ParseFilter(), filters.DataDumpFilter()]

  def dedup_steps(self) -> list[Step]:
    """The steps that compare records (across shards on an engine)."""
    return [dedup.ExactDedup(), self.near_dedup()]

  def near_dedup(self) -> dedup.MinHashDedup:
    return dedup.MinHashDedup(threshold=self.near_dup_threshold, num_perm=self.num_perm,
                              seed=self.seed)

  def fingerprint(self) -> str:
    return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True)
                          .encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class Shard:
  """A part of one source: `paths` (a run of a file source's .py files, or one data file
  of a glob of .parquet/.jsonl shards) or, when empty, the whole source `spec` (a JSONL
  file, an HF dataset)."""
  index: int
  spec: str
  paths: tuple[str, ...] = ()

  @property
  def name(self) -> str:
    return f"{self.index:06d}"

  def fingerprint(self, settings: CurationSettings) -> str:
    key = json.dumps([self.spec, list(self.paths), settings.fingerprint()])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def source_records(spec: str, settings: CurationSettings, stats: StepStats,
                   paths: Sequence[str] | None = None) -> Iterator[Record]:
  """The records of source `spec` (or of its files `paths`), counted in `stats`. A source
  file gone by the time it is read is counted as `missing_shard`."""
  if paths is not None:
    if sources.is_file_shards(spec):
      yield from sources.shard_file_records(paths, settings.text_field or "text",
                                            settings.license_field or "license", stats=stats)
    else:
      yield from sources.file_records(spec, paths, stats=stats)
    return
  limit = settings.max_files or None
  try:
    records = sources.read_source(spec, max_files=limit, seed=settings.seed,
                                  text_field=settings.text_field or None,
                                  license_field=settings.license_field or None,
                                  max_records=limit, stats=stats)
  except sources.SourceError as e:
    if spec.startswith("hf:") or os.path.exists(spec):
      raise CurationError(f"source {spec!r}: {e}") from None
    stats.records_in += 1
    stats.drop(MISSING_SHARD, f"{spec} (gone before it was read)")
    return
  yield from records


def log_bad_inputs(stats: Sequence[dict[str, Any]], stream: TextIO | None = None) -> None:
  """One log line per bad input named in the stats' examples (the first MAX_EXAMPLES of
  each step), and a count per reason."""
  stream = stream or sys.stderr
  for step in stats:
    bad = {r: n for r, n in step["dropped"].items() if r in BAD_INPUT_REASONS}
    if not bad:
      continue
    for example in step["examples"]:
      if example.split(":", 1)[0] in bad:
        print(f"curate: {step['name']}: skipped {example}", file=stream)
    counts = ", ".join(f"{reason} {n}" for reason, n in sorted(bad.items()))
    print(f"curate: {step['name']}: bad inputs skipped: {counts}", file=stream, flush=True)


# ---------------------------------------------------------------------- in-process
def curate_local(specs: Sequence[str], settings: CurationSettings, out_path: str, *,
                 progress_every: int = 0) -> dict[str, Any]:
  """Runs every step in this process; writes the kept records to `out_path` (atomically).
  Returns {"documents", "bytes", "stats": per-step stats dicts, "out"}."""
  source_stats: list[StepStats] = []
  steps = settings.filter_steps() + settings.dedup_steps()

  def read_all() -> Iterator[Record]:
    for spec in specs:
      stats = StepStats(f"source:{spec}")
      source_stats.append(stats)
      yield from source_records(spec, settings, stats)

  kept = list(run_steps(read_all(), steps, progress_every=progress_every, label="curate"))
  write_records(kept, out_path)
  stats = [s.to_dict() for s in source_stats + [step.stats for step in steps]]
  return _result(kept, stats, out_path)


def _result(kept: Sequence[Record], stats: list[dict[str, Any]], out_path: str) -> dict:
  return {"documents": len(kept), "bytes": sum(len(r.text.encode()) for r in kept),
          "stats": stats, "out": out_path}


# ---------------------------------------------------------------------- sharded
def plan_shards(specs: Sequence[str], settings: CurationSettings,
                shard_files: int = 200) -> list[Shard]:
  """The shards of `specs`, in the order the in-process run reads them."""
  if shard_files < 1:
    raise CurationError(f"shard_files must be >= 1, got {shard_files}")
  shards: list[Shard] = []
  for spec in specs:
    if _splits_by_data_file(spec, settings):
      # a glob of .parquet/.jsonl shards: one shard per data file (each is large)
      for path in sources.shard_files(spec):
        shards.append(Shard(len(shards), spec, (path,)))
      continue
    paths = sources.file_source_paths(spec, max_files=settings.max_files or None,
                                      seed=settings.seed)
    if paths is None:
      shards.append(Shard(len(shards), spec))
      continue
    for start in range(0, len(paths), shard_files):
      shards.append(Shard(len(shards), spec, tuple(paths[start:start + shard_files])))
  return shards


def _splits_by_data_file(spec: str, settings: CurationSettings) -> bool:
  """Whether `spec` is read as one shard per data file: a glob of several .parquet /
  .jsonl[.gz] files (`sources.is_file_shards`) whose records are not capped (a cap of
  max_files records counts across all the files, so such a source stays one shard)."""
  if settings.max_files or not sources.is_file_shards(spec):
    return False
  try:
    return len(sources.shard_files(spec)) > 1
  except sources.SourceError:  # nothing matches: read (and counted) as one shard
    return False


def _paths(work_dir: str, kind: str, shard: Shard) -> tuple[str, str]:
  base = os.path.join(work_dir, kind, shard.name)
  return base + ".jsonl", base + ".stats.json"


def _complete(stats_path: str, fingerprint: str) -> dict[str, Any] | None:
  """The stats of a complete shard output with this fingerprint, or None."""
  try:
    with open(stats_path, encoding="utf-8") as f:
      stats = json.load(f)
  except (OSError, ValueError):
    return None
  return stats if stats.get("fingerprint") == fingerprint else None


def curate_shard(shard: Shard, settings: CurationSettings, work_dir: str) -> dict[str, Any]:
  """Runs the filter steps over one shard; writes its kept records, then its stats, each
  atomically (the stats file marks the shard complete). A complete shard with the same
  inputs is not redone. Returns the stats: {"fingerprint", "shard", "source", "steps"}."""
  records_path, stats_path = _paths(work_dir, "filtered", shard)
  fingerprint = shard.fingerprint(settings)
  done = _complete(stats_path, fingerprint)
  if done is not None and os.path.isfile(records_path):
    return done
  source_stats = StepStats(f"source:{shard.spec}")
  steps = settings.filter_steps()
  records = source_records(shard.spec, settings, source_stats,
                           list(shard.paths) if shard.paths else None)
  write_records(run_steps(records, steps), records_path)
  stats = {"fingerprint": fingerprint, "shard": shard.index,
           "source": source_stats.to_dict(), "steps": [s.stats.to_dict() for s in steps]}
  atomic.write_json(stats, stats_path)
  return stats


def shard_signatures(shard: Shard, settings: CurationSettings, work_dir: str
                     ) -> Iterator[tuple[tuple[str, str], bytes, bytes]]:
  """(order key, exact-text hash, MinHash signature bytes) of each kept record of a
  filtered shard."""
  hasher = settings.near_dedup().hasher
  for record in read_records(_paths(work_dir, "filtered", shard)[0]):
    yield (dedup.order_key(record), dedup.text_hash(record.text),
           hasher.signature(record.text).tobytes())


def dedup_shard(shard: Shard, work_dir: str, final_dir: str, exact_removed: dict,
                near_removed: dict) -> dict[str, Any]:
  """Drops a filtered shard's records that the cross-shard decision removes ({order key:
  kept order key}; near only among exact survivors), counting into ExactDedup's and
  MinHashDedup's stats; writes the shard's final records, then its stats, under
  `final_dir` (atomically)."""
  records_path, stats_path = _paths(final_dir, "final", shard)
  # the dedup steps' stats, without building the steps (MinHashDedup loads datasketch)
  exact, near = StepStats(dedup.ExactDedup.name), StepStats(dedup.MinHashDedup.name)
  kept_bytes = 0

  def kept() -> Iterator[Record]:
    nonlocal kept_bytes
    for record in read_records(_paths(work_dir, "filtered", shard)[0]):
      key = dedup.order_key(record)
      exact.records_in += 1
      if key in exact_removed:
        exact.drop("exact_duplicate", f"{record.origin} = {exact_removed[key][1]}")
        continue
      exact.records_out += 1
      near.records_in += 1
      if key in near_removed:
        near.drop("near_duplicate", f"{record.origin} ~ {near_removed[key][1]}")
        continue
      near.records_out += 1
      kept_bytes += len(record.text.encode())
      yield record

  documents = write_records(kept(), records_path)
  stats = {"shard": shard.index, "documents": documents, "bytes": kept_bytes,
           "steps": [exact.to_dict(), near.to_dict()]}
  atomic.write_json(stats, stats_path)
  return stats


def exact_removals(groups: Sequence[Sequence[tuple[str, str]]]) -> dict:
  """{dropped key: kept key} of exact-hash groups (each a list of order keys)."""
  return {key: min(group) for group in groups for key in group if key != min(group)}


def merge_shard_stats(shards: Sequence[Shard], filtered: dict[int, dict],
                      final: dict[int, dict]) -> list[dict[str, Any]]:
  """The per-step stats of the whole run from the shards' (in shard order): one entry
  per source (as the in-process run's `source:<spec>`), then one per step."""
  merged_sources: dict[str, StepStats] = {}
  merged_steps: list[StepStats] = []
  for shard in shards:
    parts = filtered[shard.index]
    source = StepStats.from_dict(parts["source"])
    if source.name in merged_sources:
      merged_sources[source.name].merge(source)
    else:
      merged_sources[source.name] = source
    for i, step in enumerate(parts["steps"] + final[shard.index]["steps"]):
      if i == len(merged_steps):
        merged_steps.append(StepStats(step["name"]))
      merged_steps[i].merge(StepStats.from_dict(step))
  return [s.to_dict() for s in list(merged_sources.values()) + merged_steps]


def join_shards(shards: Sequence[Shard], final_dir: str, out_path: str) -> None:
  """Concatenates the final shards, in shard order, into `out_path` (atomically): byte
  copies of their JSONL (written by `write_records`, as `out_path` is), streamed."""
  host_blocks.concatenate_lines([_paths(final_dir, "final", s)[0] for s in shards], out_path)


def read_shard_stats(shards: Sequence[Shard], settings: CurationSettings, work_dir: str,
                     final_dir: str) -> tuple[dict[int, dict], dict[int, dict]]:
  """The filtered and final stats of every shard (after an engine run); a shard without
  complete outputs raises CurationError naming it."""
  filtered, final = {}, {}
  for shard in shards:
    stats = _complete(_paths(work_dir, "filtered", shard)[1], shard.fingerprint(settings))
    final_path = _paths(final_dir, "final", shard)[1]
    if stats is None or not os.path.isfile(final_path):
      raise CurationError(f"shard {shard.name} of {shard.spec!r} has no complete output "
                          f"under {work_dir} (the engine run did not finish)")
    filtered[shard.index] = stats
    with open(final_path, encoding="utf-8") as f:
      final[shard.index] = json.load(f)
    if not {"documents", "bytes"} <= set(final[shard.index]):
      raise CurationError(f"{final_path}: the shard's stats lack its document and byte "
                          f"counts (an older phi_jax wrote them); delete {work_dir} to "
                          f"curate again")
  return filtered, final


def collect(shards: Sequence[Shard], settings: CurationSettings, work_dir: str,
            final_dir: str, out_path: str, *, write: bool = True) -> dict[str, Any]:
  """After an engine run over `shards` (on this host, or submitted to a cluster and
  finished): joins the final shards (under `final_dir`, the run's directory) into
  `out_path` (unless `write` is False: another host does) and merges their stats.
  Nothing holds the corpus: the shards are copied as bytes, the counts come from their
  stats. Returns {"documents", "bytes", "stats", "out", "shards"}."""
  filtered, final = read_shard_stats(shards, settings, work_dir, final_dir)
  if write:
    join_shards(shards, final_dir, out_path)
  return {"documents": sum(final[s.index]["documents"] for s in shards),
          "bytes": sum(final[s.index]["bytes"] for s in shards),
          "stats": merge_shard_stats(shards, filtered, final), "out": out_path,
          "shards": len(shards)}


# ---------------------------------------------------------------------- entry point
def curate(specs: Sequence[str], settings: CurationSettings, out_path: str, *,
           runner: str = "local", workers: int = 0, shard_files: int = 200,
           work_dir: str | None = None, progress_every: int = 0, shard_index: int = 0,
           num_shards: int = 1,
           sync: Callable[[str, bool], list[bool]] = hosts.sync) -> dict[str, Any]:
  """The curate step on `runner`: "local" (in this process) or "datatrove" (datatrove's
  local executor, `workers` processes on this machine; 0 = one per core).

  Args:
    specs: source specs (data_pipeline.sources.read_source).
    settings: what the steps do.
    out_path: the kept records (JSONL, written atomically).
    runner: "local" or "datatrove".
    workers: engine worker processes for runner="datatrove".
    shard_files: files per shard of a file source (engine runs).
    work_dir: the engine's per-shard outputs (default: beside out_path); a rerun reuses
      the complete ones.
    progress_every: in-process: a progress line every this many records.
    shard_index, num_shards, sync: the hosts of a multi-host job running the step
      together (`sources.host_shard`, `phi_jax.hosts.sync`): with runner="datatrove"
      each host runs its block of every phase's tasks (`datatrove_pipeline.run`) and
      host 0 joins the result; the in-process runner does the whole step on each host.

  Returns:
    {"documents", "bytes", "stats", "out"} (+ "shards", "runner" for an engine run).
  """
  if runner == "local":
    result = curate_local(specs, settings, out_path, progress_every=progress_every)
  elif runner == "datatrove":
    from data_pipeline import datatrove_pipeline  # pylint: disable=g-import-not-at-top
    work_dir = work_dir or os.path.splitext(out_path)[0] + "_shards"
    shards = plan_shards(specs, settings, shard_files)
    run_dir = datatrove_pipeline.run(shards, settings, work_dir, workers=workers,
                                     shard_index=shard_index, num_shards=num_shards,
                                     sync=sync)
    if num_shards == 1:
      result = collect(shards, settings, work_dir, run_dir, out_path)
    else:  # host 0 joins; every host returns the same counts once the output is there
      result, failed = hosts.run_and_sync(
          "curate joined", lambda: collect(shards, settings, work_dir, run_dir, out_path,
                                           write=shard_index == 0), sync)
      if failed:
        raise CurationError(f"joining the curated shards failed on host(s) {failed}")
    result = {**result, "runner": runner}
  else:
    raise CurationError(f"runner {runner!r}: expected one of {', '.join(RUNNERS)}")
  log_bad_inputs(result["stats"])
  return result
