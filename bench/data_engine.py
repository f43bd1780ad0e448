"""Benchmark: the curate step in-process and on datatrove's executor, by worker count,
and what 35M files (The Stack's Python + StackOverflow, as in the paper) would cost.

    python bench/data_engine.py [--max_files 1200] [--workers 1,2] [--shard_files 100]
                                [--no_record]

Runs `data_pipeline.curation.curate` (filters, exact and MinHash near-dedup) over the
same seeded sample of the stdlib's .py files: once in-process (runner "local") and on
datatrove's local executor with each worker count (runner "datatrove"), each in a fresh
work directory, and checks that every run kept the same documents. Reported per run:
wall seconds, files/s, and (for the runs in one process: local, and datatrove with one
worker, which runs its tasks in-process) the CPU seconds per file.

The projection takes the engine's measured CPU seconds per file (datatrove, one worker,
which runs its tasks in this process: filters, keys, shuffle files, dedup, all phases;
the in-process run's figure is printed beside it) and assumes the shards scale out
(independent tasks): core-hours = files x s/file / 3600, wall = core-hours / workers.
It leaves out the serial union-find of the near-duplicate pairs (one task; its input is
the pairs, far fewer than the files) and the executors' start-up per phase.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from bench import record  # noqa: E402  pylint: disable=g-import-not-at-top

STACK_FILES = 35_000_000  # The Stack (Python) + StackOverflow, as the paper curates them
PROJECTED_WORKERS = (100, 1000)

RUNS_SECTION = "## bench/data_engine.py: curate step, in-process vs datatrove by workers"
RUNS_COLUMNS = ("date", "machine", "runner", "workers", "files", "shards", "kept",
                "wall s", "files/s", "CPU s/file", "speedup vs 1 worker")
RUNS_INTRO = """
`data_pipeline.curation.curate` (filters, exact and MinHash near-dedup) over a seeded
sample of the stdlib's .py files, in-process (`local`) and on datatrove's local executor
(`datatrove`, every phase: filters, keyed shuffle, union-find, dedup); all runs keep the
same documents. CPU s/file only where the run is one process. The machine is shared:
its load average is in the machine column.

""" + record.table_header(RUNS_COLUMNS)

PROJECTION_SECTION = "## bench/data_engine.py: projected curate cost for 35M files"
PROJECTION_COLUMNS = ("date", "machine", "from", "CPU s/file", "files", "workers",
                      "wall hours", "core-hours")
PROJECTION_INTRO = """
From the measured CPU seconds per file of the row named in `from` (same date), with the
shards scaling out: core-hours = files x s/file / 3600; wall = core-hours / workers
(the serial union-find of near-duplicate pairs and executor start-up left out).

""" + record.table_header(PROJECTION_COLUMNS)


def time_curate(runner: str, workers: int, max_files: int, shard_files: int) -> dict:
  """Runs the curate step once in a fresh directory; wall and this process's CPU time."""
  from data_pipeline import curation  # pylint: disable=g-import-not-at-top
  settings = curation.CurationSettings(max_files=max_files, seed=0)
  with tempfile.TemporaryDirectory(prefix="bench_engine_") as tmp:
    out = os.path.join(tmp, "code.jsonl")
    wall, cpu = time.perf_counter(), time.process_time()
    result = curation.curate(["stdlib"], settings, out, runner=runner, workers=workers,
                             shard_files=shard_files, work_dir=os.path.join(tmp, "shards"))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    with open(out, "rb") as f:
      content = f.read()
  files = result["stats"][0]["in"]
  one_process = runner == "local" or workers == 1
  return {"runner": runner, "workers": workers, "files": files,
          "shards": result.get("shards", 1), "kept": result["documents"], "wall_s": wall,
          "cpu_per_file": cpu / files if one_process else None, "content": content}


