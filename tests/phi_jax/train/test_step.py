"""Tests of the sharded training core (phi_jax.train) on 8 simulated CPU devices."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from configs.base import get_config
from phi_jax.settings import to_config
from phi_jax.train.settings import train_settings
from phi_jax import sharding
from phi_jax.config import PhiConfig
from phi_jax.train import flops, mesh as mesh_lib, optim, step as step_lib
from tests.conftest import random_params

CONFIG = PhiConfig(vocab_size=128, d_model=32, num_layers=2, num_heads=4, mlp_dim=64,
                   rotary_dim=4, max_seq_len=32, dtype="float32", residual_dropout=0.1,
                   attention_dropout=0.1)
NO_DROPOUT = CONFIG.replace(residual_dropout=0.0, attention_dropout=0.0)
BATCH, SEQ = 16, 16
RULES = mesh_lib.parse_rules(get_config().mesh.rules)
PARAMS = random_params(CONFIG, seed=0)
MESHES = {"8x1x1": (8, 1, 1), "1x8x1": (1, 8, 1), "2x2x2": (2, 2, 2), "one_device": None}


def train_cfg(microbatches=1, **optimizer):
  cfg = to_config(train_settings(steps=10, batch_size=BATCH, lr=1e-2, warmup_steps=0))
  cfg.microbatches = microbatches
  # eps well above float noise: Adam would otherwise amplify rounding differences of
  # near-zero gradients between meshes into visible parameter differences.
  cfg.optimizer.update(dict(eps=1e-4, **optimizer))
  return cfg


def make_mesh(shape):
  if shape is None:
    return mesh_lib.make_mesh(dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
  return mesh_lib.make_mesh(dict(zip(mesh_lib.MESH_AXES, shape)))


def make_batch(seed=0):
  rng = np.random.RandomState(seed)
  tokens = rng.randint(0, CONFIG.vocab_size, (BATCH, SEQ)).astype(np.int32)
  # Row r keeps a different share of its targets, so micro-batches (rows j::4) differ.
  keep = (np.arange(SEQ)[None, :] < 4 + 3 * np.arange(BATCH)[:, None] % 13)
  return dict(tokens=tokens, loss_mask=keep.astype(np.int32))


def get(tree, *path):
  for key in path:
    tree = tree[key]
  return tree


@pytest.fixture(scope="module")
def runs():
  """Per mesh: (trainer, state after 3 steps, the 3 losses)."""
  out = {}
  for name, shape in MESHES.items():
    trainer = step_lib.Trainer(CONFIG, train_cfg(), make_mesh(shape), RULES, total_steps=10)
    state = trainer.state_from_params(PARAMS)
    batch = trainer.shard_batch(make_batch())
    losses = []
    for _ in range(3):
      state, metrics = trainer.train_step(state, batch, jax.random.key(7))
      losses.append(float(metrics["loss"]))
    out[name] = (trainer, state, losses)
  return out


@pytest.mark.parametrize("name", [n for n in MESHES if n != "one_device"])
def test_meshes_agree_with_one_device(runs, name):
  _, state, losses = runs[name]
  _, reference, reference_losses = runs["one_device"]
  np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)
  assert losses[2] < losses[0]
  assert int(state.step) == 3
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       atol=1e-5, rtol=1e-5),
               state.params, reference.params)


def test_parameters_and_adam_moments_are_sharded_by_the_rules(runs):
  trainer, state, _ = runs["2x2x2"]
  mu = optax.tree_utils.tree_get(state.opt_state, "mu")
  cases = [  # (array, spec, per-device shard shape)
      (state.params["embed"], P("tensor", "fsdp"), (64, 16)),
      (get(state.params, "blocks", "mlp", "fc1", "kernel"), P(None, "fsdp", "tensor"),
       (2, 16, 32)),
      (get(state.params, "blocks", "attn", "q_proj", "kernel"),
       P(None, "fsdp", "tensor", None), (2, 16, 2, 8)),
      (get(state.params, "lm_head", "bias"), P("tensor"), (64,)),
      (get(state.params, "final_norm", "scale"), P(None), (32,)),
      (get(mu, "blocks", "mlp", "fc2", "kernel"), P(None, "tensor", "fsdp"), (2, 32, 16)),
      (mu["embed"], P("tensor", "fsdp"), (64, 16)),
  ]
  for array, spec, shard_shape in cases:
    assert array.sharding.spec == spec
    assert len(array.addressable_shards) == 8
    assert {s.data.shape for s in array.addressable_shards} == {shard_shape}
  assert mu["embed"].dtype == jnp.float32
  fresh = trainer.init_state(seed=0)  # initialised straight into its shards
  assert fresh.params["embed"].sharding.spec == P("tensor", "fsdp")
  assert {s.data.shape for s in fresh.params["embed"].addressable_shards} == {(64, 16)}
  assert 0.01 < float(jnp.std(fresh.params["embed"])) < 0.03
  abstract = trainer.abstract_state()
  assert abstract.params["embed"].sharding.spec == P("tensor", "fsdp")
  assert abstract.params["embed"].shape == (128, 32)


def test_gradient_accumulation_equals_one_large_batch():
  mesh = make_mesh((2, 2, 2))
  batch = make_batch(seed=1)
  counts = [batch["loss_mask"][j::4, 1:].sum() for j in range(4)]
  assert len(set(counts)) == 4  # micro-batches count different numbers of targets
  results = []
  for k in (1, 4):
    trainer = step_lib.Trainer(NO_DROPOUT, train_cfg(microbatches=k), mesh, RULES, 10)
    state = trainer.state_from_params(random_params(NO_DROPOUT, seed=3))
    state, metrics = trainer.train_step(state, trainer.shard_batch(batch), jax.random.key(0))
    results.append((state, metrics))
  (one, m1), (four, m4) = results
  for key in ("loss", "grad_norm", "tokens"):
    np.testing.assert_allclose(m4[key], m1[key], rtol=1e-5)
  assert float(m1["tokens"]) == sum(counts)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       atol=1e-5, rtol=1e-5),
               four.params, one.params)


@functools.partial(jax.jit, static_argnums=0)
def per_row_reference(config, params, batch, step_rng):
  """(loss, grads): the step's mean loss and gradients by brute force, each row run as a
  batch of its own with its own dropout key fold_in(step_rng, r) (phi_jax.dropout's
  contract), then summed."""
  def one_row(row, r):
    key = jax.random.fold_in(step_rng, r)[None]  # the row's key, as a [1] per-row array
    return jax.value_and_grad(step_lib.loss_sums, has_aux=True)(
        params, config, {k: v[None] for k, v in row.items()}, key)

  (sums, counts), grads = jax.vmap(one_row)(batch, jnp.arange(batch["tokens"].shape[0]))
  count = counts.sum()
  return sums.sum() / count, jax.tree.map(lambda g: g.sum(0) / count, grads)


@pytest.fixture(scope="module")
def dropout_reference():
  """(params, batch, rng, loss, grads, updated params) of one step with dropout on, by
  the per-row brute force."""
  batch, rng = make_batch(seed=6), jax.random.key(11)
  params = random_params(CONFIG, seed=4)
  step_rng = jax.random.fold_in(rng, 0)  # the trainer folds in the step (0 here)
  loss, grads = per_row_reference(CONFIG, params, batch, step_rng)
  loss = float(loss)
  optimizer = optim.make_optimizer(train_cfg().optimizer, 10, params)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  return params, batch, rng, loss, grads, optax.apply_updates(params, updates)


@pytest.mark.parametrize("microbatches", [1, 2, pytest.param(4, marks=pytest.mark.slow)])
def test_dropout_is_keyed_per_global_row_whatever_the_microbatches(dropout_reference,
                                                                  microbatches):
  """With dropout on, any number of micro-batches gives the step the per-row brute force
  gives (same loss, gradients, update): a row's masks do not depend on its micro-batch."""
  params, batch, rng, want_loss, want_grads, want_params = dropout_reference
  trainer = step_lib.Trainer(CONFIG, train_cfg(microbatches=microbatches), make_mesh(None),
                             RULES, 10)
  state, metrics = trainer.train_step(trainer.state_from_params(params),
                                      trainer.shard_batch(batch), rng)
  np.testing.assert_allclose(metrics["loss"], want_loss, rtol=1e-5)
  np.testing.assert_allclose(metrics["grad_norm"], optax.global_norm(want_grads), rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       atol=1e-5, rtol=1e-5),
               state.params, want_params)


