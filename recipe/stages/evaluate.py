"""Stage `eval`: pass@k and bits per byte of models of the run on the benchmarks.

Writes WORKDIR/eval/<benchmark>/{samples.jsonl, results.jsonl, pass_at_k.json} and a
summary WORKDIR/eval/summary.json with every benchmark's pass@k and, for the
benchmarks of config.eval.bpb_benchmarks, `bpb`: bits per byte of the canonical
solutions given their prompts (eval/bpb.py). The model is config.eval.model
(recipe/models.py: '' = the latest model of the run).

The sweep: every model of config.eval.checkpoints ('finetune:3000', or 'finetune:*' for
each kept checkpoint of a stage) is evaluated the same way under
WORKDIR/eval/checkpoints/<stage>_<step>/<benchmark>/, listed in
WORKDIR/eval/checkpoints.json. The paper reports the best finetuning checkpoint;
choosing it by HumanEval pass@1 is selection on the test set, which the report states.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from eval import bpb as eval_bpb
from eval import run as eval_run
from eval import settings
from eval.benchmarks import BENCHMARKS, mbpp
from eval.sandbox import SandboxLimits
from phi_jax import atomic, bpb as bpb_lib, checkpoint
from phi_jax.cli import UsageError
from recipe import models
from recipe.runner import Context, Node
from recipe.stages import common


def _ref(ctx: Context) -> models.ModelRef:
  return models.resolve(ctx, ctx.config.eval.model, "config.eval.model", before="eval")


SWEEP_ALL = "*"


def data_paths(ctx: Context) -> dict[str, str | None]:
  """{benchmark: local file}: humaneval_path, mbpp_path and the data_paths pairs."""
  cfg = ctx.config.eval
  paths = {"humaneval": cfg.humaneval_path or None, "mbpp": cfg.mbpp_path or None}
  for pair in cfg.data_paths:
    name, sep, path = str(pair).partition("=")
    if not sep or not name.strip() or not path.strip():
      raise UsageError(f"config.eval.data_paths: {pair!r} is not 'benchmark=path'")
    paths[name.strip()] = path.strip()
  return paths


def benchmark_options(ctx: Context) -> dict[str, dict]:
  return {"mbpp": {"prompt_format": ctx.config.eval.mbpp_prompt}}


def bpb_sets(ctx: Context, tokenizer, max_seq_len: int,
             where: str = "eval") -> dict[str, bpb_lib.ScoringSet]:
  """The scoring sets of config.eval.bpb_benchmarks (a benchmark whose data is missing
  is skipped with one line)."""
  cfg = ctx.config.eval
  if not list(cfg.bpb_benchmarks) or tokenizer is None:
    return {}
  sets, skipped = eval_bpb.scoring_sets(
      list(cfg.bpb_benchmarks), tokenizer, min(int(cfg.bpb_max_len), int(max_seq_len)),
      data_paths=data_paths(ctx), benchmark_options=benchmark_options(ctx),
      limit=int(cfg.bpb_limit))
  for name, why in skipped.items():
    print(f"[{where}] no bits per byte on {name}: {why}", flush=True)
  return sets


def _evaluate_model(ctx: Context, path: str, out_dir: str) -> dict:
  """pass@k (and bpb) of the model at `path` on every benchmark, under out_dir."""
  cfg = ctx.config.eval
  s = settings.from_config(cfg, seed=int(ctx.config.seed))
  limits = SandboxLimits(timeout_s=s.timeout_s, cpu_s=s.cpu_s, memory_mb=s.memory_mb)
  load_model = _loader(path)  # one load (and one set of compiled steps) for all benchmarks
  summary = {}
  for benchmark in cfg.benchmarks:
    print(f"[eval] {benchmark}: {path}", flush=True)
    report = eval_run.evaluate(
        benchmark, os.path.join(out_dir, benchmark), checkpoint=path,
        data_path=data_paths(ctx).get(benchmark), n=s.n, temperature=s.temperature,
        top_p=s.top_p, max_new_tokens=s.max_new_tokens, ks=s.ks, batch_size=s.batch_size,
        limit=s.limit, seed=s.seed, limits=limits, isolation=s.isolation,
        workers=s.workers or None,
        benchmark_options=benchmark_options(ctx).get(benchmark), load_model=load_model)
    summary[benchmark] = {"overall": report["overall"], "num_problems": report["num_problems"],
                          "isolation": report["isolation"]}
  if list(cfg.bpb_benchmarks):
    model = load_model()
    sets = bpb_sets(ctx, model.tokenizer, model.config.max_seq_len)
    scores = eval_bpb.evaluate_bpb(bpb_lib.model_nll_sums(model), sets, int(cfg.batch_size))
    for name in sets:
      summary.setdefault(name, {})["bpb"] = scores[f"bpb_{name}"]
      print(f"[eval] {name}: {scores[f'bpb_{name}']:.4f} bits per byte", flush=True)
  return summary


def _loader(path: str) -> Callable[[], Any]:
  """Loads the model at `path` on the first call and returns the same object after."""

  @functools.cache
  def load():
    import phi_jax  # pylint: disable=g-import-not-at-top
    return phi_jax.from_pretrained(path)

  return load


def sweep_models(ctx: Context) -> list[tuple[str, str]]:
  """(reference, path) of each model config.eval.checkpoints names, '<stage>:*' expanded
  to the stage's kept checkpoints (ascending steps)."""
  out = []
  for ref in ctx.config.eval.checkpoints:
    name, _, step = str(ref).partition(":")
    if step == SWEEP_ALL:
      root = os.path.join(ctx.node_dir(name), "checkpoints")
      for kept in checkpoint.steps(root):
        out.append((f"{name}:{kept}", os.path.join(root, str(kept))))
    else:
      out.append((str(ref), models.resolve(ctx, ref, "config.eval.checkpoints",
                                           before="eval").spec))
  return out


