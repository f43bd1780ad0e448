"""Causal multi-head attention kernels behind one switch (`PhiConfig.attention`).

Every implementation takes the same arguments and masks the same way, so the model
does not know which one runs:

- a query at buffer index i may attend keys at buffer index j <= i (causal), where the
  queries occupy buffer indices `q_offset .. q_offset + T - 1` and the keys `0 .. S - 1`
  (training: q_offset = 0 and S = T; decoding: the KV cache is the key buffer);
- and only keys of its own segment: `q_segment_ids[b, i] == kv_segment_ids[b, j]`.
  Segment id 0 marks padding (and empty cache slots); packed documents may carry ids
  1, 2, ... to keep them from attending to each other.

Implementations: 'xla' (plain jnp: einsum, fp32 softmax; every backend).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def attention_mask(q_segment_ids: jax.Array, kv_segment_ids: jax.Array,
                   q_offset: jax.Array | int) -> jax.Array:
  """The boolean mask [batch, 1, q_len, kv_len] of allowed (query, key) pairs."""
  q_len, kv_len = q_segment_ids.shape[1], kv_segment_ids.shape[1]
  q_index = q_offset + jnp.arange(q_len, dtype=jnp.int32)
  kv_index = jnp.arange(kv_len, dtype=jnp.int32)
  causal = kv_index[None, :] <= q_index[:, None]  # [T, S]
  same_segment = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]  # [B, T, S]
  return (causal[None] & same_segment)[:, None]


def xla_attention(q_BTHD: jax.Array, k_BSHD: jax.Array, v_BSHD: jax.Array, *,
                  q_segment_ids: jax.Array, kv_segment_ids: jax.Array,
                  q_offset: jax.Array | int = 0, dropout_rate: float = 0.0,
                  dropout_rng: jax.Array | None = None) -> jax.Array:
  """Reference attention in plain jnp; returns [batch, q_len, heads, head_dim].

  Scores accumulate in fp32 and the softmax runs in fp32; probabilities are cast
  back to the value dtype for the second matmul (as the transformers reference
  does). Masked scores get the most negative finite fp32 value rather than -inf,
  so a row with nothing to attend (a padding query) yields finite garbage that
  the caller discards, never NaN.
  """
  head_dim = q_BTHD.shape[-1]
  scores_BHTS = jnp.einsum("bthd,bshd->bhts", q_BTHD, k_BSHD,
                           preferred_element_type=jnp.float32)
  scores_BHTS = scores_BHTS * (head_dim ** -0.5)
  mask = attention_mask(q_segment_ids, kv_segment_ids, q_offset)
  scores_BHTS = jnp.where(mask, scores_BHTS, jnp.finfo(jnp.float32).min)
  probs_BHTS = jax.nn.softmax(scores_BHTS, axis=-1)
  if dropout_rate > 0.0 and dropout_rng is not None:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, probs_BHTS.shape)
    probs_BHTS = jnp.where(keep, probs_BHTS / (1.0 - dropout_rate), 0.0)
  probs_BHTS = probs_BHTS.astype(v_BSHD.dtype)
  return jnp.einsum("bhts,bshd->bthd", probs_BHTS, v_BSHD)


_IMPLEMENTATIONS = {"xla": xla_attention}


def dot_product_attention(q_BTHD: jax.Array, k_BSHD: jax.Array, v_BSHD: jax.Array, *,
                          implementation: str, **kwargs) -> jax.Array:
  """Dispatches to the implementation named by `PhiConfig.attention`."""
  try:
    fn = _IMPLEMENTATIONS[implementation]
  except KeyError:
    raise ValueError(f"unknown attention implementation {implementation!r}; "
                     f"available: {sorted(_IMPLEMENTATIONS)}") from None
  return fn(q_BTHD, k_BSHD, v_BSHD, **kwargs)