def test_the_per_row_reference_sees_the_masks(dropout_reference):
  """The brute force is not blind to the keys: other row keys give another loss."""
  params, batch, rng, want_loss, _, _ = dropout_reference
  other_loss, _ = per_row_reference(CONFIG, params, batch, jax.random.fold_in(rng, 1))
  assert abs(float(other_loss) - want_loss) > 1e-3


def test_pallas_attention_runs_per_shard_in_the_train_step():
  """The trainer traces its step under its mesh, so attention='pallas' runs per shard
  (shard_map over batch and heads), and the step equals attention='xla' on the mesh."""
  mesh = make_mesh((2, 2, 2))
  batch = make_batch(seed=2)
  results = {}
  for implementation in ("pallas", "xla"):
    config = NO_DROPOUT.replace(attention=implementation)
    trainer = step_lib.Trainer(config, train_cfg(), mesh, RULES, 10)
    state = trainer.state_from_params(random_params(NO_DROPOUT, seed=5))
    sharded = trainer.shard_batch(batch)
    jaxpr = str(trainer.trace_train_step(state, sharded, jax.random.key(0)).jaxpr)
    assert ("shard_map" in jaxpr) == (implementation == "pallas")
    state, metrics = trainer.train_step(state, sharded, jax.random.key(0))
    eval_metrics = trainer.eval_step(state, sharded)
    results[implementation] = (state, metrics, eval_metrics)
  (pallas, m_pallas, e_pallas), (xla, m_xla, e_xla) = results["pallas"], results["xla"]
  for key in ("loss", "grad_norm"):
    np.testing.assert_allclose(m_pallas[key], m_xla[key], rtol=1e-5)
  np.testing.assert_allclose(e_pallas["loss"], e_xla["loss"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                       atol=1e-5, rtol=1e-5),
               pallas.params, xla.params)


