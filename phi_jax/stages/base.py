"""The stage framework: each stage writes under WORKDIR/<stage>/ and marks completion.

A stage is complete when WORKDIR/<stage>/COMPLETE.json exists (written last, atomically).
The marker records a fingerprint of what the stage was built from (its config sections
and the markers of the stages it read), so `run` skips a complete stage whose inputs
did not change, reruns a cheap stage whose inputs changed, and refuses to silently
overwrite an expensive one (pass it in config.force / --force to rerun it).
"""

from __future__ import annotations

import abc
import datetime
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence

import ml_collections
from absl import logging

from phi_jax import atomic, checkpoint

COMPLETE = "COMPLETE.json"


class StageError(RuntimeError):
  """A stage cannot run: missing input, changed inputs of an expensive stage, ..."""


class Context:
  """What a stage sees: the config, the work directory, and the other stages."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = os.path.abspath(workdir)

  def stage_dir(self, name: str) -> str:
    return os.path.join(self.workdir, name)

  def marker(self, name: str) -> dict | None:
    path = os.path.join(self.stage_dir(name), COMPLETE)
    if not os.path.isfile(path):
      return None
    with open(path) as f:
      return json.load(f)

  def model_checkpoint(self, explicit: str = "") -> tuple[str, str | None]:
    """(checkpoint path, producing stage) of the model a stage should use.

    `explicit` (a config field such as sample.checkpoint) wins; otherwise the latest
    complete checkpoint-producing stage, in pipeline order (a finetuned model wins over
    a pretrained one, which wins over the initial one).
    """
    if explicit:
      return explicit, None
    from phi_jax.stages import STAGE_NAMES, get_stage  # pylint: disable=g-import-not-at-top
    for name in reversed(STAGE_NAMES):
      stage = get_stage(name)
      if stage.produces_checkpoint and self.marker(name) is not None:
        return os.path.join(self.stage_dir(name), "checkpoints"), name
    raise StageError(
        f"no model checkpoint in {self.workdir}: run a stage that produces one "
        f"(init, ...) first, or name a checkpoint in the config")


class Stage(abc.ABC):
  """One step of the pipeline. Subclasses set the class attributes and implement run()."""

  name: str = ""
  # config sections whose values define this stage's output
  config_sections: Sequence[str] = ()
  # whether it writes a model checkpoint under WORKDIR/<name>/checkpoints
  produces_checkpoint: bool = False
  # expensive stages are never rerun silently when their inputs change
  expensive: bool = False
  # stages that read a model: the config section whose `checkpoint` field names it
  # ('' there = the run's latest model)
  model_section: str = ""
  # services (serve) run every time until stopped and leave no completion marker
  writes_marker: bool = True

  def inputs(self, ctx: Context) -> dict:
    """What the output depends on: config sections and upstream completion markers."""
    inputs = {section: ctx.config[section].to_dict()
              if isinstance(ctx.config[section], ml_collections.ConfigDict)
              else ctx.config[section] for section in self.config_sections}
    if self.model_section:
      path, source = self.model_checkpoint(ctx)
      marker = ctx.marker(source) if source else None
      inputs["model"] = {"checkpoint": path, "stage": source,
                         "fingerprint": marker["fingerprint"] if marker else None}
    return inputs

  def model_checkpoint(self, ctx: Context) -> tuple[str, str | None]:
    """(path, producing stage) of the model this stage reads."""
    return ctx.model_checkpoint(ctx.config[self.model_section].checkpoint)

  @abc.abstractmethod
  def run(self, ctx: Context) -> dict:
    """Does the work under ctx.stage_dir(self.name); returns a JSON summary."""


def fingerprint(inputs: dict) -> str:
  return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def run_stage(stage: Stage, ctx: Context, force: bool = False) -> dict:
  """Runs one stage unless it is complete with the same inputs; returns its marker."""
  if not stage.writes_marker:
    print(f"[{stage.name}] running", flush=True)
    return {"stage": stage.name, "summary": stage.run(ctx)}
  inputs = stage.inputs(ctx)
  digest = fingerprint(inputs)
  marker = ctx.marker(stage.name)
  if marker is not None and not force:
    if marker.get("fingerprint") == digest:
      logging.info("stage %s: complete, skipped", stage.name)
      print(f"[{stage.name}] complete, skipped ({ctx.stage_dir(stage.name)})", flush=True)
      return marker
    if stage.expensive:
      raise StageError(
          f"stage {stage.name} in {ctx.stage_dir(stage.name)} was built from other inputs "
          f"than the current config; use another --workdir, or rerun it with "
          f"--force={stage.name}")
  if force and os.path.isdir(ctx.stage_dir(stage.name)):
    shutil.rmtree(ctx.stage_dir(stage.name))  # forced: start over, not resume
  os.makedirs(ctx.stage_dir(stage.name), exist_ok=True)
  marker_path = os.path.join(ctx.stage_dir(stage.name), COMPLETE)
  if os.path.exists(marker_path):
    os.remove(marker_path)  # the stage is incomplete from here until it finishes
  print(f"[{stage.name}] running in {ctx.stage_dir(stage.name)}", flush=True)
  start = time.time()
  summary = stage.run(ctx)
  marker = {
      "stage": stage.name,
      "fingerprint": digest,
      "inputs": inputs,
      "summary": summary,
      "seconds": round(time.time() - start, 3),
      "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      "code_version": checkpoint.code_version(),
  }
  atomic.write_json(marker, marker_path)
  print(f"[{stage.name}] done in {marker['seconds']:.1f}s", flush=True)
  return marker
