"""The lm_head and the next-token cross entropy over chunks of the sequence.

The plain loss computes the logits of every position at once: [B, T, V] in fp32 (for
phi-1, 16 x 2048 x 51200 x 4 bytes = 6.7 GB per micro-batch of 16), and its backward
holds them again as their gradient. Here the positions are taken `chunk` at a time
(`jax.lax.scan`); each chunk's body is rematerialised (`jax.checkpoint`), so neither pass
keeps more than one chunk's [B, chunk, V] logits: the backward recomputes a chunk's
logits from its hidden states (one extra lm_head matmul per chunk, 2·B·T·E·V FLOPs in
all) and turns them into that chunk's gradients at once.

The result is the plain computation's up to the order of floating-point sums (the
loss sum and the lm_head's gradients add up per chunk, then over chunks), as
gradient accumulation over micro-batches and a sharded mesh also reorder them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from phi_jax.model import dense


def cross_entropy_sums(hidden_BTE: jax.Array, kernel_EV: jax.Array, bias_V: jax.Array | None,
                       labels_BT: jax.Array, weights_BT: jax.Array, *, dtype: jnp.dtype,
                       chunk: int) -> tuple[jax.Array, jax.Array]:
  """(sum over positions of weight x cross entropy of label, sum of weights), fp32.

  The logits of position t are `dense(hidden[:, t], kernel, bias)` computed in `dtype`
  and returned in fp32, as `PhiForCausalLM`'s lm_head; labels_BT [B, T] int are the
  targets, weights_BT [B, T] their weights (0 = not counted). chunk: positions per
  chunk (0 = all at once); T need not be a multiple of it (the last chunk is padded
  with weight-0 positions).
  """
  batch, length, _ = hidden_BTE.shape
  weights_BT = weights_BT.astype(jnp.float32)

  def chunk_sum(hidden_BCE, labels_BC, weights_BC):
    logits_BCV = dense(hidden_BCE, kernel_EV, bias_V, num_in=1, dtype=dtype,
                       out_dtype=jnp.float32)
    losses_BC = optax.softmax_cross_entropy_with_integer_labels(logits_BCV, labels_BC)
    return jnp.sum(losses_BC * weights_BC)

  if not chunk or chunk >= length:
    return chunk_sum(hidden_BTE, labels_BT, weights_BT), jnp.sum(weights_BT)
  chunks = -(-length // chunk)
  pad = chunks * chunk - length
  if pad:
    hidden_BTE = jnp.pad(hidden_BTE, ((0, 0), (0, pad), (0, 0)))
    labels_BT = jnp.pad(labels_BT, ((0, 0), (0, pad)))
    weights_BT_padded = jnp.pad(weights_BT, ((0, 0), (0, pad)))
  else:
    weights_BT_padded = weights_BT

  def split(x):  # [B, N * C, ...] -> [N, B, C, ...]: a chunk keeps the batch's sharding
    return jnp.moveaxis(x.reshape((batch, chunks, chunk) + x.shape[2:]), 1, 0)

  body = jax.checkpoint(chunk_sum)

  def step(total, xs):
    return total + body(*xs), None

  total, _ = jax.lax.scan(step, jnp.zeros((), jnp.float32),
                          (split(hidden_BTE), split(labels_BT), split(weights_BT_padded)))
  return total, jnp.sum(weights_BT)