def test_loss_matches_numpy_cross_entropy_and_eval_step():
  params = random_params(NO_DROPOUT, seed=2)
  batch = {k: jnp.asarray(v) for k, v in make_batch(seed=4).items()}
  forward = jax.jit(lambda p, t: nnx.merge(step_lib._graphdef(NO_DROPOUT), p)(t))
  logits = np.asarray(forward(params, batch["tokens"]), np.float64)
  tokens, mask = np.asarray(batch["tokens"]), np.asarray(batch["loss_mask"])
  logits = logits[:, :-1]
  log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  picked = np.take_along_axis(logits, tokens[:, 1:, None], axis=-1)[..., 0]
  expected = ((log_z - picked) * mask[:, 1:]).sum() / mask[:, 1:].sum()
  loss, aux = jax.jit(step_lib.loss_fn, static_argnums=1)(params, NO_DROPOUT, batch)
  np.testing.assert_allclose(loss, expected, rtol=1e-5)
  assert float(aux["tokens"]) == mask[:, 1:].sum()
  trainer = step_lib.Trainer(NO_DROPOUT, train_cfg(), make_mesh((1, 8, 1)), RULES, 10)
  metrics = trainer.eval_step(trainer.state_from_params(params), trainer.shard_batch(
      {k: np.asarray(v) for k, v in batch.items()}))
  np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)


def test_schedule_matches_formula():
  cfg = to_config(train_settings(steps=100, batch_size=8, lr=1e-3, warmup_steps=10)).optimizer
  cfg.end_lr = 1e-4
  schedule = optim.learning_rate_schedule(cfg, total_steps=100)
  # schedule(s) prices update s + 1: the first update (s = 0) runs at lr / warmup, the
  # 10th (s = 9) at the peak, the 100th and last (s = 99) one step above end_lr
  expected = {0: 1e-4, 4: 5e-4, 9: 1e-3, 54: 1e-3 + (1e-4 - 1e-3) * 45 / 91,
              99: 1e-3 + (1e-4 - 1e-3) * 90 / 91, 100: 1e-4, 150: 1e-4}
  for step, lr in expected.items():
    np.testing.assert_allclose(schedule(step), lr, rtol=1e-6, atol=1e-12)
  # brute force: every update's rate from the definition, none of them 0
  for s in range(100):
    u = s + 1
    want = 1e-3 * u / 10 if u <= 10 else 1e-3 + (1e-4 - 1e-3) * (u - 10) / 91
    np.testing.assert_allclose(schedule(s), want, rtol=1e-5)
  # no warmup and decay to 0: the first update at the peak, the last one not at 0
  cfg.warmup_steps, cfg.end_lr = 0, 0.0
  schedule = optim.learning_rate_schedule(cfg, total_steps=100)
  np.testing.assert_allclose([schedule(0), schedule(99), schedule(100)], [1e-3, 1e-5, 0.0],
                             rtol=1e-5, atol=1e-12)
  cfg.warmup_steps = 10
  with pytest.raises(ValueError, match="warmup_steps"):
    optim.learning_rate_schedule(cfg, total_steps=10)


