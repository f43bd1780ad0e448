"""The stages `run.py` runs, by name, in pipeline order.

Stages are imported lazily, so running one never imports another's dependencies
(the data stages' TensorFlow stays off the training and evaluation path).
"""

from __future__ import annotations

import importlib

from phi_jax.stages.base import COMPLETE, Context, Stage, StageError, run_stage

_REGISTRY = {
    "data": "data_pipeline.stage:DataStage",
    "init": "phi_jax.stages.init_model:InitStage",
    "pretrain": "phi_jax.stages.pretrain:PretrainStage",
    "finetune": "phi_jax.stages.finetune:FinetuneStage",
    "sample": "phi_jax.stages.sample:SampleStage",
    "eval": "eval.stage:EvalStage",
    "export_hf": "phi_jax.stages.export_hf:ExportHfStage",
    "serve": "phi_jax.stages.serve:ServeStage",
}

STAGE_NAMES = tuple(_REGISTRY)


def get_stage(name: str) -> Stage:
  try:
    module_name, class_name = _REGISTRY[name].split(":")
  except KeyError:
    raise StageError(f"unknown stage {name!r}; available stages: "
                     f"{', '.join(STAGE_NAMES)}") from None
  return getattr(importlib.import_module(module_name), class_name)()


def run_stages(ctx: Context, names: list[str], force: frozenset[str] = frozenset()) -> list[dict]:
  """Runs the named stages in order (each skipped when already complete)."""
  stages = [get_stage(name) for name in names]  # fail on a typo before doing any work
  unknown_force = set(force) - set(STAGE_NAMES)
  if unknown_force:
    raise StageError(f"--force names unknown stage(s) {sorted(unknown_force)}")
  return [run_stage(stage, ctx, force=stage.name in force) for stage in stages]


__all__ = ["COMPLETE", "Context", "STAGE_NAMES", "Stage", "StageError", "get_stage",
           "run_stages"]