def projection(cpu_per_file: float, workers: int, files: int = STACK_FILES
               ) -> tuple[float, float]:
  """(wall hours, core-hours) of `files` at `cpu_per_file` over `workers` workers."""
  core_hours = files * cpu_per_file / 3600
  return core_hours / workers, core_hours


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--max_files", type=int, default=1200, help="stdlib .py files")
  parser.add_argument("--workers", default="1,2", help="datatrove worker counts")
  parser.add_argument("--shard_files", type=int, default=100, help="files per shard")
  parser.add_argument("--no_record", action="store_true")
  args = parser.parse_args(argv)
  worker_counts = [int(w) for w in args.workers.split(",")]

  machine = record.cpu_description()
  runs = [time_curate("local", 1, args.max_files, args.shard_files)]
  runs += [time_curate("datatrove", w, args.max_files, args.shard_files)
           for w in worker_counts]
  if len({run["content"] for run in runs}) != 1:
    raise SystemExit("the runs kept different documents: the engine path is broken")
  one_worker = {run["runner"]: run["wall_s"] for run in runs if run["workers"] == 1}
  engine = next((r for r in runs if r["runner"] == "datatrove" and r["workers"] == 1), None)

  print(f"\n{'runner':<11}{'workers':>8}{'files':>7}{'shards':>7}{'kept':>6}{'wall s':>9}"
        f"{'files/s':>9}{'CPU s/file':>12}{'speedup':>9}")
  rows = []
  for run in runs:
    speedup = one_worker.get(run["runner"], run["wall_s"]) / run["wall_s"]
    cpu = f"{run['cpu_per_file'] * 1000:.2f} ms" if run["cpu_per_file"] else "-"
    files_s = run["files"] / run["wall_s"]
    print(f"{run['runner']:<11}{run['workers']:>8}{run['files']:>7}{run['shards']:>7}"
          f"{run['kept']:>6}{run['wall_s']:>9.2f}{files_s:>9.1f}{cpu:>12}{speedup:>9.2f}")
    rows.append(record.markdown_row([
        record.now(), machine, run["runner"], run["workers"], run["files"], run["shards"],
        run["kept"], f"{run['wall_s']:.2f}", f"{files_s:.1f}", cpu, f"{speedup:.2f}"]))

  projected = []
  if engine is not None:
    for workers in PROJECTED_WORKERS:
      wall_h, core_h = projection(engine["cpu_per_file"], workers)
      projected.append(("datatrove, 1 worker", engine["cpu_per_file"], workers, wall_h,
                        core_h))
    local = runs[0]["cpu_per_file"]
    print(f"\nengine CPU per file: {engine['cpu_per_file'] * 1000:.2f} ms, in-process "
          f"{local * 1000:.2f} ms ({engine['cpu_per_file'] / local - 1:+.0%}: the keys, "
          f"shuffle files and re-reads of the sharded dedup)")
  print(f"\n{'from':<22}{'CPU s/file':>11}{'files':>12}{'workers':>8}{'wall h':>9}"
        f"{'core-h':>9}")
  for label, cpu, workers, wall_h, core_h in projected:
    print(f"{label:<22}{cpu:>11.4f}{STACK_FILES:>12,}{workers:>8}{wall_h:>9.2f}"
          f"{core_h:>9.1f}")
  if engine is None:
    print("(no one-worker datatrove run: the engine's projection needs --workers with 1)")

  if args.no_record:
    return
  for row in rows:
    record.append_row(RUNS_SECTION, RUNS_INTRO, row)
  for label, cpu, workers, wall_h, core_h in projected:
    record.append_row(PROJECTION_SECTION, PROJECTION_INTRO, record.markdown_row([
        record.now(), machine, label, f"{cpu:.4f}", f"{STACK_FILES:,}", workers,
        f"{wall_h:.2f}", f"{core_h:.1f}"]))
  print(f"\nappended to {record.BENCHMARKS_FILE}")


if __name__ == "__main__":
  main()
