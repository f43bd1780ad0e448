"""Training checkpoints: phi_jax's checkpoint format plus the state to resume from.

    <stage_dir>/checkpoints/
      <step>/
        params/                  \\
        metadata/metadata.json    } phi_jax.checkpoint's items: a model checkpoint, so
        tokenizer/tokenizer.json /  phi_jax.from_pretrained(<stage_dir>/checkpoints) works
        opt_state/               the optax state (Orbax PyTree, sharded like the params)
        train_state/train_state.json   {"step": N}
        data_iterator/data_iterator.json  the data loader's state after N batches (with
                                 several processes: {"processes": [each one's state]})

Saves are asynchronous (the step loop continues while Orbax writes) and atomic: Orbax
writes `<step>.orbax-checkpoint-tmp-*` and renames it when every item is written, so
a crash mid-save leaves no step that looks complete. A stop of a multi-host job
(phi_jax.hosts) lets a save in flight finish before the processes leave. Restores pick the latest step
that has every item; a step damaged afterwards (a truncated file) raises
`checkpoint.CheckpointError` naming the step, the item and the next older complete
step, which `restore(..., step=older)` resumes from.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as ocp_preservation

from phi_jax import checkpoint, hosts
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
    # A stop of a multi-host job (SIGTERM, Ctrl-C on any host) lets a save in flight
    # finish on every process, so it is committed (phi_jax.hosts.leave).
    hosts.finish_on_stop(self.manager.wait_until_finished)

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
    hosts.hold_if_stopping()  # a stopping job starts no save it would not finish
    force = force or step in self.keep_steps
    args = checkpoint.save_args(state.params, self.model_config, step,
                                tokenizer=self.tokenizer, **self.metadata)
    args[OPT_STATE] = ocp.args.StandardSave(state.opt_state)
    args[TRAIN_STATE] = ocp.args.JsonSave({"step": step})
    args[DATA_ITERATOR] = ocp.args.JsonSave(gather_iterator_states(dict(iterator_state)))
    return self.manager.save(step, args=ocp.args.Composite(**args), force=force)

  def older_complete_steps(self, step: int) -> list[int]:
    """The complete steps below `step`, newest first: where to resume when `step` is
    corrupt (CheckpointError.older_step is the first of them)."""
    return checkpoint.older_complete_steps(self.step_dir(step), RESUME_ITEMS)

  def restore(self, abstract_state: TrainState,
              step: int | None = None) -> tuple[TrainState, dict] | None:
    """(state, iterator state) of `step` (default: the latest complete), into the
    shardings of `abstract_state` (Trainer.abstract_state()); None when there is none.

    Raises checkpoint.CheckpointError naming the step, the item that cannot be read and
    the next older complete step (restore that one by passing it as `step`).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    step_dir = self.step_dir(step)
    if step not in self.complete_steps():
      raise FileNotFoundError(f"{step_dir}: no complete training checkpoint of step {step} "
                              f"(complete steps: {self.complete_steps()})")
    args = {checkpoint.PARAMS: ocp.args.StandardRestore(abstract_state.params),
            OPT_STATE: ocp.args.StandardRestore(abstract_state.opt_state),
            TRAIN_STATE: ocp.args.JsonRestore(),
            DATA_ITERATOR: ocp.args.JsonRestore()}
    with checkpoint.reading(step_dir, checkpoint.PARAMS, RESUME_ITEMS):
      stored = self.manager.item_metadata(step)[checkpoint.PARAMS]
      stored = getattr(stored, "tree", stored)
    # A model that changed since the save is a config error, not a corrupt checkpoint.
    checkpoint.check_shapes(stored, abstract_state.params, step_dir)
    restored = {}
    for item, item_args in args.items():  # one at a time, so an error names its item
      with checkpoint.reading(step_dir, item, RESUME_ITEMS):
        restored[item] = self.manager.restore(
            step, args=ocp.args.Composite(**{item: item_args}))[item]
    with checkpoint.reading(step_dir, TRAIN_STATE, RESUME_ITEMS):
      stored_step = int(restored[TRAIN_STATE]["step"])
      if stored_step != step:
        raise ValueError(f"train_state says step {stored_step}")
    step_array = jax.device_put(jnp.asarray(step, abstract_state.step.dtype),
                                abstract_state.step.sharding)
    state = TrainState(step=step_array, params=restored[checkpoint.PARAMS],
                       opt_state=restored[OPT_STATE])
    return state, this_process_state(dict(restored[DATA_ITERATOR]), self.step_dir(step))

  def wait(self) -> None:
    """Blocks until in-flight saves are written."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
    hosts.forget_on_stop(self.manager.wait_until_finished)

  def __enter__(self) -> TrainCheckpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def gather_iterator_states(state: dict) -> dict:
  """Every process's data-iterator state, as the one JSON the primary process writes.

  One process: its state. Several: {"processes": [state of process 0, 1, ...]}, since
  each host reads its own share of the data (Orbax writes JSON items from process 0
  only). Every process must call it at the same step (it is a collective).
  """
  if jax.process_count() == 1:
    return state
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  encoded = np.frombuffer(json.dumps(state, sort_keys=True).encode(), np.uint8)
  lengths = multihost_utils.process_allgather(np.asarray([encoded.size], np.int64))
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[:encoded.size] = encoded
  gathered = multihost_utils.process_allgather(padded)
  return {"processes": [json.loads(bytes(row[:int(n)]).decode())
                        for row, n in zip(gathered, lengths.reshape(-1))]}


def this_process_state(stored: dict, where: str) -> dict:
  """This process's data-iterator state of a checkpoint's `stored` JSON.

  Written by as many processes as run now: each takes its own. By another number: the
  states must be equal (a loader whose position does not depend on the process count,
  e.g. data_pipeline's host_sharding='rows'), else the data cannot resume exactly.
  """
  states = stored.get("processes")
  if states is None:
    states = [stored]
  if len(states) == jax.process_count():
    return dict(states[jax.process_index()])
  if all(s == states[0] for s in states):
    return dict(states[0])
  raise ValueError(
      f"{where}: the data loader's state was saved by {len(states)} processes, each at its "
      f"own position in its share of the data; it cannot resume in {jax.process_count()}. "
      f"Resume with {len(states)} processes, or train with a loader whose position does "
      f"not depend on the process count (config.<section>.host_sharding = 'rows')")
