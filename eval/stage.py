"""Stage `eval`: pass@k of the run's latest model on the configured benchmarks.

Writes WORKDIR/eval/<benchmark>/{samples.jsonl, results.jsonl, pass_at_k.json} and a
summary WORKDIR/eval/summary.json with every benchmark's pass@k.
"""

from __future__ import annotations

import os

from eval import run as eval_run
from eval.sandbox import SandboxLimits
from phi_jax import atomic
from phi_jax.stages.base import Context, Stage


def _split(text: str) -> list[str]:
  return [part.strip() for part in str(text).split(",") if part.strip()]


class EvalStage(Stage):
  name = "eval"
  config_sections = ("eval", "seed")
  model_section = "eval"

  def run(self, ctx: Context) -> dict:
    cfg = ctx.config.eval
    path, _ = self.model_checkpoint(ctx)
    limits = SandboxLimits(timeout_s=cfg.timeout_s, cpu_s=max(1, int(cfg.timeout_s + 0.999)),
                           memory_mb=cfg.memory_mb)
    data = {"humaneval": cfg.humaneval_path or None, "mbpp": cfg.mbpp_path or None}
    summary = {}
    for benchmark in _split(cfg.benchmarks):
      print(f"[eval] {benchmark}: {path}", flush=True)
      report = eval_run.evaluate(
          benchmark, os.path.join(ctx.stage_dir(self.name), benchmark), checkpoint=path,
          data_path=data.get(benchmark), n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p,
          max_new_tokens=cfg.max_new_tokens, ks=[int(k) for k in _split(cfg.k)],
          batch_size=cfg.batch_size, limit=cfg.limit, seed=ctx.config.seed, limits=limits,
          isolation=cfg.isolation, workers=cfg.workers or None)
      summary[benchmark] = {"overall": report["overall"], "num_problems": report["num_problems"],
                            "isolation": report["isolation"]}
    atomic.write_json(summary, os.path.join(ctx.stage_dir(self.name), "summary.json"))
    return summary
