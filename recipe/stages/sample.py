"""Stage `sample`: completions of config.sample.prompts from a model of the run.

Writes WORKDIR/sample/samples.jsonl, one line per sample:
{"prompt_index", "sample_index", "prompt", "completion", "finish_reason", "tokens"}.
The model is config.sample.model (recipe/models.py: '' = the latest model of the run).
"""

from __future__ import annotations

import os
import time

from phi_jax import atomic, pretrained, sampling
from phi_jax.cli import UsageError
from recipe import models
from recipe.runner import Context, Node, StageError


def _ref(ctx: Context) -> models.ModelRef:
  return models.resolve(ctx, ctx.config.sample.model, "config.sample.model", before="sample")


def run(ctx: Context) -> dict:
  cfg = ctx.config.sample
  path = _ref(ctx).spec
  model = pretrained.from_pretrained(path)
  if model.tokenizer is None:
    raise StageError(f"the model at {path} has no tokenizer; text prompts need one "
                     "(set config.init.tokenizer)")
  prompts = list(cfg.prompts)
  start = time.time()
  completions = sampling.generate(
      model, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
      top_p=cfg.top_p, top_k=cfg.top_k, stop=tuple(cfg.stop), num_samples=cfg.num_samples,
      seed=ctx.config.seed, batch_size=cfg.batch_size)
  seconds = time.time() - start
  out = os.path.join(ctx.node_dir("sample"), "samples.jsonl")
  atomic.write_jsonl(
      ({"prompt_index": i // cfg.num_samples, "sample_index": i % cfg.num_samples,
        "prompt": prompts[i // cfg.num_samples], "completion": completion.text,
        "finish_reason": completion.finish_reason, "tokens": len(completion.tokens)}
       for i, completion in enumerate(completions)), out)
  for i, completion in enumerate(completions):
    print(f"[sample] --- {i}: {completion.finish_reason}, {len(completion.tokens)} tokens\n"
          f"{prompts[i // cfg.num_samples]}{completion.text}", flush=True)
  generated = sum(len(c.tokens) for c in completions)
  print(f"[sample] {len(completions)} samples, {generated} tokens in {seconds:.1f}s "
        f"(incl. compilation) -> {out}", flush=True)
  return {"samples": out, "num_samples": len(completions), "generated_tokens": generated,
          "seconds": round(seconds, 3)}


def validate(ctx: Context) -> None:
  cfg = ctx.config.sample
  if not list(cfg.prompts):
    raise UsageError("config.sample.prompts is empty: nothing to sample")
  checks = (("num_samples", int(cfg.num_samples) >= 1, ">= 1"),
            ("max_new_tokens", int(cfg.max_new_tokens) >= 1, ">= 1"),
            ("temperature", float(cfg.temperature) >= 0, ">= 0 (0 = greedy)"),
            ("top_p", 0 < float(cfg.top_p) <= 1, "in (0, 1]"),
            ("top_k", int(cfg.top_k) >= 0, ">= 0 (0 = off)"),
            ("batch_size", int(cfg.batch_size) >= 1, ">= 1"))
  for field, ok, valid in checks:
    if not ok:
      raise UsageError(f"config.sample.{field} = {cfg[field]!r}: must be {valid}")
  _ref(ctx)


NODES = (Node(name="sample", run=run, doc="completions of the prompts: sample/samples.jsonl",
              config=("sample", "seed"), validate=validate,
              after=lambda ctx: models.upstream_of(ctx, ctx.config.sample.model,
                                                   "config.sample.model", before="sample"),
              extra=lambda ctx: {"model": models.describe(_ref(ctx))}),)
