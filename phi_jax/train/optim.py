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
  """lr(s) = lr * s / warmup for s < warmup, then linear from lr to end_lr at total_steps.

  lr(s) = lr + (end_lr - lr) * (s - warmup) / (total_steps - warmup) for
  warmup <= s <= total_steps, and end_lr after. `s` is the number of updates already
  applied, so the first update (s = 0) uses lr 0 when warmup_steps > 0.
  """
  lr, end_lr = float(_get(opt_cfg, "lr")), float(_get(opt_cfg, "end_lr"))
  warmup = int(_get(opt_cfg, "warmup_steps"))
  if warmup < 0 or total_steps <= warmup:
    raise ConfigError(f"optimizer: warmup_steps ({warmup}) must be >= 0 and below the "
                     f"total steps ({total_steps})")
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup),
       optax.linear_schedule(lr, end_lr, total_steps - warmup)], [warmup])


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
