"""Benchmark: samples/s of each decontamination check against the 164 HumanEval problems.

    python bench/decontaminate.py [--samples 2000] [--checks ngram,ast,embedding]
                                  [--embed_samples 256] [--no_record]

Pinned to one CPU core (sched_setaffinity, and XLA's CPU backend single-threaded).
Two workloads of exercise-like records ({"prompt", "solution"}):

  stdlib     documented top-level functions of this Python's standard library, split
             into def + docstring and body (what mined / synthetic exercises look
             like; almost none is near a HumanEval problem, so the AST bounds prune
             most pairs);
  near-copy  HumanEval canonical solutions with one statement dropped or duplicated
             (the worst case for the AST check: every sample has candidates that
             survive the bounds and need exact tree edit distances).

Each check is timed alone over the same records, after its benchmark index is built
(index time shown apart; the embedding check after one warm-up batch, so compilation
is excluded). The embedder is the offline default (random-init, tiny's shape: 4
layers, d_model 256, byte-level tokens, 512 tokens): a pretrained 350M-1.3B embedder
costs proportionally more and belongs on an accelerator. projected h = 879,500 (the
paper's CodeExercises) / samples/s / 3600, on one core. Rows go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import ast
import os
import random
import sys
import sysconfig
import time
from collections.abc import Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from bench import record  # noqa: E402  pylint: disable=g-import-not-at-top

PAPER_EXERCISES = 879_500
SECTION = "## bench/decontaminate.py: decontamination checks, samples/s on one core"
COLUMNS = ("date", "machine", "check", "workload", "samples", "index s", "seconds",
           "samples/s", "exact TEDs/sample", "projected h (879.5k)")
INTRO = """
Each check of `data_pipeline.decontaminate` alone against the 164 HumanEval problems,
pinned to one CPU core. Workloads: `stdlib` (documented stdlib functions as exercises:
almost none near a benchmark problem) and `near-copy` (HumanEval solutions with one
statement dropped or duplicated: the AST check's worst case). AST at the lowest report
tau (0.8, where the bounds prune least); n-gram 13 words; embedding: random-init tiny
phi (4 layers, d_model 256, byte tokens, 512 tokens, batch 32), compile excluded.
projected h = 879,500 exercises / samples/s / 3600.

""" + record.table_header(COLUMNS)


def stdlib_exercises(limit: int, seed: int = 0) -> list[dict]:
  """Documented top-level functions of the stdlib as {"id","prompt","solution"}."""
  root = sysconfig.get_paths()["stdlib"]
  files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs
                 if f.endswith(".py") and "test" not in d and "site-packages" not in d)
  random.Random(seed).shuffle(files)
  out: list[dict] = []
  for path in files:
    try:
      with open(path, encoding="utf-8") as f:
        source = f.read()
      module = ast.parse(source)
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
      continue
    lines = source.splitlines(keepends=True)
    for node in module.body:
      if not isinstance(node, ast.FunctionDef) or ast.get_docstring(node) is None:
        continue
      if node.end_lineno - node.lineno > 60 or len(node.body) < 2:
        continue
      split = node.body[0].end_lineno  # after the docstring
      out.append({"id": f"{path}:{node.lineno}",
                  "prompt": "".join(lines[node.lineno - 1:split]),
                  "solution": "".join(lines[split:node.end_lineno])})
      if len(out) >= limit:
        return out
  return out


def near_copies(targets, limit: int, seed: int = 0) -> list[dict]:
  """HumanEval solutions with one body line dropped (as `pass`) or duplicated."""
  rng = random.Random(seed)
  out: list[dict] = []
  while len(out) < limit:
    target = rng.choice(targets)
    lines = target.solution.splitlines()
    simple = [i for i, line in enumerate(lines) if line.strip() and not line.rstrip()
              .endswith(":") and not line.strip().startswith(("return", "else", "elif"))]
    if simple:
      i = rng.choice(simple)
      indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
      lines[i:i + 1] = [lines[i], lines[i]] if rng.random() < 0.5 else [indent + "pass"]
    solution = "\n".join(lines) + "\n"
    try:
      ast.parse(target.prompt + solution)
    except SyntaxError:
      continue
    out.append({"id": f"{target.task_id}#{len(out)}", "prompt": target.prompt,
                "solution": solution})
  return out


def time_check(check: str, targets, samples: Sequence, config) -> dict:
  """Builds the check's index, then runs it over the samples; seconds and counts."""
  from data_pipeline.decontaminate.prune import Decontaminator  # pylint: disable=g-import-not-at-top
  config = dataclasses.replace(config, checks=(check,))
  start = time.perf_counter()
  decontaminator = Decontaminator(targets, config)
  index_s = time.perf_counter() - start
  batch = config.embed_batch_size if check == "embedding" else 256
  if check == "embedding":  # warm-up: compile every bucket the samples will use
    decontaminator.check(samples[:batch])
  start = time.perf_counter()
  for begin in range(0, len(samples), batch):
    decontaminator.check(samples[begin:begin + batch])
  seconds = time.perf_counter() - start
  return {"index_s": index_s, "seconds": seconds, "computed": decontaminator.ast_computed}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--samples", type=int, default=2000, help="records per workload")
  parser.add_argument("--embed_samples", type=int, default=256,
                      help="records per workload for the (slow) embedding check")
  parser.add_argument("--checks", default="ngram,ast,embedding")
  parser.add_argument("--no_record", action="store_true", help="do not write BENCHMARKS.md")
  args = parser.parse_args()
  machine = record.cpu_description() + ", 1 core pinned"
  if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_cpu_multi_thread_eigen=false").strip()

  from data_pipeline.decontaminate.config import DecontConfig  # pylint: disable=g-import-not-at-top
  from data_pipeline.decontaminate.samples import sample_of  # pylint: disable=g-import-not-at-top
  from data_pipeline.decontaminate.targets import load_targets  # pylint: disable=g-import-not-at-top

  targets, _ = load_targets(["humaneval"])
  config = DecontConfig(prune_tau=0.8)
  workloads = {"stdlib": stdlib_exercises(args.samples),
               "near-copy": near_copies(targets, args.samples)}
  print(record.markdown_row(COLUMNS))
  for check in args.checks.split(","):
    for name, records in workloads.items():
      count = args.embed_samples if check == "embedding" else len(records)
      samples = [sample_of(r, f"{name}:{i}") for i, r in enumerate(records[:count], 1)]
      timing = time_check(check, targets, samples, config)
      rate = len(samples) / timing["seconds"]
      teds = f"{timing['computed'] / len(samples):.2f}" if check == "ast" else "-"
      row = record.markdown_row((record.now(), machine, check, name, len(samples),
                                 f"{timing['index_s']:.2f}", f"{timing['seconds']:.2f}",
                                 f"{rate:,.1f}", teds, f"{PAPER_EXERCISES / rate / 3600:.2f}"))
      print(row, flush=True)
      if not args.no_record:
        record.append_row(SECTION, INTRO, row)


if __name__ == "__main__":
  main()
