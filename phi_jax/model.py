"""The phi-1 decoder in Flax NNX: one definition for every size and backend.

    h = embed(tokens)
    for each layer:  h = h + attn(ln(h)) + mlp(ln(h))     # parallel block, one shared LayerNorm
    logits = lm_head(final_ln(h))                          # untied, with bias, fp32

Attention: q/k/v/out projections with biases; rotary embedding (NeoX rotate-half) on the
first `rotary_dim` dims of each head; softmax in fp32. MLP: fc1 -> gelu (tanh) -> fc2.
CodeGen (`PhiConfig.architecture = 'codegen'`) is this model without the attention
biases (`attention_bias`); its GPT-J rotary pairs are put in rotate-half order by the
import (phi_jax/hf_convert.py), so the forward pass is the same.

Parameters are stored in `param_dtype` (fp32) and cast to `dtype` (bf16) for compute.
Every parameter carries logical axis names ('vocab', 'embed', 'heads', 'head_dim', 'mlp',
'norm', and 'layers' for the stacked block parameters) that `phi_jax.sharding` maps to
mesh axes. The blocks are stored stacked, [num_layers, ...], and run either with
`jax.lax.scan` or unrolled (`PhiConfig.scan_layers`), with optional rematerialisation.

Tensor names carry their shapes: B batch, T query length, S key length (cache buffer),
E d_model, H heads, D head_dim, F mlp_dim, V vocab, L layers.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from phi_jax import attention as attention_lib
from phi_jax import dropout as dropout_lib
from phi_jax import kv_cache as kv_cache_lib
from phi_jax.config import PhiConfig
from phi_jax.kv_cache import KVCache


def _param(value: jax.Array, axes: tuple[str, ...]) -> nnx.Param:
  return nnx.Param(value, sharding_names=axes, eager_sharding=False)


def _normal(rngs: nnx.Rngs, shape: tuple[int, ...], config: PhiConfig) -> jax.Array:
  return config.initializer_range * jax.random.normal(rngs.params(), shape, config.params_dtype)


class Dense(nnx.Module):
  """y = x · kernel + bias, contracting the trailing `in_shape` dims of x.

  kernel: [*in_shape, *out_shape]; bias: [*out_shape], or none when use_bias is False.
  """

  def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
               in_axes: tuple[str, ...], out_axes: tuple[str, ...], *,
               config: PhiConfig, rngs: nnx.Rngs, use_bias: bool = True):
    self.kernel = _param(_normal(rngs, in_shape + out_shape, config), in_axes + out_axes)
    self.bias = (_param(jnp.zeros(out_shape, config.params_dtype), out_axes)
                 if use_bias else None)
    self.num_in = len(in_shape)
    self.dtype = config.compute_dtype

  def __call__(self, x: jax.Array, out_dtype: jnp.dtype | None = None) -> jax.Array:
    return dense(x, self.kernel[...], None if self.bias is None else self.bias[...],
                 num_in=self.num_in, dtype=self.dtype, out_dtype=out_dtype)


def dense(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, *, num_in: int,
          dtype: jnp.dtype, out_dtype: jnp.dtype | None = None) -> jax.Array:
  """x · kernel + bias over x's trailing `num_in` dims, computed in `dtype` and returned
  in `out_dtype` (default `dtype`): what `Dense` computes, for callers holding the arrays
  (the chunked loss, phi_jax.train.loss)."""
  contract = (tuple(range(x.ndim - num_in, x.ndim)), tuple(range(num_in)))
  y = jax.lax.dot_general(x.astype(dtype), kernel.astype(dtype), (contract, ((), ())),
                          preferred_element_type=out_dtype)
  out_dtype = out_dtype or dtype
  if bias is None:
    return y.astype(out_dtype)
  return y.astype(out_dtype) + bias.astype(out_dtype)


class LayerNorm(nnx.Module):
  """LayerNorm over the last dim, computed in fp32, returned in the compute dtype."""

  def __init__(self, dim: int, *, config: PhiConfig):
    self.scale = _param(jnp.ones((dim,), config.params_dtype), ("norm",))
    self.bias = _param(jnp.zeros((dim,), config.params_dtype), ("norm",))
    self.eps = config.layer_norm_eps
    self.dtype = config.compute_dtype

  def __call__(self, x_BTE: jax.Array) -> jax.Array:
    x = x_BTE.astype(jnp.float32)
    mean = x.mean(axis=-1, keepdims=True)
    var = jnp.square(x - mean).mean(axis=-1, keepdims=True)
    y = (x - mean) * jax.lax.rsqrt(var + self.eps)
    y = y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)
    return y.astype(self.dtype)


def rotary_angles(positions_BT: jax.Array, rotary_dim: int, base: float,
                  position_scale: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """cos and sin of the rotary angles, each [B, T, rotary_dim // 2], in fp32.

  position_scale: positions are multiplied by it first (linear RoPE scaling, i.e.
  position interpolation: 1 / factor; PhiConfig.rope_position_scale).
  """
  inv_freq = 1.0 / (base ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
  # transformers scales inv_freq, the same product: angles = position * (inv_freq / factor)
  angles_BTR = positions_BT.astype(jnp.float32)[..., None] * (inv_freq * position_scale)
  return jnp.cos(angles_BTR), jnp.sin(angles_BTR)


def apply_rotary(x_BTHD: jax.Array, cos_BTR: jax.Array, sin_BTR: jax.Array) -> jax.Array:
  """NeoX rotate-half on the first 2R dims of each head; the rest pass unchanged."""
  rotary_dim = 2 * cos_BTR.shape[-1]
  if rotary_dim == 0:
    return x_BTHD
  x_rot = x_BTHD[..., :rotary_dim].astype(jnp.float32)
  x1, x2 = jnp.split(x_rot, 2, axis=-1)
  cos, sin = cos_BTR[:, :, None, :], sin_BTR[:, :, None, :]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return jnp.concatenate([rotated.astype(x_BTHD.dtype), x_BTHD[..., rotary_dim:]], axis=-1)


dropout = dropout_lib.apply


class Attention(nnx.Module):
  """Multi-head self-attention with partial rotary embedding."""

  def __init__(self, config: PhiConfig, *, rngs: nnx.Rngs):
    E, H, D = config.d_model, config.num_heads, config.head_dim
    qkv = functools.partial(Dense, (E,), (H, D), ("embed",), ("heads", "head_dim"),
                            config=config, rngs=rngs, use_bias=config.attention_bias)
    self.q_proj, self.k_proj, self.v_proj = qkv(), qkv(), qkv()
    self.out_proj = Dense((H, D), (E,), ("heads", "head_dim"), ("embed",),
                          config=config, rngs=rngs, use_bias=config.attention_bias)
    self.implementation = config.attention
    self.block_q, self.block_kv = config.attention_block_q, config.attention_block_kv
    self.dropout_rate = config.attention_dropout

  def __call__(self, x_BTE: jax.Array, rope: tuple[jax.Array, jax.Array],
               segment_ids_BT: jax.Array, *, dropout_rng: jax.Array | None,
               cached_kv: tuple[jax.Array, jax.Array] | None = None,
               cache_lengths_B: jax.Array | None = None, prefill: bool = False,
               ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Attention output [B, T, E] and this layer's new keys and values [B, T, H, D].

    Without `cached_kv` the T tokens attend to each other (training, prefill) through
    the configured implementation. With it (decoding), `cached_kv` is this layer's
    cache (k, v) [B, H, S, D], whose row b holds cache_lengths_B[b] tokens; the new
    tokens attend to those and to each other (`attention.cached_attention`).
    prefill: the T tokens are a prompt before decoding (for attention='auto's choice).
    """
    q_BTHD = apply_rotary(self.q_proj(x_BTE), *rope)
    k_BTHD = apply_rotary(self.k_proj(x_BTE), *rope)
    v_BTHD = self.v_proj(x_BTE)
    if cached_kv is None:
      out_BTHD = attention_lib.dot_product_attention(
          q_BTHD, k_BTHD, v_BTHD, implementation=self.implementation,
          block_q=self.block_q, block_kv=self.block_kv, q_segment_ids=segment_ids_BT,
          kv_segment_ids=segment_ids_BT, q_offset=0, dropout_rate=self.dropout_rate,
          dropout_rng=dropout_rng, prefill=prefill)
    else:
      k_cache_BHSD, v_cache_BHSD = cached_kv
      out_BTHD = attention_lib.cached_attention(q_BTHD, k_BTHD, v_BTHD, k_cache_BHSD,
                                                v_cache_BHSD, lengths_B=cache_lengths_B)
      # The caller writes k/v into the cache buffers this attention reads. Making them
      # depend on its output (+ 0 * out: the same values) orders that write after the
      # read, so XLA updates the buffers in place; without it XLA copies the layer's
      # whole cache every step (an optimization_barrier does not prevent that).
      no_op_BTHD = jnp.zeros_like(out_BTHD) * out_BTHD
      k_BTHD, v_BTHD = k_BTHD + no_op_BTHD, v_BTHD + no_op_BTHD
    return self.out_proj(out_BTHD), (k_BTHD, v_BTHD)


class MLP(nnx.Module):
  """fc1 -> gelu -> fc2."""

  def __init__(self, config: PhiConfig, *, rngs: nnx.Rngs):
    E, F = config.d_model, config.mlp_dim
    self.fc1 = Dense((E,), (F,), ("embed",), ("mlp",), config=config, rngs=rngs)
    self.fc2 = Dense((F,), (E,), ("mlp",), ("embed",), config=config, rngs=rngs)
    self.approximate = config.activation == "gelu_tanh"

  def __call__(self, x_BTE: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.gelu(self.fc1(x_BTE), approximate=self.approximate))


class Block(nnx.Module):
  """The parallel block: x + attn(ln(x)) + mlp(ln(x)), one LayerNorm shared by both."""

  def __init__(self, config: PhiConfig, *, rngs: nnx.Rngs):
    self.norm = LayerNorm(config.d_model, config=config)
    self.attn = Attention(config, rngs=rngs)
    self.mlp = MLP(config, rngs=rngs)
    self.residual_dropout = config.residual_dropout

  def __call__(self, x_BTE: jax.Array, rope, segment_ids_BT: jax.Array, *,
               dropout_rng: jax.Array | None, cached_kv=None, cache_lengths_B=None,
               prefill: bool = False):
    """The block's output [B, T, E] and its attention's new (k, v) (see Attention)."""
    attn_rng = resid_rng_a = resid_rng_m = None
    if dropout_rng is not None:
      attn_rng, resid_rng_a, resid_rng_m = dropout_lib.split(dropout_rng, 3)
    h_BTE = self.norm(x_BTE)
    attn_BTE, kv = self.attn(h_BTE, rope, segment_ids_BT, dropout_rng=attn_rng,
                             cached_kv=cached_kv, cache_lengths_B=cache_lengths_B,
                             prefill=prefill)
    mlp_BTE = self.mlp(h_BTE)
    attn_BTE = dropout(attn_BTE, self.residual_dropout, resid_rng_a)
    mlp_BTE = dropout(mlp_BTE, self.residual_dropout, resid_rng_m)
    return x_BTE + attn_BTE + mlp_BTE, kv


_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_with_no_batch_dims": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _stacked_blocks(config: PhiConfig, rngs: nnx.Rngs) -> Block:
  """num_layers Blocks as one Block whose parameters have a leading 'layers' axis."""

  @nnx.split_rngs(splits=config.num_layers)
  @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
  def create(rngs: nnx.Rngs) -> Block:
    return Block(config, rngs=rngs)

  return create(rngs)


class PhiForCausalLM(nnx.Module):
  """The phi causal language model.

  `model(tokens_BT)` returns fp32 logits [B, T, V]; `model.prefill(prompts_BT, cache)`
  fills KV cache rows and `model.decode(tokens_BT, cache)` runs incrementally against
  them (phi_jax.kv_cache, docs/decoding.md). Dropout is active only when a `dropout_rng`
  is passed (training); without one the model is deterministic (evaluation).
  """

  def __init__(self, config: PhiConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.tokenizer = None  # set by from_pretrained when a tokenizer is stored
    self.dtype_source = "config"  # why config.dtype is what it is (from_pretrained sets it)
    self.embed = _param(_normal(rngs, (config.vocab_size, config.d_model), config),
                        ("vocab", "embed"))
    self.blocks = _stacked_blocks(config, rngs)
    self.final_norm = LayerNorm(config.d_model, config=config)
    self.lm_head = Dense((config.d_model,), (config.vocab_size,), ("embed",), ("vocab",),
                         config=config, rngs=rngs)

  def __repr__(self) -> str:
    c = self.config
    arch = "" if c.architecture == "phi" else f"{c.architecture} architecture, "
    return (f"PhiForCausalLM({count_params(c):,} parameters: {arch}{c.num_layers} layers, d_model "
            f"{c.d_model}, {c.num_heads} heads, vocab {c.vocab_size}; compute dtype {c.dtype} "
            f"({self.dtype_source}), parameters {c.param_dtype}, attention {c.attention}, "
            f"tokenizer {'stored' if self.tokenizer is not None else 'none'})")

  __str__ = __repr__  # print(model) too (nnx's own str lists every array)

  def __call__(self, tokens_BT: jax.Array, *, attention_mask: jax.Array | None = None,
               segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
               dropout_rng: jax.Array | None = None) -> jax.Array:
    """Logits [B, T, V] (fp32) for int tokens [B, T].

    attention_mask: [B, T], 1 for real tokens and 0 for padding (left or right).
    segment_ids: [B, T] document ids of packed sequences (>= 1; 0 = padding); tokens
      attend only within their own segment.
    positions: [B, T] rotary positions; default: the count of real tokens before
      each token (so left padding does not shift positions), else 0..T-1.
    dropout_rng: a PRNG key, or one key per row [B], to enable dropout (training).
      Row b's masks come from its own key (one key: fold_in(key, b); phi_jax.dropout),
      so they do not depend on the other rows of the batch.
    """
    hidden_BTE = self.hidden_states(tokens_BT, attention_mask=attention_mask,
                                    segment_ids=segment_ids, positions=positions,
                                    dropout_rng=dropout_rng)
    return self.lm_head(hidden_BTE, out_dtype=jnp.float32)

  def hidden_states(self, tokens_BT: jax.Array, *, attention_mask: jax.Array | None = None,
                    segment_ids: jax.Array | None = None, positions: jax.Array | None = None,
                    dropout_rng: jax.Array | None = None) -> jax.Array:
    """The final hidden states [B, T, E] (after the final LayerNorm, before the lm_head).

    In the compute dtype; the arguments are those of `__call__`, which is
    `lm_head(hidden_states(...))`. Embeddings (data_pipeline.embed) pool these.
    """
    mask_BT = _mask(tokens_BT, attention_mask)
    if segment_ids is None:
      segment_ids_BT = mask_BT
    else:
      segment_ids_BT = segment_ids.astype(jnp.int32) * mask_BT
    if positions is None:
      positions = _positions_from_mask(mask_BT)
    hidden_BTE, _ = self._forward(tokens_BT, positions, segment_ids_BT, dropout_rng)
    return hidden_BTE

  def prefill(self, tokens_BT: jax.Array, cache: KVCache, *,
              attention_mask: jax.Array | None = None,
              rows: jax.Array | None = None) -> tuple[jax.Array, KVCache]:
    """Writes prompts into cache rows, replacing what those rows held.

    Each prompt attends only to itself, through the configured attention
    implementation (static offset 0: the flash kernels on GPU/TPU), and its keys and
    values go into slots 0 .. T - 1 of its row; the other rows are untouched, so a
    server can admit a request into a free row while the others are mid-decode.

    Args:
      tokens_BT: prompts [N, T], right-padded.
      cache: the KV cache; T must fit its max_len.
      attention_mask: [N, T], 1 on each prompt's tokens (which come first) and 0 on
        the padding after them; default: every token is real.
      rows: [N] int, the cache row each prompt goes to (default 0 .. N - 1). Indices
        >= cache.batch are skipped, so N can be padded to a bucket size.

    Returns:
      The fp32 logits [N, V] of each prompt's last token, and the updated cache.
    """
    n, prompt_len = tokens_BT.shape
    if prompt_len > cache.max_len:
      raise ValueError(f"KV cache overflow: prompts of {prompt_len} tokens > max_len "
                       f"{cache.max_len}")
    mask_BT = _mask(tokens_BT, attention_mask)
    rows_B = jnp.arange(n, dtype=jnp.int32) if rows is None else jnp.asarray(rows, jnp.int32)
    positions_BT = jnp.broadcast_to(jnp.arange(prompt_len, dtype=jnp.int32), (n, prompt_len))
    hidden_BTE, (k_LBTHD, v_LBTHD) = self._forward(tokens_BT, positions_BT, mask_BT, None,
                                                   collect_kv=True)
    lengths_B = mask_BT.sum(axis=1)
    cache = cache.fill_rows(rows_B, k_LBTHD, v_LBTHD, lengths_B)
    last_BE = hidden_BTE[jnp.arange(n), jnp.maximum(lengths_B - 1, 0)]
    return self.lm_head(last_BE, out_dtype=jnp.float32), cache

  def decode(self, tokens_BT: jax.Array, cache: KVCache, *,
             attention_mask: jax.Array | None = None, last_only: bool = True,
             layer_states: tuple[nnx.State, ...] | None = None,
             ) -> tuple[jax.Array, KVCache]:
    """Appends T new tokens to every row of the cache and runs them against it.

    Token (b, t) goes to slot (and rotary position) cache.lengths[b] + t and attends
    to its row's slots up to it; rows advance by their real tokens. The cost follows
    the cache's max_len, so decode against `cache.prefix(kv_len)` (kv_len: a bucket
    above the longest row) and write it back with `with_prefix`, as phi_jax.sampling
    does. Writes past max_len are dropped (checked when called outside jit).

    Args:
      tokens_BT: [B, T] new tokens of every row (T = 1 for a decode step).
      cache: the KV cache (B rows).
      attention_mask: [B, T], 1 on each row's new tokens (which come first) and 0
        after them; a row with none stays as it is. Default: all real.
      last_only: return the logits of each row's last real new token [B, V]
        instead of every position's [B, T, V].
      layer_states: `self.layer_states()`, taken once outside a decoding loop (default:
        taken here). Inside a loop body each layer's weights would otherwise be sliced
        out of the stacked blocks, a copy of every weight at every step: XLA does not
        hoist those slices out of the loop.

    Returns:
      fp32 logits and the updated cache.
    """
    if not isinstance(cache.lengths, jax.core.Tracer) and (
        int(jnp.max(cache.lengths)) + tokens_BT.shape[1] > cache.max_len):
      raise ValueError(f"KV cache overflow: {int(jnp.max(cache.lengths))} tokens cached + "
                       f"{tokens_BT.shape[1]} new > max_len {cache.max_len}")
    mask_BT = _mask(tokens_BT, attention_mask)
    positions_BT = cache.lengths[:, None] + jnp.arange(tokens_BT.shape[1], dtype=jnp.int32)
    hidden_BTE, cache = self._forward(tokens_BT, positions_BT, mask_BT, None, cache=cache,
                                      layer_states=layer_states)
    num_new_B = mask_BT.sum(axis=1)
    cache = cache.advance(num_new_B)
    if last_only:
      hidden_BTE = hidden_BTE[jnp.arange(tokens_BT.shape[0]), jnp.maximum(num_new_B - 1, 0)]
    return self.lm_head(hidden_BTE, out_dtype=jnp.float32), cache

  def layer_states(self) -> tuple[nnx.State, ...]:
    """Each layer's block state (its parameters), sliced from the stacked blocks."""
    stacked_state = nnx.state(self.blocks)
    return tuple(jax.tree.map(lambda a, i=layer: a[i], stacked_state)
                 for layer in range(self.config.num_layers))

  def init_cache(self, batch: int, max_len: int, dtype: jnp.dtype | None = None) -> KVCache:
    """An empty KV cache of `batch` rows of `max_len` slots, held in `dtype` (default:
    `kv_cache.storage_dtype` of the compute dtype: fp32 for bf16 on the CPU)."""
    config = self.config
    return KVCache.empty(num_layers=config.num_layers, batch=batch, max_len=max_len,
                         num_heads=config.num_heads, head_dim=config.head_dim,
                         dtype=dtype or kv_cache_lib.storage_dtype(config.compute_dtype))

  def _forward(self, tokens_BT, positions_BT, segment_ids_BT, dropout_rng, *,
               cache: KVCache | None = None, collect_kv: bool = False,
               layer_states: tuple[nnx.State, ...] | None = None):
    """The final hidden states [B, T, E] and, second:

    - decoding (`cache` given): the cache with every layer's keys/values of the T
      tokens written at each row's next slots (not yet advanced past them);
    - collect_kv (prefill): every layer's keys and values, each [L, B, T, H, D];
    - else None.

    layer_states: the unrolled path's per-layer states (`layer_states()`), default
    sliced here.
    """
    config = self.config
    x_BTE = jnp.take(self.embed[...], tokens_BT, axis=0).astype(config.compute_dtype)
    if dropout_rng is not None:  # per-row keys: a row's masks are its own (phi_jax.dropout)
      embed_rng, dropout_rng = dropout_lib.split(
          dropout_lib.row_keys(dropout_rng, tokens_BT.shape[0]), 2)
      x_BTE = dropout(x_BTE, config.embed_dropout, embed_rng)
    rope = rotary_angles(positions_BT, config.rotary_dim, config.rope_base,
                         config.rope_position_scale)
    graphdef, stacked_state = nnx.split(self.blocks)
    cache_lengths_B = None if cache is None else cache.lengths

    def layer_step(x_BTE, xs):
      layer_state, layer, cached_kv = xs
      block = nnx.merge(graphdef, layer_state)
      layer_rng = None if dropout_rng is None else dropout_lib.fold_in(dropout_rng, layer)
      x_BTE, kv = block(x_BTE, rope, segment_ids_BT, dropout_rng=layer_rng,
                        cached_kv=cached_kv, cache_lengths_B=cache_lengths_B,
                        prefill=collect_kv)
      return x_BTE, (kv if collect_kv or cache is not None else None)

    if config.remat not in ("none", "auto"):  # 'auto' is resolved by training only
      layer_step = jax.checkpoint(layer_step, policy=_REMAT_POLICIES[config.remat],
                                  prevent_cse=not config.scan_layers)
    if config.scan_layers and cache is None:
      layers = jnp.arange(config.num_layers, dtype=jnp.int32)
      x_BTE, kv = jax.lax.scan(layer_step, x_BTE, (stacked_state, layers, None))
      return self.final_norm(x_BTE), kv
    # Decoding always runs the layers unrolled: each reads and then updates its own
    # cache buffer in place, where a scan would copy every layer's slice every step.
    kvs = []
    if layer_states is None:
      layer_states = self.layer_states()
    for layer, layer_state in enumerate(layer_states):
      layer_kv = None if cache is None else cache.layer(layer)
      x_BTE, kv = layer_step(x_BTE, (layer_state, layer, layer_kv))
      if cache is not None:
        cache = cache.write(layer, *kv)
      kvs.append(kv)
    if cache is not None:
      return self.final_norm(x_BTE), cache
    return self.final_norm(x_BTE), (jax.tree.map(lambda *a: jnp.stack(a), *kvs)
                                     if collect_kv else None)


def _mask(tokens_BT: jax.Array, attention_mask: jax.Array | None) -> jax.Array:
  """The int32 [B, T] mask of real tokens (all ones by default)."""
  if attention_mask is None:
    return jnp.ones(tokens_BT.shape, jnp.int32)
  return attention_mask.astype(jnp.int32)


def _positions_from_mask(mask_BT: jax.Array) -> jax.Array:
  """Rotary positions: the number of real tokens before each token (0 for padding)."""
  return jnp.maximum(jnp.cumsum(mask_BT, axis=1) - 1, 0).astype(jnp.int32)


def abstract_model(config: PhiConfig) -> PhiForCausalLM:
  """The model with jax.ShapeDtypeStruct in place of arrays: nothing is allocated.

  Built outside any context mesh (`jax.set_mesh`): under one, nnx.eval_shape would
  read the parameters' logical axis names ('layers', 'embed', ...) as mesh axes.
  Shardings come from `phi_jax.sharding.param_shardings` instead.
  """
  no_mesh = jax.sharding.AbstractMesh((), ())
  with jax.sharding.use_abstract_mesh(no_mesh):
    return nnx.eval_shape(lambda: PhiForCausalLM(config, rngs=nnx.Rngs(0)))


def abstract_params(config: PhiConfig) -> dict:
  """The parameter tree (nested dict of jax.ShapeDtypeStruct) of a config."""
  return nnx.state(abstract_model(config), nnx.Param).to_pure_dict()


def as_phi_config(config: Any) -> PhiConfig:
  """A PhiConfig from what a user holds: a PhiConfig, a run config or its model section.

  config: a PhiConfig; a run config (an ml_collections ConfigDict or mapping with a
    `model` section, e.g. configs/phi1.py's get_config()); or that `model` section
    (a mapping of PhiConfig fields).
  """
  if isinstance(config, PhiConfig):
    return config
  if isinstance(config, Mapping) or hasattr(config, "keys"):
    keys = set(config.keys())
    if "model" in keys and hasattr(config["model"], "keys"):
      return PhiConfig.from_mapping(config["model"], where="config.model")
    return PhiConfig.from_mapping(config, where="model config")
  raise TypeError(f"expected a PhiConfig, a run config or its model section, got "
                  f"{type(config).__name__}")


def count_params(config: Any) -> int:
  """The number of parameters of a model of this config, without allocating them.

  config: a PhiConfig, a run config (configs/*.py's get_config()) or its `model`
    section.
  """
  return sum(math.prod(leaf.shape)
             for leaf in jax.tree.leaves(abstract_params(as_phi_config(config))))
