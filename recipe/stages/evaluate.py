"""Stage `eval`: pass@k and bits per byte of models of the run on the benchmarks.

Writes WORKDIR/eval/<benchmark>/{samples.jsonl, results.jsonl, pass_at_k.json} and a
summary WORKDIR/eval/summary.json with every benchmark's pass@k, its bootstrap interval
over problems (`intervals`, how under `bootstrap`; long-context: also its pass rate per
file length and depth, `breakdown`) and, for the
benchmarks of config.eval.bpb_benchmarks, `bpb`: bits per byte of the canonical
solutions given their prompts (eval/bpb.py). The model is config.eval.model
(recipe/models.py: '' = the latest model of the run).

The sweep: every model of config.eval.checkpoints ('finetune:3000', or 'finetune:*' for
each kept checkpoint of a stage) is evaluated the same way under
WORKDIR/eval/checkpoints/<stage>_<step>/<benchmark>/, listed in
WORKDIR/eval/checkpoints.json (each entry's `dir`, relative to WORKDIR, holds its
per-problem results, which the report's paired comparisons read). The paper reports the best finetuning checkpoint;
choosing it by HumanEval pass@1 is selection on the test set, which the report states.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tempfile
from collections.abc import Callable
from typing import Any

from eval import bpb as eval_bpb
from eval import run as eval_run
from eval import settings
from phi_jax import atomic, bpb as bpb_lib, checkpoint, hosts
from phi_jax.cli import UsageError
from recipe import models
from recipe.runner import Context, Node


def _ref(ctx: Context) -> models.ModelRef:
  return models.resolve(ctx, ctx.settings.eval.model, "config.eval.model", before="eval")


SWEEP_ALL = "*"


def bpb_settings(cfg: settings.EvalSettings) -> dict:
  """What the benchmarks' bits per byte is measured with (recorded with the curves)."""
  return {"benchmarks": list(cfg.bpb_benchmarks), "max_len": cfg.bpb_max_len,
          "limit": cfg.bpb_limit, "paths": {b: p for b, p in cfg.paths().items()
                                            if b in cfg.bpb_benchmarks},
          "mbpp_prompt": cfg.mbpp_prompt if "mbpp" in cfg.bpb_benchmarks else None}


def bpb_sets(cfg: settings.EvalSettings, tokenizer, max_seq_len: int,
             where: str = "eval") -> dict[str, bpb_lib.ScoringSet]:
  """The scoring sets of cfg.bpb_benchmarks (a benchmark whose data is missing is
  skipped with one line)."""
  if not list(cfg.bpb_benchmarks) or tokenizer is None:
    return {}
  sets, skipped = eval_bpb.scoring_sets(
      list(cfg.bpb_benchmarks), tokenizer, min(cfg.bpb_max_len, int(max_seq_len)),
      data_paths=cfg.paths(), limit=cfg.bpb_limit,
      benchmark_options={name: eval_run.benchmark_options_of(name, cfg)
                         for name in cfg.bpb_benchmarks})
  for name, why in skipped.items():
    print(f"[{where}] no bits per byte on {name}: {why}", flush=True)
  return sets


def _evaluate_model(cfg: settings.EvalSettings, path: str, out_dir: str,
                    execute: bool = True) -> dict:
  """pass@k (and bpb) of the model at `path` on every benchmark, under out_dir; without
  `execute`, only this process's part in the model's programs (generation, bpb): {}."""
  load_model = _loader(path)  # one load (and one set of compiled steps) for all benchmarks
  summary = {}
  for benchmark in cfg.benchmarks:
    print(f"[eval] {benchmark}: {path}" + ("" if execute else " (generating; process 0 "
                                           "runs the samples)"), flush=True)
    report = eval_run.evaluate(benchmark, os.path.join(out_dir, benchmark), cfg,
                               checkpoint=path, data_path=cfg.paths().get(benchmark),
                               load_model=load_model, execute=execute)
    if report is None:
      continue
    summary[benchmark] = {"overall": report["overall"], "intervals": report["intervals"],
                          "bootstrap": report["bootstrap"],
                          "num_problems": report["num_problems"],
                          "isolation": report["isolation"], "verdicts": report["verdicts"],
                          "machine": report["machine"],
                          **({"determinism": report["determinism"]}
                             if "determinism" in report else {}),
                          **({"breakdown": report["breakdown"]} if "breakdown" in report
                             else {})}
  if list(cfg.bpb_benchmarks):
    model = load_model()
    sets = bpb_sets(cfg, model.tokenizer, model.config.max_seq_len)
    scores = eval_bpb.evaluate_bpb(bpb_lib.model_nll_sums(model), sets, cfg.batch_size)
    if not execute:
      return summary
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


@dataclasses.dataclass(frozen=True)
class SweepModel:
  """One model of config.eval.checkpoints, resolved: its reference and what it loads."""
  ref: str
  model: models.ModelRef


