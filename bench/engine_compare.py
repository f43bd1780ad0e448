"""Benchmark: the same curate filters on Apache Beam and on datatrove (the measurement
behind the engine choice in docs/data_at_scale.md).

    python bench/engine_compare.py --engine beam|datatrove [--workers 2] [--max_files 1200]
                                   [--shards 8]

Beam cannot be installed beside the pinned TF/SeqIO stack (protobuf), so run this from a
scratch venv that has the engine, numpy and datasketch, with this checkout on PYTHONPATH:

    python3 -m venv /tmp/enginevenv
    /tmp/enginevenv/bin/pip install apache-beam==2.77.0 datatrove==0.10.1 numpy datasketch
    PYTHONPATH=$PWD /tmp/enginevenv/bin/python bench/engine_compare.py --engine beam

Each engine runs one task per shard of a seeded sample of the stdlib's .py files; a task
reads its files and runs the filter steps (`CurationSettings().filter_steps()`). Prints
one JSON line: wall seconds, CPU seconds of this process and the children it reaped
(datatrove's forkserver workers are not among them), and the records kept.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)


def filter_shard(paths: list[str]) -> int:
  """Reads `paths` (stdlib files) and runs the filter steps; the records kept."""
  from data_pipeline import curation, sources  # pylint: disable=g-import-not-at-top
  from data_pipeline.steps import StepStats, run_steps  # pylint: disable=g-import-not-at-top
  records = sources.file_records("stdlib", paths, stats=StepStats("stdlib"))
  return sum(1 for _ in run_steps(records, curation.CurationSettings().filter_steps()))


def run_beam(shards: list[list[str]], workers: int) -> int:
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top
  mode = "multi_processing" if workers > 1 else "in_memory"
  options = PipelineOptions(direct_num_workers=workers, direct_running_mode=mode)
  with tempfile.TemporaryDirectory() as tmp:
    with beam.Pipeline(options=options) as pipeline:
      _ = (pipeline | beam.Create(shards) | beam.Reshuffle() | beam.Map(filter_shard)
           | beam.CombineGlobally(sum)
           | beam.Map(lambda n: open(os.path.join(tmp, "kept"), "w").write(str(n))))
    with open(os.path.join(tmp, "kept")) as f:
      return int(f.read())


def run_datatrove(shards: list[list[str]], workers: int) -> int:
  from datatrove.executor import LocalPipelineExecutor  # pylint: disable=g-import-not-at-top
  from datatrove.pipeline.base import PipelineStep  # pylint: disable=g-import-not-at-top

  class FilterShard(PipelineStep):
    name = "filter shard"

    def run(self, data, rank: int = 0, world_size: int = 1):
      with open(os.path.join(tmp, f"kept-{rank}"), "w") as f:
        f.write(str(filter_shard(shards[rank])))

  with tempfile.TemporaryDirectory() as tmp:
    LocalPipelineExecutor(pipeline=[FilterShard()], tasks=len(shards), workers=workers,
                          logging_dir=os.path.join(tmp, "logs")).run()
    kept = 0
    for rank in range(len(shards)):
      with open(os.path.join(tmp, f"kept-{rank}")) as f:
        kept += int(f.read())
    return kept


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--engine", choices=("beam", "datatrove"), required=True)
  parser.add_argument("--workers", type=int, default=2)
  parser.add_argument("--max_files", type=int, default=1200)
  parser.add_argument("--shards", type=int, default=8)
  args = parser.parse_args(argv)
  os.environ["PYTHONPATH"] = os.pathsep.join(
      [REPO_ROOT] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
  from data_pipeline import sources  # pylint: disable=g-import-not-at-top
  paths = sources.file_source_paths("stdlib", max_files=args.max_files, seed=0)
  shards = [paths[i::args.shards] for i in range(args.shards)]
  start = time.perf_counter()
  kept = (run_beam if args.engine == "beam" else run_datatrove)(shards, args.workers)
  wall = time.perf_counter() - start
  usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
  cpu = sum(u.ru_utime + u.ru_stime for u in usage)
  print(json.dumps({"engine": args.engine, "workers": args.workers, "files": len(paths),
                    "shards": args.shards, "kept": kept, "wall_s": round(wall, 2),
                    "cpu_s": round(cpu, 2), "load": os.getloadavg()[0]}))


if __name__ == "__main__":
  main()
