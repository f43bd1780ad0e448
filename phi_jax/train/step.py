"""The sharded training step: TrainState, the loss, and a Trainer holding compiled steps.

A batch is a dict of [B, T] arrays:
  tokens: int32 token ids.
  loss_mask: 1 (or a float weight) where a token counts as a prediction target. The
    target of position t is tokens[t + 1], and the loss at position t counts iff
    loss_mask[t + 1] == 1, i.e. loss_mask marks the *target* tokens (loss_mask[:, 0]
    is never used: nothing predicts the first token). Default: attention_mask if
    given, else all ones.
  segment_ids, positions, attention_mask: optional, passed to the model (packing /
    padding; see PhiForCausalLM.__call__).
The loss is the fp32 cross entropy averaged over the counted targets of the whole
(global) batch, whatever its split into micro-batches.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from phi_jax.config import ConfigError, PhiConfig
from phi_jax.model import PhiForCausalLM, abstract_model
from phi_jax import dropout as dropout_lib
from phi_jax import sharding
from phi_jax.sharding import param_shardings
from phi_jax.train import loss as loss_lib, mesh as mesh_lib
from phi_jax.train.optim import learning_rate_schedule, make_optimizer

BATCH_KEYS = ("tokens", "loss_mask", "segment_ids", "positions", "attention_mask")
MODEL_INPUTS = ("segment_ids", "positions", "attention_mask")


@flax.struct.dataclass
class TrainState:
  """step: int32 scalar (updates applied); params: nested dict (as params_of returns);
  opt_state: the optax state of `Trainer.optimizer`."""
  step: jax.Array
  params: Any
  opt_state: Any


@functools.lru_cache(maxsize=None)
def _graphdef(model_config: PhiConfig) -> nnx.GraphDef:
  return nnx.split(abstract_model(model_config))[0]


def _check_batch(batch: Mapping[str, Any]) -> None:
  unknown = sorted(set(batch) - set(BATCH_KEYS))
  if unknown or "tokens" not in batch:
    raise ValueError(f"batch: keys {sorted(batch)}; need 'tokens' and at most {BATCH_KEYS} "
                     f"(unknown: {unknown})")
  shape = batch["tokens"].shape
  for key, value in batch.items():
    if value.shape != shape or len(shape) != 2:
      raise ValueError(f"batch: every array must be [B, T] like tokens {shape}; "
                       f"'{key}' is {value.shape}")


def loss_sums(params: Any, model_config: PhiConfig, batch: Mapping[str, jax.Array],
              dropout_rng: jax.Array | None = None,
              loss_chunk: int = 0) -> tuple[jax.Array, jax.Array]:
  """(sum of the counted targets' cross entropies, their count), both fp32 scalars.

  dropout_rng: None (no dropout), one key, or one key per row [B] (phi_jax.dropout).
  loss_chunk: positions whose logits are computed at a time (phi_jax.train.loss; 0 =
  the whole [B, T, V] at once).
  """
  _check_batch(batch)
  model = nnx.merge(_graphdef(model_config), params)
  tokens_BT = batch["tokens"].astype(jnp.int32)
  inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
  default_mask = batch.get("attention_mask", jnp.ones_like(tokens_BT))
  weights_BT = batch.get("loss_mask", default_mask)[:, 1:].astype(jnp.float32)
  if not loss_chunk:
    logits_BTV = model(tokens_BT, dropout_rng=dropout_rng, **inputs)
    losses_BT = optax.softmax_cross_entropy_with_integer_labels(
        logits_BTV[:, :-1].astype(jnp.float32), tokens_BT[:, 1:])
    return jnp.sum(losses_BT * weights_BT), jnp.sum(weights_BT)
  hidden_BTE = model.hidden_states(tokens_BT, dropout_rng=dropout_rng, **inputs)
  # Position t predicts tokens[t + 1]; the last position predicts nothing (weight 0),
  # which keeps T whole (no [B, T - 1, E] copy) and the chunks aligned.
  labels_BT = jnp.pad(tokens_BT[:, 1:], ((0, 0), (0, 1)))
  weights_BT = jnp.pad(weights_BT, ((0, 0), (0, 1)))
  head = model.lm_head
  return loss_lib.cross_entropy_sums(
      hidden_BTE, head.kernel[...], None if head.bias is None else head.bias[...],
      labels_BT, weights_BT, dtype=model_config.compute_dtype, chunk=loss_chunk)


def loss_fn(params: Any, model_config: PhiConfig, batch: Mapping[str, jax.Array],
            dropout_rng: jax.Array | None = None,
            loss_chunk: int = 0) -> tuple[jax.Array, dict]:
  """Mean next-token cross entropy (fp32) over the counted targets; aux: loss, tokens."""
  total, tokens = loss_sums(params, model_config, batch, dropout_rng, loss_chunk)
  loss = total / jnp.maximum(tokens, 1.0)
  return loss, {"loss": loss, "tokens": tokens}


def _split_microbatches(batch: Mapping[str, jax.Array], k: int, mesh: Mesh,
                        rules: sharding.Rules) -> dict:
  """[B, T] -> [k, B / k, T]; micro-batch j holds rows j, j + k, j + 2k, ... so that
  every micro-batch stays evenly spread over the devices (no resharding)."""
  batch_size = batch["tokens"].shape[0]
  parallel = mesh_lib.batch_parallelism(mesh, rules)
  if batch_size % (k * parallel):
    raise ValueError(f"batch of {batch_size} sequences: must divide into {k} micro-batches "
                     f"of a multiple of the batch parallelism (data * fsdp) = {parallel}")
  spec = NamedSharding(mesh, PartitionSpec(None, mesh_lib.batch_axes(mesh, rules) or None))

  def split(x):
    x = x.reshape((batch_size // k, k) + x.shape[1:]).swapaxes(0, 1)
    return jax.lax.with_sharding_constraint(x, spec)

  return {key: split(value) for key, value in batch.items()}


class Trainer:
  """Compiled, sharded train and eval steps for one model, optimizer and mesh.

  model_config: the PhiConfig. train_cfg: `config.train`-like (batch_size,
  microbatches, loss_chunk, optimizer). microbatches: overrides train_cfg's (the count
  phi_jax.train.fit chose). mesh: from `mesh.make_mesh`. rules: logical -> mesh rules
  (`mesh.parse_rules`). total_steps: the length of the learning-rate schedule.
  """

  def __init__(self, model_config: PhiConfig, train_cfg: Any, mesh: Mesh,
               rules, total_steps: int, microbatches: int | None = None):
    if model_config.remat == "auto" or not (microbatches or int(train_cfg.microbatches)):
      raise ConfigError("Trainer: model.remat 'auto' and microbatches 0 (auto) are chosen "
                        "before the trainer is built (phi_jax.train.fit.resolve); pass the "
                        "choice (model_config.replace(remat=...), microbatches=...)")
    self.config = model_config
    self.mesh = mesh
    self.rules = tuple(rules)
    self.microbatches = int(microbatches or train_cfg.microbatches)
    self.loss_chunk = int(train_cfg.loss_chunk)
    batch_size = int(train_cfg.batch_size)
    parallel = mesh_lib.batch_parallelism(mesh, self.rules)
    if self.microbatches < 1 or batch_size % (self.microbatches * parallel):
      raise ConfigError(f"train: batch_size {batch_size} must split into microbatches "
                        f"({self.microbatches}) of a multiple of data * fsdp = {parallel}")
    abstract = abstract_model(model_config)
    abstract_params = nnx.state(abstract, nnx.Param).to_pure_dict()
    self.param_shardings = param_shardings(abstract, mesh, self.rules)
    self.schedule = learning_rate_schedule(train_cfg.optimizer, total_steps)
    self.optimizer = make_optimizer(train_cfg.optimizer, total_steps, abstract_params)
    self.batch_sharding = mesh_lib.batch_sharding(mesh, self.rules)
    replicated = mesh_lib.replicated(mesh)
    opt_shapes = jax.eval_shape(self.optimizer.init, abstract_params)
    opt_shardings = optax.tree_utils.tree_map_params(
        self.optimizer, lambda _, sharding: sharding, opt_shapes, self.param_shardings,
        transform_non_params=lambda _: replicated)
    self.state_shardings = TrainState(step=replicated, params=self.param_shardings,
                                      opt_state=opt_shardings)
    self._init = jax.jit(self._init_impl, out_shardings=self.state_shardings)
    self._from_params = jax.jit(self._state_from_params_impl,
                                in_shardings=(self.param_shardings,),
                                out_shardings=self.state_shardings)
    self._train_step = jax.jit(
        self._train_step_impl,
        in_shardings=(self.state_shardings, self.batch_sharding, replicated),
        out_shardings=(self.state_shardings, replicated), donate_argnums=(0,))
    self._eval_step = jax.jit(self._eval_step_impl,
                              in_shardings=(self.state_shardings, self.batch_sharding),
                              out_shardings=replicated)

  # State.

  def _state_from_params_impl(self, params) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.optimizer.init(params))

  def _init_impl(self, key: jax.Array) -> TrainState:
    model = PhiForCausalLM(self.config, rngs=nnx.Rngs(key))
    return self._state_from_params_impl(nnx.state(model, nnx.Param).to_pure_dict())

  def init_state(self, seed: int) -> TrainState:
    """A fresh state, its parameters initialised directly into their shards."""
    return self._init(jax.random.key(seed))

  def state_from_params(self, params: Any) -> TrainState:
    """A state at step 0 with fresh optimizer state for `params` (e.g. to finetune).

    `params` may already be placed on `param_shardings` (an Orbax restore into them),
    or be whole values on every host (numpy, or jax arrays on this host's devices):
    see `place_params`.
    """
    return self._from_params(self.place_params(params))

  def place_params(self, params: Any) -> Any:
    """`params` as global arrays on `param_shardings`, without moving data between hosts.

    A leaf already on its target sharding is kept. Single host: everything else is
    `jax.device_put`. Several hosts: a leaf on this host alone (numpy, or a jax array
    on this host's devices, e.g. a checkpoint restored onto one device) must hold the
    whole parameter on every host; each host fills its own devices' shards from its
    copy (`jax.make_array_from_callback`), since JAX does not transfer arrays between
    hosts (a `device_put` across hosts fails on CPU and, by default, on GPU). A global
    array on another sharding is resharded by a compiled identity (XLA collectives).
    """
    multi_host = jax.process_count() > 1

    def place(value, target: NamedSharding):
      if isinstance(value, jax.Array):
        if value.sharding.is_equivalent_to(target, value.ndim):
          return value
        if not value.is_fully_addressable:
          return jax.jit(lambda x: x, out_shardings=target)(value)
      if not multi_host:
        return jax.device_put(value, target)
      host_value = np.asarray(value)
      return jax.make_array_from_callback(host_value.shape, target,
                                          lambda index: host_value[index])

    return jax.tree.map(place, params, self.param_shardings)

  def abstract_state(self) -> TrainState:
    """The state as jax.ShapeDtypeStruct with shardings (an Orbax restore target)."""
    shapes = jax.eval_shape(self._init_impl, jax.random.key(0))
    return jax.tree.map(
        lambda shape, sharding: jax.ShapeDtypeStruct(shape.shape, shape.dtype,
                                                     sharding=sharding),
        shapes, self.state_shardings)

  # Steps.

  def _train_step_impl(self, state: TrainState, batch, rng):
    _check_batch(batch)
    micro = _split_microbatches(batch, self.microbatches, self.mesh, self.rules)
    step_rng = jax.random.fold_in(rng, state.step)
    grad_fn = jax.value_and_grad(loss_sums, has_aux=True)
    # Each micro-batch's rows by their index in the global batch, split as the batch is:
    # row r's dropout key is fold_in(step_rng, r) however the batch is split or sharded.
    batch_size = batch["tokens"].shape[0]
    rows_KB = jnp.arange(batch_size, dtype=jnp.int32).reshape(
        batch_size // self.microbatches, self.microbatches).T

    def accumulate(carry, xs):
      grads_sum, loss_sum, tokens_sum = carry
      micro_batch, rows_B = xs
      (loss, tokens), grads = grad_fn(state.params, self.config, micro_batch,
                                      dropout_lib.rows_of(step_rng, rows_B), self.loss_chunk)
      grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
      grads_sum = jax.lax.with_sharding_constraint(grads_sum, self.param_shardings)
      return (grads_sum, loss_sum + loss, tokens_sum + tokens), None

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
    zero = jnp.zeros((), jnp.float32)
    (grads, loss_sum, tokens), _ = jax.lax.scan(
        accumulate, (zeros, zero, zero), (micro, rows_KB))
    denominator = jnp.maximum(tokens, 1.0)
    grads = jax.tree.map(lambda g: g / denominator, grads)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss_sum / denominator, "grad_norm": optax.global_norm(grads),
               "lr": self.schedule(state.step), "tokens": tokens}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def train_step(self, state: TrainState, batch: Mapping[str, jax.Array],
                 rng: jax.Array) -> tuple[TrainState, dict]:
    """One optimizer step on a global batch (donates `state`).

    Gradients are accumulated over `microbatches` micro-batches, weighted by their
    counted target tokens, so the step equals one on the whole batch. The step is
    traced with the trainer's mesh as the context mesh (`jax.set_mesh`), which lets
    the Pallas attention kernel run per shard instead of on gathered operands.
    Dropout: row r of the global batch gets the key fold_in(fold_in(rng, step), r) and
    draws all its masks from it (phi_jax.dropout), so the step is the same (up to float
    summation order) for any number of micro-batches and any mesh. Metrics (fp32 scalars): loss,
    grad_norm (before clipping), lr (of this update), tokens (counted targets).
    """
    with jax.set_mesh(self.mesh), sharding.use_rules(self.rules):
      return self._train_step(state, dict(batch), rng)

  def trace_train_step(self, state: TrainState, batch: Mapping[str, jax.Array],
                       rng: jax.Array) -> jax.stages.Traced:
    """The train step traced as `train_step` traces it (under the mesh), not run:
    `.jaxpr` shows what runs per shard, `.lower().compile()` its HLO and cost."""
    with jax.set_mesh(self.mesh), sharding.use_rules(self.rules):
      return self._train_step.trace(state, dict(batch), rng)

  def _eval_step_impl(self, state: TrainState, batch):
    _, aux = loss_fn(state.params, self.config, batch, loss_chunk=self.loss_chunk)
    return aux

  def eval_step(self, state: TrainState, batch: Mapping[str, jax.Array]) -> dict:
    """Loss and counted target tokens of a batch, without dropout."""
    with jax.set_mesh(self.mesh), sharding.use_rules(self.rules):
      return self._eval_step(state, dict(batch))

  def shard_batch(self, batch: Mapping[str, np.ndarray]) -> dict:
    """Places this host's batch on the mesh, split over ('data', 'fsdp').

    Single host: `batch` is the global batch. Several hosts: each passes its own
    equal share (its rows of the global batch, in process order).
    """
    if jax.process_count() == 1:
      return {k: jax.device_put(np.asarray(v), self.batch_sharding) for k, v in batch.items()}
    out = {}
    for key, value in batch.items():
      value = np.asarray(value)
      global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
      out[key] = jax.make_array_from_process_local_data(self.batch_sharding, value,
                                                        global_shape)
    return out
