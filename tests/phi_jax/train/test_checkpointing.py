"""Training checkpoints: the resume items, keep-last-K, atomicity, loading as a model."""

import os
import threading
import time

import jax
import ml_collections
import numpy as np
import pytest

from phi_jax.train.settings import train_settings

import phi_jax
from configs import base as base_config
from phi_jax import checkpoint, hosts, tokenizer as tokenizer_lib
from phi_jax.config import PhiConfig
from phi_jax.train import checkpointing, mesh as mesh_lib
from phi_jax.train.step import Trainer
from tests.conftest import random_params
from tests.files import truncate_item_files

CONFIG = PhiConfig(vocab_size=320, d_model=32, num_layers=2, num_heads=4, mlp_dim=64,
                   rotary_dim=8, max_seq_len=64, dtype="float32")


@pytest.fixture(scope="module")
def trainer():
  train_cfg = train_settings(steps=10, batch_size=8, lr=1e-3, warmup_steps=1)
  mesh_cfg = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
  mesh = mesh_lib.make_mesh(mesh_cfg)
  return Trainer(CONFIG, train_cfg, mesh, mesh_lib.parse_rules(base_config.get_config().mesh.rules),
                 total_steps=10)


def _state(trainer, step, seed=0):
  state = trainer.state_from_params(random_params(CONFIG, seed))
  return state.replace(step=jax.device_put(np.int32(step), state.step.sharding))


def _equal(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(leaves_a) == len(leaves_b) and all(
      np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b))


def test_save_restore_keep_and_load_as_model(tmp_path, trainer):
  root = str(tmp_path / "checkpoints")
  tok = tokenizer_lib.byte_level()
  with checkpointing.TrainCheckpointer(root, CONFIG, tok, every=2, keep=2,
                                       run_config={"seed": 0}) as ckpt:
    assert ckpt.restore(trainer.abstract_state()) is None
    for step in (1, 2, 3, 4, 6):
      ckpt.save(_state(trainer, step, seed=step), {"epoch": 0, "position": step, "seed": 0})
    ckpt.wait()
    assert ckpt.complete_steps() == [4, 6]  # 1 and 3 not due; 2 beyond keep=2
    assert ckpt.save(_state(trainer, 7, seed=7), {"epoch": 1, "position": 0, "seed": 0},
                     force=True)
  with checkpointing.TrainCheckpointer(root, CONFIG, tok, every=2, keep=2) as ckpt:
    assert ckpt.latest_step() == 7
    state, iterator_state = ckpt.restore(trainer.abstract_state())
  assert int(state.step) == 7 and iterator_state == {"epoch": 1, "position": 0, "seed": 0}
  want = _state(trainer, 7, seed=7)
  assert _equal(state.params, want.params) and _equal(state.opt_state, want.opt_state)
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(want.opt_state)
  for leaf, sharding in zip(jax.tree.leaves(state.params),
                            jax.tree.leaves(trainer.param_shardings)):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)
  # A training checkpoint is a model checkpoint.
  model = phi_jax.from_pretrained(root)
  assert model.config == CONFIG and model.tokenizer.vocab_size == tok.vocab_size
  metadata = checkpoint.read_metadata(root)
  assert metadata["step"] == 7 and metadata["run_config"] == {"seed": 0}
  assert metadata["code_version"] == checkpoint.code_version()


def test_incomplete_steps_are_never_picked(tmp_path, trainer):
  root = tmp_path / "checkpoints"
  with checkpointing.TrainCheckpointer(str(root), CONFIG, None, every=1, keep=5) as ckpt:
    ckpt.save(_state(trainer, 2), {"epoch": 0, "position": 2, "seed": 0})
  # A save killed mid-write (Orbax's temporary name) and a step dir missing items.
  tmp = root / "9.orbax-checkpoint-tmp-1700000000"
  (tmp / "params").mkdir(parents=True)
  (tmp / "params" / "junk").write_text("half")
  (root / "8" / "params").mkdir(parents=True)
  with checkpointing.TrainCheckpointer(str(root), CONFIG, None, every=1, keep=5) as ckpt:
    assert ckpt.latest_step() == 2
    state, _ = ckpt.restore(trainer.abstract_state())
  assert int(state.step) == 2
  assert checkpoint.steps(str(root)) == [2]
  assert checkpoint.resolve_step_dir(str(root)).endswith(os.sep + "2")


