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
from recipe.runner import Context, StageError
from recipe.stages import common


def run(ctx: Context) -> dict:
  cfg = ctx.config.sample
  path = common.model_ref(ctx, "sample", "sample").spec
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
  common.check_fields("config.sample", cfg, checks)


NODES = (common.model_reader_node("sample", "sample", run,
                                   "completions of the prompts: sample/samples.jsonl", validate),)
