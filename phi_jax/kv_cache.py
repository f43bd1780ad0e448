"""The key/value cache for incremental decoding: rows of different lengths.

One buffer per layer for keys and one for values, each [batch, heads, max_len,
head_dim]: heads before slots is the layout a decode step's attention matmuls read
without a transposed copy, and separate buffers let each layer read and update its own
in place (slices of one [layers, ...] buffer would be copied every step on CPU).
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

Storage dtype (`storage_dtype`): the compute dtype, except 16-bit floats on the CPU,
which are held in fp32. XLA's CPU backend has no bf16/fp16 scatter: it converts the
whole buffer to fp32 and back around every write, which made a bf16 decode step several
times slower than an fp32 one. The keys and values are rounded to the compute dtype
before they are stored, so an fp32 buffer holds exactly the same values and attention
over it gives the same result (`attention.cached_attention` widens the new tokens'
operands rather than narrowing the cache); only the memory doubles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class KVCache:
  k: tuple[jax.Array, ...]  # per layer: [batch, heads, max_len, head_dim]
  v: tuple[jax.Array, ...]  # per layer: [batch, heads, max_len, head_dim]
  lengths: jax.Array  # [batch] int32: tokens held by each row (= its next slot and position)

  @classmethod
  def empty(cls, *, num_layers: int, batch: int, max_len: int, num_heads: int,
            head_dim: int, dtype: jnp.dtype) -> KVCache:
    shape = (batch, num_heads, max_len, head_dim)
    return cls(k=tuple(jnp.zeros(shape, dtype) for _ in range(num_layers)),
               v=tuple(jnp.zeros(shape, dtype) for _ in range(num_layers)),
               lengths=jnp.zeros((batch,), jnp.int32))

  @property
  def max_len(self) -> int:
    return self.k[0].shape[2]

  @property
  def batch(self) -> int:
    return self.k[0].shape[0]

  @property
  def num_layers(self) -> int:
    return len(self.k)

  def layer(self, layer: int) -> tuple[jax.Array, jax.Array]:
    """One layer's key and value buffers, each [batch, heads, max_len, head_dim]."""
    return self.k[layer], self.v[layer]

  def write(self, layer: int, k_BTHD: jax.Array, v_BTHD: jax.Array) -> KVCache:
    """Writes one layer's keys/values of T new tokens of every row at slots
    lengths[b] + t (in place); `advance` then moves the rows past them."""
    slots_BT = self.lengths[:, None] + jnp.arange(k_BTHD.shape[1], dtype=jnp.int32)
    rows_BT = jnp.broadcast_to(jnp.arange(self.batch, dtype=jnp.int32)[:, None],
                               slots_BT.shape)
    k, v = list(self.k), list(self.v)
    k[layer] = _scatter(k[layer], rows_BT, slots_BT, k_BTHD)
    v[layer] = _scatter(v[layer], rows_BT, slots_BT, v_BTHD)
    return self.replace(k=tuple(k), v=tuple(v))

  def advance(self, num_new_B: jax.Array) -> KVCache:
    """Moves each row past its num_new_B[b] written tokens (its real ones, which come
    first; the rest of its T are padding, past its new length where nothing reads)."""
    return self.replace(lengths=self.lengths + num_new_B.astype(jnp.int32))

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
        k=tuple(_scatter(k, rows_NT, slots_NT, k_LNTHD[i]) for i, k in enumerate(self.k)),
        v=tuple(_scatter(v, rows_NT, slots_NT, v_LNTHD[i]) for i, v in enumerate(self.v)),
        lengths=self.lengths.at[rows_N].set(lengths_N.astype(jnp.int32), mode="drop"))

  def reset(self, rows_mask_B: jax.Array) -> KVCache:
    """Empties the rows where rows_mask_B is true (their slots are reused from 0)."""
    return self.replace(lengths=jnp.where(rows_mask_B, 0, self.lengths))

  def grow(self, max_len: int) -> KVCache:
    """The cache with every row padded to max_len slots (what they hold is kept)."""
    pad = ((0, 0), (0, 0), (0, max_len - self.max_len), (0, 0))
    return self.replace(k=tuple(jnp.pad(k, pad) for k in self.k),
                        v=tuple(jnp.pad(v, pad) for v in self.v))

  def prefix(self, kv_len: int) -> KVCache:
    """The cache cut to its first kv_len slots (static), for a bucketed decode."""
    if kv_len >= self.max_len:
      return self
    return self.replace(k=tuple(k[:, :, :kv_len] for k in self.k),
                        v=tuple(v[:, :, :kv_len] for v in self.v))

  def with_prefix(self, prefix: KVCache) -> KVCache:
    """This cache with its first slots (and the lengths) replaced by `prefix`'s."""
    if prefix.max_len == self.max_len:
      return prefix
    put = lambda full, part: jax.lax.dynamic_update_slice(full, part, (0, 0, 0, 0))
    return self.replace(k=tuple(map(put, self.k, prefix.k)),
                        v=tuple(map(put, self.v, prefix.v)), lengths=prefix.lengths)


def storage_dtype(compute_dtype: jnp.dtype, platform: str | None = None) -> jnp.dtype:
  """The dtype a KV cache of `compute_dtype` keys/values is held in on `platform`
  (default: JAX's default backend): fp32 for 16-bit floats on the CPU, else itself."""
  compute_dtype = jnp.dtype(compute_dtype)
  platform = platform or jax.default_backend()
  if platform == "cpu" and jnp.issubdtype(compute_dtype, jnp.floating) and (
      compute_dtype.itemsize < 4):
    return jnp.dtype(jnp.float32)
  return compute_dtype


def _scatter(buffer_BHSD: jax.Array, rows_NT: jax.Array, slots_NT: jax.Array,
             values_NTHD: jax.Array) -> jax.Array:
  """buffer[rows[n, t], :, slots[n, t]] = values[n, t] (all heads); rows or slots out
  of range are dropped."""
  return buffer_BHSD.at[rows_NT, :, slots_NT].set(values_NTHD.astype(buffer_BHSD.dtype),
                                                  mode="drop")
