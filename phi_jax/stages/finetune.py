"""Stage `finetune`: continue training a model with its own optimizer and schedule.

Starts from config.finetune.init_from (a phi_jax checkpoint, transformers directory
or hub repo id) or, when that is '', from the latest checkpoint of this run's
`pretrain` stage. The architecture and tokenizer come from the starting model;
config.model sets the numerics and dropout. Writes WORKDIR/finetune/ like pretrain,
training on config.finetune.data (CodeExercises in the paper).
"""

from __future__ import annotations

import os

from phi_jax.stages.base import Context, StageError
from phi_jax.stages.training import TrainingStage

PRETRAIN = "pretrain"


class FinetuneStage(TrainingStage):
  name = "finetune"
  section = "finetune"
  config_sections = ("finetune", "mesh", "seed", "model")

  def start_from(self, ctx: Context) -> tuple[str, str | None]:
    if ctx.config.finetune.init_from:
      return ctx.config.finetune.init_from, None
    if ctx.marker(PRETRAIN) is None:
      raise StageError(f"finetune starts from the pretrain stage's model, but "
                       f"{ctx.stage_dir(PRETRAIN)} is not complete: run the pretrain stage "
                       f"first, or set config.finetune.init_from")
    return os.path.join(ctx.stage_dir(PRETRAIN), "checkpoints"), PRETRAIN
