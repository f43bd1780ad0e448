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

from phi_jax.stages.base import Context, Stage

INIT = "init"


class PretrainStage(Stage):
  name = "pretrain"
  config_sections = ("model", "train", "mesh", "seed")
  produces_checkpoint = True
  expensive = True

  def start_from(self, ctx: Context) -> str:
    """The init stage's checkpoint when it is complete, else 'random'."""
    from phi_jax.train import loop  # pylint: disable=g-import-not-at-top
    if ctx.marker(INIT) is not None:
      return os.path.join(ctx.stage_dir(INIT), "checkpoints")
    return loop.RANDOM

  def inputs(self, ctx: Context) -> dict:
    inputs = super().inputs(ctx)
    init_marker = ctx.marker(INIT)
    inputs["start"] = {"path": self.start_from(ctx),
                       "fingerprint": init_marker["fingerprint"] if init_marker else None}
    inputs["data"] = data_inputs(ctx, ctx.config.train.data)
    return inputs

  def run(self, ctx: Context) -> dict:
    from phi_jax.train import loop  # pylint: disable=g-import-not-at-top
    return loop.train(ctx, self.name, ctx.config.train, init=self.start_from(ctx))


def data_inputs(ctx: Context, spec: str) -> dict:
  """What a training stage's data is: the spec and the data stage's fingerprint."""
  marker = ctx.marker("data")
  return {"spec": spec, "data_stage": marker["fingerprint"] if marker else None}
