"""The paper's optimizer: AdamW with linear warmup and linear decay, clipping, wd mask."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from phi_jax.config import ConfigError

# Parameters named like this (the last key of their path) get no weight decay.
NO_DECAY_NAMES = ("bias", "scale")


def _get(cfg: Any, name: str):
  return cfg[name] if isinstance(cfg, dict) else getattr(cfg, name)


def learning_rate_schedule(opt_cfg: Any, total_steps: int) -> optax.Schedule:
  """The learning rate of each update: linear warmup to lr, then linear decay to end_lr.

  The schedule is called with `s`, the number of updates already applied; the update
  it prices is number u = s + 1 (1-based). With W = warmup_steps and N = total_steps:

      lr(u) = lr * u / W                                       for 1 <= u <= W
      lr(u) = lr + (end_lr - lr) * (u - W') / (N + 1 - W')     for W' <= u <= N, W' = max(W, 1)
      lr(u) = end_lr                                           after N

  so the first update runs at lr / W and the last one just above end_lr: neither runs
  at learning rate 0 when end_lr = 0 (a wasted batch that still moves Adam's moments);
  update W runs at the peak lr, and the line would reach end_lr at update N + 1.
  """
  lr, end_lr = float(_get(opt_cfg, "lr")), float(_get(opt_cfg, "end_lr"))
  warmup = int(_get(opt_cfg, "warmup_steps"))
  if warmup < 0 or total_steps <= warmup:
    raise ConfigError(f"optimizer: warmup_steps ({warmup}) must be >= 0 and below the "
                     f"total steps ({total_steps})")
  decay_start = max(warmup, 1)
  decay_len = total_steps + 1 - decay_start

  def schedule(count):
    update = jnp.asarray(count, jnp.float32) + 1.0
    warm = lr * update / max(warmup, 1)
    frac = jnp.clip((update - decay_start) / decay_len, 0.0, 1.0)
    return jnp.where(update <= warmup, warm, lr + (end_lr - lr) * frac)

  return schedule


def decay_mask(params: Any) -> Any:
  """True for the parameters that get weight decay: kernels and the embedding, not
  biases or LayerNorm scales (by the last key of the parameter's path)."""

  def decays(path, _):
    last = path[-1]
    name = getattr(last, "key", getattr(last, "name", str(last)))
    return name not in NO_DECAY_NAMES

  return jax.tree_util.tree_map_with_path(decays, params)


def _fp32_state(inner: optax.GradientTransformation) -> optax.GradientTransformation:
  """`inner` with its state initialised from fp32 copies of the parameters."""

  def init(params):
    return inner.init(jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params))

  return optax.GradientTransformation(init, inner.update)


def make_optimizer(opt_cfg: Any, total_steps: int, params: Any) -> optax.GradientTransformation:
  """clip_by_global_norm(grad_clip) (if > 0) then AdamW on `learning_rate_schedule`.

  opt_cfg: `config.train.optimizer`-like (lr, warmup_steps, end_lr, weight_decay, b1,
    b2, eps, grad_clip). params: the parameter tree (arrays or shapes) for the mask.
  The moments are kept in fp32.
  """
  mask = decay_mask(params)
  parts = []
  grad_clip = float(_get(opt_cfg, "grad_clip"))
  if grad_clip > 0:
    parts.append(optax.clip_by_global_norm(grad_clip))
  parts.append(optax.adamw(learning_rate_schedule(opt_cfg, total_steps),
                           b1=float(_get(opt_cfg, "b1")), b2=float(_get(opt_cfg, "b2")),
                           eps=float(_get(opt_cfg, "eps")),
                           weight_decay=float(_get(opt_cfg, "weight_decay")),
                           mu_dtype=jnp.float32, mask=mask))
  return _fp32_state(optax.chain(*parts))