def sweep_models(ctx: Context) -> list[SweepModel]:
  """The models config.eval.checkpoints names, '<stage>:*' expanded to the steps that
  stage keeps (its settings say which; ascending)."""
  out = []
  for ref in ctx.settings.eval.checkpoints:
    name, _, step = str(ref).partition(":")
    if step == SWEEP_ALL:
      root = os.path.join(ctx.node_dir(name), "checkpoints")
      section = {"pretrain": "train", "finetune": "finetune"}.get(name)
      kept = (sorted(ctx.settings.sections[section].kept_steps()) if section
              else checkpoint.steps(root))
      for step_kept in kept:
        out.append(SweepModel(f"{name}:{step_kept}", models.ModelRef(
            os.path.join(root, str(step_kept)), name, step_kept)))
    else:
      out.append(SweepModel(str(ref), models.resolve(ctx, ref, "config.eval.checkpoints",
                                                     before="eval")))
  return out


def _step_dir(path: str) -> str | None:
  """The checkpoint step directory `path` loads, or None (not a phi_jax checkpoint)."""
  try:
    return checkpoint.resolve_step_dir(path) if os.path.isdir(path) else None
  except FileNotFoundError:
    return None


def run(ctx: Context, reads: dict) -> dict | None:
  """On several hosts every process loads the models and generates (loading a
  checkpoint and decoding are programs of every process of the job), and process 0
  alone runs the samples in the sandbox, scores them and writes the node's files; the
  others generate into a temporary directory they delete and return None (the node's
  summary is process 0's)."""
  if hosts.index() == 0:
    return _run(ctx, reads, ctx.node_dir("eval"))
  with tempfile.TemporaryDirectory(prefix=f"eval.process-{hosts.index()}-") as scratch:
    return _run(ctx, reads, scratch, execute=False)


def _run(ctx: Context, reads: dict, out_root: str, execute: bool = True) -> dict | None:
  cfg: settings.EvalSettings = reads["eval"]
  path = reads["model"].spec
  summary = _evaluate_model(cfg, path, out_root, execute)
  main_step_dir = _step_dir(path)
  sweep = []
  for item in reads["sweep"]:
    model_path = item.model.spec
    if main_step_dir is not None and _step_dir(model_path) == main_step_dir:
      results = summary  # the evaluated model itself: its results, not a second run
      out_dir = ctx.node_dir("eval")
    else:
      out_dir = os.path.join(out_root, "checkpoints", item.ref.replace(":", "_"))
      results = _evaluate_model(cfg, model_path, out_dir, execute)
    sweep.append({"model": item.ref, "path": model_path, "benchmarks": results,
                  "dir": os.path.relpath(out_dir, ctx.workdir)})
  if not execute:
    return None
  if list(cfg.checkpoints):
    atomic.write_json(sweep, os.path.join(out_root, "checkpoints.json"))
  atomic.write_json(summary, os.path.join(out_root, "summary.json"))
  return {**summary, **({"checkpoints": len(sweep)} if sweep else {})}


def validate(ctx: Context) -> None:
  """What the schema cannot check (eval/settings.py has the ranges): the data files
  exist, and the model references resolve."""
  for name, path in ctx.settings.eval.paths().items():
    if path and not os.path.exists(path):
      raise UsageError(f"config.eval: the {name} data {path} does not exist")
  _ref(ctx)
  _sweep_after(ctx)  # a malformed reference in config.eval.checkpoints


def _sweep_after(ctx: Context) -> list[str]:
  """The model nodes config.eval.checkpoints reads."""
  nodes = []
  for ref in ctx.settings.eval.checkpoints:
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
  done = [b for b in ctx.settings.eval.benchmarks
          if any(os.path.exists(os.path.join(root, b, f))
                 for f in ("samples.jsonl", "results.jsonl", "samples.jsonl.partial",
                           "results.jsonl.partial"))]
  return f"the samples of {', '.join(done)} so far" if done else None


def _reads(ctx: Context) -> dict:
  """The evaluation settings, the resolved model and the resolved sweep."""
  return {"eval": ctx.settings.eval, "model": _ref(ctx), "sweep": sweep_models(ctx)}


def _files(ctx: Context) -> list[str]:
  """The data files of the benchmarks evaluated or scored (their contents are inputs)."""
  cfg = ctx.settings.eval
  used = set(cfg.benchmarks) | set(cfg.bpb_benchmarks)
  return sorted(p for name, p in cfg.paths().items() if name in used and os.path.isfile(p))


NODES = (Node(name="eval", run=run, doc="pass@k of the model: eval/summary.json",
              reads=_reads, files=_files, validate=validate, partial=_partial,
              after=lambda ctx: list(dict.fromkeys(
                  models.upstream_of(ctx, ctx.settings.eval.model, "config.eval.model",
                                     before="eval") + _sweep_after(ctx))),),)
