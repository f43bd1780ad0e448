"""Stage `sample`: completions of config.sample.prompts from a model of the run.

Writes WORKDIR/sample/samples.jsonl, one line per sample:
{"prompt_index", "sample_index", "prompt", "completion", "finish_reason", "tokens"}.
The model is config.sample.model (recipe/models.py: '' = the latest model of the run).
"""

from __future__ import annotations

import os
import time

from phi_jax import atomic, hosts, pretrained, sampling
from recipe.runner import Context, StageError
from recipe.stages import common


def run(ctx: Context, reads: dict) -> dict:
  cfg: sampling.SampleSettings = reads["sample"]
  path = reads["model"].spec
  model = pretrained.from_pretrained(path)
  if model.tokenizer is None:
    raise StageError(f"the model at {path} has no tokenizer; text prompts need one "
                     "(set config.init.tokenizer)")
  prompts = list(cfg.prompts)
  start = time.time()
  completions = sampling.generate(
      model, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
      top_p=cfg.top_p, top_k=cfg.top_k, stop=tuple(cfg.stop), num_samples=cfg.num_samples,
      seed=reads["seed"], batch_size=cfg.batch_size)
  seconds = time.time() - start
  out = os.path.join(ctx.node_dir("sample"), "samples.jsonl")
  # every host generates (loading a checkpoint is a collective of the job); one writes
  if hosts.index() == 0:
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


NODES = (common.model_reader_node("sample", "sample", run,
                                   "completions of the prompts: sample/samples.jsonl",
                                   reads=lambda ctx: {"seed": ctx.settings.seed}),)
