"""`make run`'s wall time: the whole pipeline of a config on a fresh work directory.

    .venv/bin/python bench/pipeline.py [--runs 1] [--keep] [-- run.py flags...]

Runs `python run.py --workdir=<fresh temporary directory> [flags]` `--runs` times one
after another (every run from scratch: nothing is reused between runs) and appends one
row to BENCHMARKS.md: wall seconds (median [min, max] over the runs), the seconds of
the data, pretrain and finetune stages from the nodes' completion markers (each
marker's `seconds`, summed per stage), the load average before/after, the machine and
the commit. A run takes minutes on a 2-core CPU, so the default is one run; the row
says how many.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from bench import compare  # noqa: E402  pylint: disable=g-import-not-at-top

SECTION = "## bench/pipeline.py: make run (run.py on a fresh work directory), wall time"
INTRO = """
`python run.py --workdir=<fresh directory> [flags]`, `runs` times in turn (nothing
reused between runs): wall seconds, median [min, max] over the runs, and the seconds
of the data, pretrain and finetune stages from the nodes' completion markers (median).
The machine may be shared: the 1-minute load average before/after says how much.
"""
COLUMNS = ("date", "commit", "machine", "load before/after", "runs", "flags", "wall s",
           "data s", "pretrain s", "finetune s")
STAGES = ("data", "pretrain", "finetune")

# Sections written by hand before this script: superseded by its first row.
OLD_SECTIONS = (
    "## make run (configs/tiny.py): wall time before and after the orchestration layer",
    "## make run (configs/tiny.py): the whole pipeline, wall time",
)


def stage_seconds(workdir: str) -> dict[str, float]:
  """Seconds per stage: the sum of the `seconds` of its nodes' completion markers."""
  totals: dict[str, float] = {}
  paths = glob.glob(os.path.join(workdir, "**", "*.json"), recursive=True)
  for path in paths:
    try:
      with open(path) as f:
        marker = json.load(f)
    except (OSError, ValueError):
      continue
    if isinstance(marker, dict) and {"node", "stage", "seconds", "fingerprint"} <= set(marker):
      totals[marker["stage"]] = totals.get(marker["stage"], 0.0) + float(marker["seconds"])
  return totals


def run_once(flags: list[str], keep: bool) -> tuple[float, dict[str, float]]:
  workdir = tempfile.mkdtemp(prefix="bench_pipeline_")
  try:
    start = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(REPO_ROOT, "run.py"), f"--workdir={workdir}",
                    *flags], cwd=REPO_ROOT, check=True)
    seconds = time.perf_counter() - start
    return seconds, stage_seconds(workdir)
  finally:
    if keep:
      print(f"work directory kept: {workdir}")
    else:
      shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--runs", type=int, default=1)
  parser.add_argument("--keep", action="store_true", help="keep the work directories")
  parser.add_argument("--no_record", action="store_true")
  parser.add_argument("flags", nargs="*", help="run.py flags (after --)")
  args = parser.parse_args(argv)
  if args.runs < 1:
    parser.error("--runs must be >= 1")
  load_before = compare.load_average()
  walls, stages = [], {stage: [] for stage in STAGES}
  for i in range(args.runs):
    seconds, per_stage = run_once(args.flags, args.keep)
    walls.append(seconds)
    for stage in STAGES:
      if stage in per_stage:
        stages[stage].append(per_stage[stage])
    print(f"run {i + 1}: {seconds:.1f} s; stages {per_stage}")
  load_after = compare.load_average()
  cells = [compare.now(), compare.commit(), compare.machine(),
           f"{load_before:.1f} / {load_after:.1f}", args.runs,
           " ".join(args.flags) or "-", compare.Spread.of(walls).format(1),
           *(compare.Spread.of(stages[s]).format(1) if stages[s] else "-" for s in STAGES)]
  print(dict(zip(COLUMNS, cells)))
  if not args.no_record:
    print(compare.append(SECTION, INTRO, COLUMNS, cells))
    for section in OLD_SECTIONS:
      try:
        compare.supersede(section, f"bench/pipeline.py {cells[0]}")
      except ValueError:
        pass


if __name__ == "__main__":
  main()
