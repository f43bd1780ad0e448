"""Training checkpoints: phi_jax's checkpoint format plus the state to resume from.

    <stage_dir>/checkpoints/
      <step>/
        params/                  \\
        metadata/metadata.json    } phi_jax.checkpoint's items: a model checkpoint, so
        tokenizer/tokenizer.json /  phi_jax.from_pretrained(<stage_dir>/checkpoints) works
        opt_state/               the optax state (Orbax PyTree, sharded like the params)
        train_state/train_state.json   {"step": N}
        data_iterator/data_iterator.json  the data loader's state after N batches

Saves are asynchronous (the step loop continues while Orbax writes) and atomic: Orbax
writes `<step>.orbax-checkpoint-tmp-*` and renames it when every item is written, so
a crash mid-save leaves no step that looks complete. Restores pick the latest step
that has every item.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as ocp_preservation

from phi_jax import checkpoint
from phi_jax.config import ConfigError, PhiConfig
from phi_jax.tokenizer import Tokenizer
from phi_jax.train.step import TrainState

OPT_STATE = "opt_state"
TRAIN_STATE = "train_state"
DATA_ITERATOR = "data_iterator"
RESUME_ITEMS = (checkpoint.PARAMS, checkpoint.METADATA, OPT_STATE, TRAIN_STATE, DATA_ITERATOR)


def item_handlers() -> dict[str, ocp.CheckpointHandler]:
  handlers = checkpoint.item_handlers()
  handlers.update({OPT_STATE: ocp.StandardCheckpointHandler(),
                   TRAIN_STATE: ocp.JsonCheckpointHandler(filename=f"{TRAIN_STATE}.json"),
                   DATA_ITERATOR: ocp.JsonCheckpointHandler(filename=f"{DATA_ITERATOR}.json")})
  return handlers


class TrainCheckpointer:
  """Saves and restores training state under `root` (<stage_dir>/checkpoints).

  model_config, tokenizer: stored with every step (the model checkpoint items).
  every: save when the step is a multiple of it (`save(..., force=True)` saves any
    step). keep: keep the last K steps. keep_steps: steps kept for good besides those
    (phi-1-base is pretraining's step 24000, which finetuning starts from); each is
    saved when reached even if not a multiple of `every`. metadata: extra
    metadata.json fields (the run config, the stage, the model's source).
  """

  def __init__(self, root: str, model_config: PhiConfig, tokenizer: Tokenizer | None, *,
               every: int, keep: int, keep_steps: tuple[int, ...] = (), **metadata: Any):
    if every < 1 or keep < 1:
      raise ConfigError(f"checkpoint_every ({every}) and keep_checkpoints ({keep}) must be >= 1")
    if any(int(s) < 1 for s in keep_steps):
      raise ConfigError(f"keep_steps {tuple(keep_steps)}: steps must be >= 1")
    self.keep_steps = tuple(sorted({int(s) for s in keep_steps}))
    self.root = os.path.abspath(root)
    self.model_config = model_config
    self.tokenizer = tokenizer
    self.metadata = metadata
    policies = [ocp_preservation.LatestN(keep)]
    if self.keep_steps:
      policies.append(ocp_preservation.CustomSteps(self.keep_steps))
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=every, create=True,
        preservation_policy=ocp_preservation.AnyPreservationPolicy(policies),
        enable_async_checkpointing=True, cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(self.root, item_handlers=item_handlers(),
                                         options=options)

  def complete_steps(self) -> list[int]:
    """Steps with every item needed to resume, ascending (in-flight saves excluded)."""
    found = []
    for step in self.manager.all_steps():
      step_dir = os.path.join(self.root, str(step))
      if all(os.path.isdir(os.path.join(step_dir, item)) for item in RESUME_ITEMS):
        found.append(int(step))
    return sorted(found)

  def latest_step(self) -> int | None:
    steps = self.complete_steps()
    return steps[-1] if steps else None

  def step_dir(self, step: int) -> str:
    return os.path.join(self.root, str(step))

  def save(self, state: TrainState, iterator_state: dict, *, force: bool = False) -> bool:
    """Starts saving `state` (asynchronously) if its step is due (a multiple of `every`
    or one of `keep_steps`) or `force`; whether it did."""
    step = int(state.step)
    if step in self.manager.all_steps():
      return False
    force = force or step in self.keep_steps
    args = checkpoint.save_args(state.params, self.model_config, step,
                                tokenizer=self.tokenizer, **self.metadata)
    args[OPT_STATE] = ocp.args.StandardSave(state.opt_state)
    args[TRAIN_STATE] = ocp.args.JsonSave({"step": step})
    args[DATA_ITERATOR] = ocp.args.JsonSave(dict(iterator_state))
    return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

  def restore(self, abstract_state: TrainState,
              step: int | None = None) -> tuple[TrainState, dict] | None:
    """(state, iterator state) of `step` (default: the latest complete), into the
    shardings of `abstract_state` (Trainer.abstract_state()); None when there is none."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    restored = self.manager.restore(step, args=ocp.args.Composite(**{
        checkpoint.PARAMS: ocp.args.StandardRestore(abstract_state.params),
        OPT_STATE: ocp.args.StandardRestore(abstract_state.opt_state),
        TRAIN_STATE: ocp.args.JsonRestore(),
        DATA_ITERATOR: ocp.args.JsonRestore(),
    }))
    stored_step = int(restored[TRAIN_STATE]["step"])
    if stored_step != step:
      raise ValueError(f"{self.step_dir(step)}: train_state says step {stored_step}")
    step_array = jax.device_put(jnp.asarray(step, abstract_state.step.dtype),
                                abstract_state.step.sharding)
    state = TrainState(step=step_array, params=restored[checkpoint.PARAMS],
                       opt_state=restored[OPT_STATE])
    return state, dict(restored[DATA_ITERATOR])

  def wait(self) -> None:
    """Blocks until in-flight saves are written."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  def __enter__(self) -> TrainCheckpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
