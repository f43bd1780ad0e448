"""Stage `eval`: pass@k of a model of the run on the configured benchmarks.

Writes WORKDIR/eval/<benchmark>/{samples.jsonl, results.jsonl, pass_at_k.json} and a
summary WORKDIR/eval/summary.json with every benchmark's pass@k. The model is
config.eval.model (recipe/models.py: '' = the latest model of the run).
"""

from __future__ import annotations

import os

from eval import run as eval_run
from eval import settings
from eval.benchmarks import BENCHMARKS
from eval.sandbox import SandboxLimits
from phi_jax import atomic
from phi_jax.cli import UsageError
from recipe.runner import Context
from recipe.stages import common


def run(ctx: Context) -> dict:
  cfg = ctx.config.eval
  s = settings.from_config(cfg, seed=int(ctx.config.seed))
  path = common.model_ref(ctx, "eval", "eval").spec
  limits = SandboxLimits(timeout_s=s.timeout_s, cpu_s=s.cpu_s, memory_mb=s.memory_mb)
  data = data_paths(cfg)
  summary = {}
  for benchmark in cfg.benchmarks:
    print(f"[eval] {benchmark}: {path}", flush=True)
    report = eval_run.evaluate(
        benchmark, os.path.join(ctx.node_dir("eval"), benchmark), checkpoint=path,
        data_path=data.get(benchmark), n=s.n, temperature=s.temperature, top_p=s.top_p,
        max_new_tokens=s.max_new_tokens, ks=s.ks, batch_size=s.batch_size, limit=s.limit,
        seed=s.seed, limits=limits, isolation=s.isolation, workers=s.workers or None)
    summary[benchmark] = {"overall": report["overall"], "num_problems": report["num_problems"],
                          "isolation": report["isolation"]}
  atomic.write_json(summary, os.path.join(ctx.node_dir("eval"), "summary.json"))
  return summary


def data_paths(cfg) -> dict[str, str | None]:
  """{benchmark: local file}: humaneval_path, mbpp_path and the data_paths pairs."""
  paths = {"humaneval": cfg.humaneval_path or None, "mbpp": cfg.mbpp_path or None}
  for pair in cfg.data_paths:
    name, sep, path = str(pair).partition("=")
    if not sep or not name.strip() or not path.strip():
      raise UsageError(f"config.eval.data_paths: {pair!r} is not 'benchmark=path'")
    paths[name.strip()] = path.strip()
  return paths


def validate(ctx: Context) -> None:
  """The ranges of every eval field are eval/settings.py's (one definition)."""
  cfg = ctx.config.eval
  if not list(cfg.benchmarks):
    raise UsageError("config.eval.benchmarks names no benchmark")
  unknown = sorted(set(cfg.benchmarks) - set(BENCHMARKS))
  if unknown:
    raise UsageError(f"config.eval.benchmarks: unknown {unknown}; known: "
                     f"{', '.join(sorted(BENCHMARKS))}")
  settings.from_config(cfg, seed=int(ctx.config.seed))
  for name, path in data_paths(cfg).items():
    if path and not os.path.exists(path):
      raise UsageError(f"config.eval: the {name} data {path} does not exist")


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