def _trained_state(trainer, step):
  """A state whose optimizer moments are random (a fresh one's zeros compress to nothing)."""
  state = _state(trainer, step, seed=step)
  rng = np.random.default_rng(step)

  def randomize(leaf):
    if not np.issubdtype(leaf.dtype, np.floating):
      return leaf
    values = rng.standard_normal(leaf.shape).astype(leaf.dtype)
    return jax.device_put(values, leaf.sharding)

  return state.replace(opt_state=jax.tree.map(randomize, state.opt_state))


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("item", [checkpoint.PARAMS, checkpointing.OPT_STATE])
def test_a_corrupt_step_names_itself_and_the_older_step_resumes(tmp_path, trainer, item):
  root = str(tmp_path / "checkpoints")
  with checkpointing.TrainCheckpointer(root, CONFIG, None, every=2, keep=5) as ckpt:
    for step in (2, 4, 6):
      ckpt.save(_trained_state(trainer, step), {"epoch": 0, "position": step, "seed": 0})
  os.makedirs(os.path.join(root, "5", "params"))  # missing items: not a complete step
  truncate_item_files(os.path.join(root, "6", item))
  with checkpointing.TrainCheckpointer(root, CONFIG, None, every=2, keep=5) as ckpt:
    with pytest.raises(checkpoint.CheckpointError) as info:
      ckpt.restore(trainer.abstract_state())
    error = info.value
    assert (error.step, error.item, error.older_step) == (6, item, 4)
    assert f"step 6, item '{item}' ({root}/6/{item})" in str(error)
    assert ckpt.older_complete_steps(6) == [4, 2]
    # Resuming from the step the error names.
    state, iterator_state = ckpt.restore(trainer.abstract_state(), step=error.older_step)
  want = _trained_state(trainer, 4)
  assert int(state.step) == 4 and iterator_state["position"] == 4
  assert _equal(state.params, want.params) and _equal(state.opt_state, want.opt_state)


def test_a_changed_model_is_named_as_such_not_as_corrupt(tmp_path, trainer):
  root = str(tmp_path / "checkpoints")
  with checkpointing.TrainCheckpointer(root, CONFIG, None, every=1, keep=2) as ckpt:
    ckpt.save(_state(trainer, 1), {"epoch": 0, "position": 1, "seed": 0})
  wider = CONFIG.replace(mlp_dim=128)
  train_cfg = train_settings(steps=10, batch_size=8, lr=1e-3, warmup_steps=1)
  other = Trainer(wider, train_cfg, trainer.mesh, mesh_lib.parse_rules(
      base_config.get_config().mesh.rules), total_steps=10)
  with checkpointing.TrainCheckpointer(root, wider, None, every=1, keep=2) as ckpt:
    with pytest.raises(ValueError, match=r"checkpoints/1: parameter blocks/mlp/fc1/bias has "
                                         r"shape \(2, 64\) in the checkpoint but the model "
                                         r"config needs \(2, 128\)") as info:
      ckpt.restore(other.abstract_state())
  assert not isinstance(info.value, checkpoint.CheckpointError)


def test_keep_steps_survive_retention(tmp_path, trainer):
  """phi-1-base: a designated step is saved when reached (not a multiple of `every`)
  and outlives keep=2, while the other steps rotate out."""
  root = str(tmp_path / "checkpoints")
  with checkpointing.TrainCheckpointer(root, CONFIG, None, every=2, keep=2,
                                       keep_steps=(3,)) as ckpt:
    for step in range(1, 11):
      ckpt.save(_state(trainer, step), {"epoch": 0, "position": step, "seed": 0})
    ckpt.wait()
    assert ckpt.complete_steps() == [3, 8, 10]
  with checkpointing.TrainCheckpointer(root, CONFIG, None, every=2, keep=2,
                                       keep_steps=(3,)) as ckpt:
    ckpt.save(_state(trainer, 12), {"epoch": 0, "position": 12, "seed": 0})
    ckpt.wait()
    assert ckpt.complete_steps() == [3, 10, 12]
    state, _ = ckpt.restore(trainer.abstract_state(), step=3)
  assert int(state.step) == 3


def test_a_stop_finishes_the_save_in_flight_within_its_bound(tmp_path, trainer):
  """What a stopping multi-host job runs before its processes leave
  (phi_jax.hosts.finish_in_flight): an open checkpointer's save in flight is committed;
  a closed one is forgotten; work that does not end is given up at the bound."""
  root = str(tmp_path / "checkpoints")
  ckpt = checkpointing.TrainCheckpointer(root, CONFIG, None, every=2, keep=2)
  try:
    assert ckpt.save(_state(trainer, 2), {"epoch": 0, "position": 2, "seed": 0})
    assert hosts.finish_in_flight(60)
    assert checkpoint.steps(root) == [2]
  finally:
    ckpt.close()
  never = threading.Event()
  hosts.finish_on_stop(never.wait)
  try:
    start = time.monotonic()
    assert not hosts.finish_in_flight(0.3)
    assert time.monotonic() - start < 5
  finally:
    hosts.forget_on_stop(never.wait)
    never.set()
  assert hosts.finish_in_flight(0.3)  # nothing left to wait for