def test_weight_decay_skips_biases_and_layernorm():
  params = random_params(NO_DROPOUT, seed=0)
  mask = optim.decay_mask(params)
  assert mask["embed"] and mask["lm_head"]["kernel"] and mask["blocks"]["mlp"]["fc1"]["kernel"]
  assert not mask["lm_head"]["bias"] and not mask["final_norm"]["scale"]
  assert not mask["blocks"]["norm"]["bias"] and not mask["blocks"]["attn"]["q_proj"]["bias"]
  # With zero gradients Adam's update is 0, so only decoupled weight decay moves params.
  cfg = to_config(train_settings(steps=10, batch_size=8, lr=0.1, warmup_steps=0)).optimizer
  cfg.update(dict(weight_decay=0.5, grad_clip=0.0))
  tx = optim.make_optimizer(cfg, 10, params)
  update = jax.jit(lambda p: tx.update(jax.tree.map(jnp.zeros_like, p), tx.init(p), p)[0])
  updates = update(params)
  np.testing.assert_allclose(updates["embed"], -0.1 * 0.5 * params["embed"], rtol=1e-6)
  assert not np.any(np.asarray(updates["final_norm"]["scale"]))
  assert not np.any(np.asarray(updates["blocks"]["attn"]["out_proj"]["bias"]))


def test_flops_per_token_phi1_and_mfu():
  config = PhiConfig()
  E, F, L, V, T = 2048, 8192, 24, 51200, 2048
  per_layer = 4 * (E * E + E) + (E * F + F) + (F * E + E) + 2 * E
  n = L * per_layer + 2 * E + (E * V + V)  # embedding lookup not counted
  assert 1.25e9 < n < 1.35e9
  assert flops.flops_per_token(config, T) == 6 * n + 12 * L * T * E
  cpu = jax.devices()[0]
  assert flops.peak_flops(cpu) is None
  assert flops.mfu(1e5, config, T, 8, cpu) is None
  h100 = types.SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 80GB HBM3")
  assert flops.peak_flops(h100) == 989e12
  np.testing.assert_allclose(flops.mfu(1e5, config, T, 8, h100),
                             1e5 * (6 * n + 12 * L * T * E) / (8 * 989e12))


def test_make_mesh_and_parse_rules():
  mesh = mesh_lib.make_mesh(dict(data=2, fsdp=-1, tensor=2))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert mesh_lib.batch_sharding(mesh).spec == P(("data", "fsdp"))
  with pytest.raises(ValueError, match="needs 12 devices"):
    mesh_lib.make_mesh(dict(data=3, fsdp=2, tensor=2))
  with pytest.raises(ValueError, match="at most one"):
    mesh_lib.make_mesh(dict(data=-1, fsdp=-1, tensor=1))
  # the config lists only the rules it replaces; the rest are sharding.DEFAULT_RULES
  assert mesh_lib.parse_rules(()) == sharding.DEFAULT_RULES
  rules = dict(mesh_lib.parse_rules(("vocab:", "embed:fsdp+data", "batch:data")))
  assert rules == dict(sharding.DEFAULT_RULES, vocab=None, embed=("fsdp", "data"), batch="data")
  assert mesh_lib.parse_rules("vocab:, embed:fsdp+data,batch:data") == mesh_lib.parse_rules(
      ("vocab:", "embed:fsdp+data", "batch:data"))
  # the batch is split over what the 'batch' rule says
  assert mesh_lib.batch_sharding(mesh, mesh_lib.parse_rules(("batch:data",))).spec == P("data")
  with pytest.raises(ValueError, match="unknown logical axis 'vocabb'"):
    mesh_lib.parse_rules("vocabb:tensor")
  with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
    mesh_lib.parse_rules("vocab:model")
  with pytest.raises(ValueError, match="bad entry 'vocab'"):
    mesh_lib.parse_rules("vocab")
