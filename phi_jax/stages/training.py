"""The base of the training stages (pretrain, finetune): what they share.

A training stage trains `config.<section>` (steps, batches, optimizer, data) from a
starting model under WORKDIR/<stage>/ (phi_jax/train/loop.py). Its output depends on
its config sections, on the starting model (path and, when another stage of this run
made it, that stage's fingerprint) and on the data stage's output, so a rebuilt
dataset or starting model is never silently trained on.
"""

from __future__ import annotations

import abc

from data_pipeline import catalog
from phi_jax.stages.base import Context, Stage

RANDOM = "random"  # start_from: a fresh random init of config.model


class TrainingStage(Stage):
  """Subclasses set `name`, `section` and `config_sections`, and implement start_from."""

  section: str = ""  # the config section of this training run: 'train' or 'finetune'
  produces_checkpoint = True
  expensive = True

  @abc.abstractmethod
  def start_from(self, ctx: Context) -> tuple[str, str | None]:
    """(starting model: 'random', a checkpoint path or a repo id; the stage of this run
    that made it, or None)."""

  def inputs(self, ctx: Context) -> dict:
    inputs = super().inputs(ctx)
    path, stage = self.start_from(ctx)
    marker = ctx.marker(stage) if stage else None
    inputs["start"] = {"path": path, "fingerprint": marker["fingerprint"] if marker else None}
    data_marker = ctx.marker(catalog.DATA_STAGE)
    inputs["data"] = {"spec": ctx.config[self.section].data,
                      "data_stage": data_marker["fingerprint"] if data_marker else None}
    return inputs

  def run(self, ctx: Context) -> dict:
    from phi_jax.train import loop  # pylint: disable=g-import-not-at-top
    return loop.train(ctx, self.name, self.section, init=self.start_from(ctx)[0])