def _step_dir(path: str) -> str | None:
  """The checkpoint step directory `path` loads, or None (not a phi_jax checkpoint)."""
  try:
    return checkpoint.resolve_step_dir(path) if os.path.isdir(path) else None
  except FileNotFoundError:
    return None


def run(ctx: Context) -> dict:
  path = _ref(ctx).spec
  summary = _evaluate_model(ctx, path, ctx.node_dir("eval"))
  main_step_dir = _step_dir(path)
  sweep = []
  for ref, model_path in sweep_models(ctx):
    if main_step_dir is not None and _step_dir(model_path) == main_step_dir:
      results = summary  # the evaluated model itself: its results, not a second run
    else:
      out_dir = os.path.join(ctx.node_dir("eval"), "checkpoints", ref.replace(":", "_"))
      results = _evaluate_model(ctx, model_path, out_dir)
    sweep.append({"model": ref, "path": model_path, "benchmarks": results})
  if list(ctx.config.eval.checkpoints):
    atomic.write_json(sweep, os.path.join(ctx.node_dir("eval"), "checkpoints.json"))
  atomic.write_json(summary, os.path.join(ctx.node_dir("eval"), "summary.json"))
  return {**summary, **({"checkpoints": len(sweep)} if sweep else {})}


def validate(ctx: Context) -> None:
  cfg = ctx.config.eval
  if not list(cfg.benchmarks):
    raise UsageError("config.eval.benchmarks names no benchmark")
  unknown = sorted(set(cfg.benchmarks) - set(BENCHMARKS))
  if unknown:
    raise UsageError(f"config.eval.benchmarks: unknown {unknown}; known: "
                     f"{', '.join(sorted(BENCHMARKS))}")
  settings.from_config(cfg, seed=int(ctx.config.seed))  # the ranges of eval/settings.py
  checks = (("mbpp_prompt", cfg.mbpp_prompt in mbpp.PROMPT_FORMATS,
             f"one of {', '.join(mbpp.PROMPT_FORMATS)}"),
            ("bpb_max_len", int(cfg.bpb_max_len) >= 2, ">= 2"),
            ("bpb_limit", int(cfg.bpb_limit) >= 0, ">= 0"))
  common.check_fields("config.eval", cfg, checks)
  for name, path in data_paths(ctx).items():
    if path and not os.path.exists(path):
      raise UsageError(f"config.eval: the {name} data {path} does not exist")
  unknown = sorted(set(cfg.bpb_benchmarks) - set(BENCHMARKS))
  if unknown:
    raise UsageError(f"config.eval.bpb_benchmarks: unknown {unknown}; known: "
                     f"{', '.join(sorted(BENCHMARKS))}")
  _ref(ctx)
  _sweep_after(ctx)  # a malformed reference in config.eval.checkpoints


def _sweep_after(ctx: Context) -> list[str]:
  """The model nodes config.eval.checkpoints reads."""
  nodes = []
  for ref in ctx.config.eval.checkpoints:
    name, _, step = str(ref).partition(":")
    if step == SWEEP_ALL:
      if name not in models.model_nodes(ctx):
        raise UsageError(f"config.eval.checkpoints: {ref!r}: '<stage>:*' needs a model stage "
                         f"({', '.join(models.model_nodes(ctx))})")
      nodes.append(name)
    else:
      nodes += models.upstream_of(ctx, ref, "config.eval.checkpoints", before="eval")
  return nodes


def _partial(ctx: Context) -> str | None:
  """Samples or results an interrupted evaluation left (eval.run resumes from them)."""
  root = ctx.node_dir("eval")
  done = [b for b in ctx.config.eval.benchmarks
          if any(os.path.exists(os.path.join(root, b, f))
                 for f in ("samples.jsonl", "results.jsonl", "samples.jsonl.partial",
                           "results.jsonl.partial"))]
  return f"the samples of {', '.join(done)} so far" if done else None


NODES = (Node(name="eval", run=run, doc="pass@k of the model: eval/summary.json",
              config=("eval", "seed"), validate=validate, partial=_partial,
              after=lambda ctx: list(dict.fromkeys(
                  models.upstream_of(ctx, ctx.config.eval.model, "config.eval.model",
                                     before="eval") + _sweep_after(ctx))),
              extra=lambda ctx: {"model": models.describe(_ref(ctx))}),)
