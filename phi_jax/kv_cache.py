"""The key/value cache for incremental decoding: rows of different lengths.

One buffer for all layers: `k` and `v` are [layers, batch, max_len, heads, head_dim].
Every row is packed from slot 0 with no holes: row b holds `lengths[b]` tokens in slots
0 .. lengths[b] - 1, its next token goes to slot lengths[b], and a token's slot is its
rotary position. Rows are independent: each has its own length, and one row can be
emptied and refilled (a new request in a continuously batching server) while the others
keep decoding. Slots at or past a row's length hold stale keys that no query attends to.

Writes past the end of the buffer are dropped (never clamped onto real slots), so a
finished row that keeps stepping cannot corrupt anything; the caller sizes `max_len`
to hold every token it needs.

Decoding attends over a static prefix of the buffer, `prefix(kv_len)`, with kv_len
bucketed to the longest row: a step's cost follows the filled length, not max_len.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
  k: jax.Array  # [layers, batch, max_len, heads, head_dim]
  v: jax.Array  # [layers, batch, max_len, heads, head_dim]
  lengths: jax.Array  # [batch] int32: tokens held by each row (= its next slot and position)

  @classmethod
  def empty(cls, *, num_layers: int, batch: int, max_len: int, num_heads: int,
            head_dim: int, dtype: jnp.dtype) -> KVCache:
    shape = (num_layers, batch, max_len, num_heads, head_dim)
    return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
               lengths=jnp.zeros((batch,), jnp.int32))

  @property
  def max_len(self) -> int:
    return self.k.shape[2]

  @property
  def batch(self) -> int:
    return self.k.shape[1]

  def layer(self, layer: jax.Array | int) -> tuple[jax.Array, jax.Array]:
    """One layer's key and value buffers, each [batch, max_len, heads, head_dim]."""
    return self.k[layer], self.v[layer]

  def append(self, k_LBTHD: jax.Array, v_LBTHD: jax.Array, num_new_B: jax.Array) -> KVCache:
    """Appends T new tokens of every layer to every row, at slots lengths[b] + t.

    Row b advances by num_new_B[b] (its real tokens, which come first; the rest of
    its T are padding, written past its new length where nothing reads them).
    """
    slots_BT = self.lengths[:, None] + jnp.arange(k_LBTHD.shape[2], dtype=jnp.int32)
    rows_BT = jnp.broadcast_to(jnp.arange(self.batch, dtype=jnp.int32)[:, None],
                               slots_BT.shape)
    return self.replace(k=_scatter(self.k, rows_BT, slots_BT, k_LBTHD),
                        v=_scatter(self.v, rows_BT, slots_BT, v_LBTHD),
                        lengths=self.lengths + num_new_B.astype(jnp.int32))

  def fill_rows(self, rows_N: jax.Array, k_LNTHD: jax.Array, v_LNTHD: jax.Array,
                lengths_N: jax.Array) -> KVCache:
    """Replaces what rows `rows_N` held with T tokens each, at slots 0 .. T - 1.

    Row rows_N[n] then holds lengths_N[n] tokens (the rest of its T are padding).
    Row indices >= batch are dropped: callers pad N with them to bucket its size.
    """
    slots_NT = jnp.broadcast_to(jnp.arange(k_LNTHD.shape[2], dtype=jnp.int32),
                                k_LNTHD.shape[1:3])
    rows_NT = jnp.broadcast_to(rows_N.astype(jnp.int32)[:, None], slots_NT.shape)
    return self.replace(
        k=_scatter(self.k, rows_NT, slots_NT, k_LNTHD),
        v=_scatter(self.v, rows_NT, slots_NT, v_LNTHD),
        lengths=self.lengths.at[rows_N].set(lengths_N.astype(jnp.int32), mode="drop"))

  def reset(self, rows_mask_B: jax.Array) -> KVCache:
    """Empties the rows where rows_mask_B is true (their slots are reused from 0)."""
    return self.replace(lengths=jnp.where(rows_mask_B, 0, self.lengths))

  def prefix(self, kv_len: int) -> KVCache:
    """The cache cut to its first kv_len slots (static), for a bucketed decode."""
    if kv_len >= self.max_len:
      return self
    return self.replace(k=self.k[:, :, :kv_len], v=self.v[:, :, :kv_len])

  def with_prefix(self, prefix: KVCache) -> KVCache:
    """This cache with its first slots (and the lengths) replaced by `prefix`'s."""
    if prefix.max_len == self.max_len:
      return prefix
    return self.replace(k=jax.lax.dynamic_update_slice(self.k, prefix.k, (0, 0, 0, 0, 0)),
                        v=jax.lax.dynamic_update_slice(self.v, prefix.v, (0, 0, 0, 0, 0)),
                        lengths=prefix.lengths)


def _scatter(buffer_LBSHD: jax.Array, rows: jax.Array, slots: jax.Array,
             values_LNTHD: jax.Array) -> jax.Array:
  """buffer[:, rows[n, t], slots[n, t]] = values[:, n, t] for every layer; slots or rows
  out of range are dropped."""
  return buffer_LBSHD.at[:, rows, slots].set(values_LNTHD.astype(buffer_LBSHD.dtype),
                                             mode="drop")
