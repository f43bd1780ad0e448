"""Stage `sample`: completions of config.sample.prompts from the run's latest model.

Writes WORKDIR/sample/samples.jsonl, one line per sample:
{"prompt_index", "sample_index", "prompt", "completion", "finish_reason", "tokens"}.
"""

from __future__ import annotations

import os
import time

from phi_jax import atomic, pretrained, sampling
from phi_jax.stages.base import Context, Stage, StageError


class SampleStage(Stage):
  name = "sample"
  config_sections = ("sample", "seed")
  model_section = "sample"

  def run(self, ctx: Context) -> dict:
    cfg = ctx.config.sample
    path, _ = self.model_checkpoint(ctx)
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
    out = os.path.join(ctx.stage_dir(self.name), "samples.jsonl")
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
