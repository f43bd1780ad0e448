"""The key/value cache for incremental decoding.

One buffer for all layers, written in place: `k` and `v` are [layers, batch, max_len,
heads, head_dim]. Prompts are left-padded to a common length, so every row writes its
next token into the same buffer slot `index`; padding and empty slots carry segment id
0 and are never attended to. `next_position` is each row's rotary position for the next
token (the number of real tokens it has seen), so left padding does not shift positions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
  k: jax.Array  # [layers, batch, max_len, heads, head_dim]
  v: jax.Array  # [layers, batch, max_len, heads, head_dim]
  segment_ids: jax.Array  # [batch, max_len] int32; 0 = padding or not yet written
  index: jax.Array  # [] int32: the buffer slot the next token is written to
  next_position: jax.Array  # [batch] int32: rotary position of each row's next token

  @classmethod
  def empty(cls, *, num_layers: int, batch: int, max_len: int, num_heads: int,
            head_dim: int, dtype: jnp.dtype) -> KVCache:
    shape = (num_layers, batch, max_len, num_heads, head_dim)
    return cls(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        segment_ids=jnp.zeros((batch, max_len), jnp.int32),
        index=jnp.zeros((), jnp.int32),
        next_position=jnp.zeros((batch,), jnp.int32),
    )

  @property
  def max_len(self) -> int:
    return self.k.shape[2]

  @property
  def batch(self) -> int:
    return self.k.shape[1]

  def append_segments(self, segment_ids_BT: jax.Array) -> KVCache:
    """Records the segment ids of T new tokens at slots index .. index + T - 1."""
    segment_ids = jax.lax.dynamic_update_slice(
        self.segment_ids, segment_ids_BT.astype(jnp.int32), (0, self.index))
    return self.replace(segment_ids=segment_ids)

  def write_layer(self, layer: jax.Array | int, k_BTHD: jax.Array,
                  v_BTHD: jax.Array) -> KVCache:
    """Writes one layer's keys/values for T new tokens at slot `index` (in place)."""
    start = (layer, 0, self.index, 0, 0)
    k = jax.lax.dynamic_update_slice(self.k, k_BTHD[None].astype(self.k.dtype), start)
    v = jax.lax.dynamic_update_slice(self.v, v_BTHD[None].astype(self.v.dtype), start)
    return self.replace(k=k, v=v)

  def layer(self, layer: jax.Array | int) -> tuple[jax.Array, jax.Array]:
    """One layer's whole key and value buffers, each [batch, max_len, heads, head_dim]."""
    return self.k[layer], self.v[layer]

  def advance(self, mask_BT: jax.Array) -> KVCache:
    """Moves past T written tokens; rows' positions advance by their real tokens."""
    return self.replace(
        index=self.index + mask_BT.shape[1],
        next_position=self.next_position + mask_BT.astype(jnp.int32).sum(axis=1),
    )
