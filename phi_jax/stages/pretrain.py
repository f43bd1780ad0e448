"""Stage `pretrain`: train the model on config.train.data (CodeTextbook in the paper).

Starts from the `init` stage's model when that stage is complete in this work directory
(a random init of config.model, or an imported transformers model to continue
pretraining), else from a fresh random init of config.model with config.init.tokenizer.
Writes WORKDIR/pretrain/checkpoints/<step>/ (a model checkpoint plus the optimizer and
data state), metrics.jsonl and tensorboard/. An interrupted run resumes from its latest
checkpoint when rerun (the stage is complete only once COMPLETE.json is written).
"""

from __future__ import annotations

import os

from phi_jax.stages.base import Context
from phi_jax.stages.training import RANDOM, TrainingStage

INIT = "init"


class PretrainStage(TrainingStage):
  name = "pretrain"
  section = "train"
  config_sections = ("model", "train", "mesh", "seed")

  def start_from(self, ctx: Context) -> tuple[str, str | None]:
    """The init stage's checkpoint when it is complete, else 'random'."""
    if ctx.marker(INIT) is not None:
      return os.path.join(ctx.stage_dir(INIT), "checkpoints"), INIT
    return RANDOM, None
