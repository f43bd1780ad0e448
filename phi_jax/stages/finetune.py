"""Stage `finetune`: continue training a model with its own optimizer and schedule.

Starts from config.finetune.init_from (a phi_jax checkpoint, transformers directory
or hub repo id) or, when that is '', from the latest checkpoint of this run's
`pretrain` stage. The architecture and tokenizer come from the starting model;
config.model sets the numerics and dropout. Writes WORKDIR/finetune/ like pretrain.
"""

from __future__ import annotations

import os

from phi_jax.stages.base import Context, Stage, StageError
from phi_jax.stages.pretrain import data_inputs

PRETRAIN = "pretrain"


class FinetuneStage(Stage):
  name = "finetune"
  config_sections = ("finetune", "mesh", "seed", "model")
  produces_checkpoint = True
  expensive = True

  def start_from(self, ctx: Context) -> str:
    if ctx.config.finetune.init_from:
      return ctx.config.finetune.init_from
    if ctx.marker(PRETRAIN) is None:
      raise StageError(f"finetune starts from the pretrain stage's model, but "
                       f"{ctx.stage_dir(PRETRAIN)} is not complete: run the pretrain stage "
                       f"first, or set config.finetune.init_from")
    return os.path.join(ctx.stage_dir(PRETRAIN), "checkpoints")

  def inputs(self, ctx: Context) -> dict:
    inputs = super().inputs(ctx)
    start = self.start_from(ctx)
    marker = None if ctx.config.finetune.init_from else ctx.marker(PRETRAIN)
    inputs["start"] = {"path": start, "fingerprint": marker["fingerprint"] if marker else None}
    inputs["data"] = data_inputs(ctx, ctx.config.finetune.data)
    return inputs

  def run(self, ctx: Context) -> dict:
    from phi_jax.train import loop  # pylint: disable=g-import-not-at-top
    cfg = ctx.config.finetune
    return loop.train(ctx, self.name, cfg, init=self.start_from(ctx))
