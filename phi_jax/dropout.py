"""Dropout keyed per batch row, so a row's masks do not depend on how the batch is split.

Every dropout mask of batch row b is drawn from that row's own key: the trainer gives row
b of a step's global batch the key fold_in(step key, b) (`row_keys`), and each mask of
the row (embedding, each layer's attention probabilities and residual branches) is
derived from it alone. A row therefore gets the same masks whether it is computed with
the whole batch, in any micro-batch (gradient accumulation), or on any device of any
data / fsdp / tensor layout, and the accumulated update equals the whole batch's up to
the order of the float sums. README.md (Training, 'dropout') lists what the masks
depend on.

A `rng` here is a typed PRNG key array (`jax.random.key`); raw uint32 keys are wrapped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _typed(rng: jax.Array) -> jax.Array:
  if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    return rng
  return jax.random.wrap_key_data(rng)


def row_keys(rng: jax.Array, batch: int) -> jax.Array:
  """The per-row keys [batch] of a batch.

  rng: one key (row b gets fold_in(rng, b)) or already the rows' keys [batch].
  """
  rng = _typed(rng)
  if rng.ndim == 0:
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, jnp.arange(batch))
  if rng.shape != (batch,):
    raise ValueError(f"dropout: {rng.shape} keys for a batch of {batch} rows: pass one key "
                     f"or one key per row [{batch}]")
  return rng


def rows_of(rng: jax.Array, rows_B: jax.Array) -> jax.Array:
  """The keys [B] of the global batch rows `rows_B` (int [B]): fold_in(rng, row), the
  keys `row_keys(rng, global_batch)` gives those rows."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(_typed(rng), rows_B)


def split(keys_B: jax.Array, num: int) -> tuple[jax.Array, ...]:
  """`num` independent key arrays [B] from per-row keys [B] (each row split alone)."""
  keys_BN = jax.vmap(lambda key: jax.random.split(key, num))(keys_B)
  return tuple(keys_BN[:, i] for i in range(num))


def fold_in(keys_B: jax.Array, data: jax.Array | int) -> jax.Array:
  """Per-row keys [B] with `data` (an int scalar, e.g. the layer) folded into each."""
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys_B, data)


def bits(keys_B: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint32 random bits [B, *shape]: row b's from keys_B[b] alone."""
  return jax.vmap(lambda key: jax.random.bits(key, shape, jnp.uint32))(keys_B)


def keep_mask(keys_B: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
  """Boolean keep-mask of `shape` ([B, ...]), True with probability 1 - rate; row b's
  from keys_B[b] alone."""
  return jax.vmap(lambda key: jax.random.bernoulli(key, 1.0 - rate, shape[1:]))(keys_B)


def apply(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
  """Inverted dropout of x [B, ...] with one key or per-row keys [B]; the identity when
  rng is None (evaluation) or rate is 0."""
  if rng is None or rate == 0.0:
    return x
  keep = keep_mask(row_keys(rng, x.shape[0]), rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))
