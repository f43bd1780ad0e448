"""Stage `eval`: pass@k of a model of the run on the configured benchmarks.

Writes WORKDIR/eval/<benchmark>/{samples.jsonl, results.jsonl, pass_at_k.json} and a
summary WORKDIR/eval/summary.json with every benchmark's pass@k. The model is
config.eval.model (recipe/models.py: '' = the latest model of the run).
"""

from __future__ import annotations

import os

from eval import run as eval_run
from eval.benchmarks import BENCHMARKS
from eval.sandbox import SandboxLimits
from phi_jax import atomic
from phi_jax.cli import UsageError
from recipe.runner import Context
from recipe.stages import common


def run(ctx: Context) -> dict:
  cfg = ctx.config.eval
  path = common.model_ref(ctx, "eval", "eval").spec
  limits = SandboxLimits(timeout_s=cfg.timeout_s, cpu_s=max(1, int(cfg.timeout_s + 0.999)),
                         memory_mb=cfg.memory_mb)
  data = {"humaneval": cfg.humaneval_path or None, "mbpp": cfg.mbpp_path or None}
  summary = {}
  for benchmark in cfg.benchmarks:
    print(f"[eval] {benchmark}: {path}", flush=True)
    report = eval_run.evaluate(
        benchmark, os.path.join(ctx.node_dir("eval"), benchmark), checkpoint=path,
        data_path=data.get(benchmark), n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens, ks=[int(k) for k in cfg.k],
        batch_size=cfg.batch_size, limit=cfg.limit, seed=ctx.config.seed, limits=limits,
        isolation=cfg.isolation, workers=cfg.workers or None)
    summary[benchmark] = {"overall": report["overall"], "num_problems": report["num_problems"],
                          "isolation": report["isolation"]}
  atomic.write_json(summary, os.path.join(ctx.node_dir("eval"), "summary.json"))
  return summary


def validate(ctx: Context) -> None:
  cfg = ctx.config.eval
  if not list(cfg.benchmarks):
    raise UsageError("config.eval.benchmarks names no benchmark")
  unknown = sorted(set(cfg.benchmarks) - set(BENCHMARKS))
  if unknown:
    raise UsageError(f"config.eval.benchmarks: unknown {unknown}; known: "
                     f"{', '.join(sorted(BENCHMARKS))}")
  checks = (("n", int(cfg.n) >= 1, ">= 1"), ("limit", int(cfg.limit) >= 0, ">= 0"),
            ("temperature", float(cfg.temperature) >= 0, ">= 0"),
            ("top_p", 0 < float(cfg.top_p) <= 1, "in (0, 1]"),
            ("max_new_tokens", int(cfg.max_new_tokens) >= 1, ">= 1"),
            ("batch_size", int(cfg.batch_size) >= 1, ">= 1"),
            ("timeout_s", float(cfg.timeout_s) > 0, "> 0"),
            ("memory_mb", int(cfg.memory_mb) >= 16, ">= 16"),
            ("workers", int(cfg.workers) >= 0, ">= 0"),
            ("k", bool(cfg.k) and all(int(k) >= 1 for k in cfg.k), "positive integers"))
  common.check_fields("config.eval", cfg, checks)


def _partial(ctx: Context) -> str | None:
  """Samples or results an interrupted evaluation left (eval.run resumes from them)."""
  root = ctx.node_dir("eval")
  done = [b for b in ctx.config.eval.benchmarks
          if any(os.path.exists(os.path.join(root, b, f)) for f in ("samples.jsonl",
                                                                       "results.jsonl"))]
  return f"the samples of {', '.join(done)} so far" if done else None


NODES = (common.model_reader_node("eval", "eval", run,
                                   "pass@k of the model: eval/summary.json", validate,
                                   partial=_partial),)
