"""Stage `pretrain`: train the model from random weights on config.data.

Writes WORKDIR/pretrain/checkpoints/<step>/ (a model checkpoint plus the optimizer and
data state), metrics.jsonl and tensorboard/. An interrupted run resumes from its latest
checkpoint when rerun (the stage is complete only once COMPLETE.json is written).
"""

from __future__ import annotations

from phi_jax.stages.base import Context, Stage


class PretrainStage(Stage):
  name = "pretrain"
  config_sections = ("model", "train", "mesh", "data", "seed")
  produces_checkpoint = True
  expensive = True

  def run(self, ctx: Context) -> dict:
    from phi_jax.train import loop  # pylint: disable=g-import-not-at-top
    return loop.train(ctx, self.name, ctx.config.train, init=loop.RANDOM)
