"""Where the curate step's time goes, per step, against one GC-paused parse per kept file.

    .venv/bin/python bench/profile_curate.py [--config tiny]

Runs the data stage's curate step (`curation.curate_local`, the settings
`recipe/stages/data.py` builds) on the config's own input once to warm the file cache,
then once measured (the parse cache cleared): its CPU seconds, and each step's own
seconds (`StepStats.elapsed_s`, wall clock) in units of the reference, one GC-paused
`ast.parse` of each kept file (CPU seconds), and also against a parse whose tree is
freed while the collector is still paused (`filters.parses_uncached`, as the filters
parse). Prints; appends no row (it explains the rows of `bench/data.py --parts=curate`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--config", default="tiny", help="configs/<name>.py")
  args = parser.parse_args(argv)
  # pylint: disable=g-import-not-at-top
  from bench import compare
  from data_pipeline import curation, filters, records
  config = importlib.import_module(f"configs.{args.config}").get_config()
  cfg = config.data
  settings = curation.CurationSettings.from_data(cfg, config.seed)
  load = compare.load_average()
  with tempfile.TemporaryDirectory(prefix="profile_curate_") as tmp:
    out = os.path.join(tmp, "code.jsonl")
    curation.curate_local(list(cfg.sources), settings, out)  # warms the file cache
    filters.clear_parse_caches()
    filters.text_lines.cache_clear()
    wall, cpu = time.perf_counter(), time.process_time()
    result = curation.curate_local(list(cfg.sources), settings, out)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    kept = [r.text for r in records.read_records(out)]
  parse_cpu = time.process_time()
  for text in kept:
    filters.parse_python_uncached(text)
  parse_cpu = time.process_time() - parse_cpu
  verdict_cpu = time.process_time()  # the tree freed while the GC is paused
  for text in kept:
    filters.parses_uncached(text)
  verdict_cpu = time.process_time() - verdict_cpu
  steps_wall = sum(s["elapsed_s"] for s in result["stats"])
  print(f"config {args.config}; load before/after {load:.1f} / {compare.load_average():.1f}")
  print(f"curate: wall {wall:.2f} s, CPU {cpu:.2f} s; one GC-paused parse of each of the "
        f"{len(kept)} kept files: CPU {parse_cpu:.2f} s; curate CPU / parse CPU "
        f"{cpu / parse_cpu:.2f}")
  print(f"(each kept file parsed with its tree freed before the GC resumes, as the "
        f"filters parse: CPU {verdict_cpu:.2f} s; curate CPU / that {cpu / verdict_cpu:.2f})")
  print(f"{'step':<22}{'in':>6}{'out':>6}{'wall s':>9}{'share':>7}{'~parses (CPU)':>15}")
  for s in result["stats"]:
    share = s["elapsed_s"] / steps_wall
    print(f"{s['name']:<22}{s['in']:>6}{s['out']:>6}{s['elapsed_s']:>9.2f}{share:>7.0%}"
          f"{share * cpu / parse_cpu:>15.2f}")


if __name__ == "__main__":
  main()
