"""Causal multi-head attention kernels behind one switch (`PhiConfig.attention`).

Every implementation takes the same arguments and masks the same way, so the model
does not know which one runs:

- a query at buffer index i may attend keys at buffer index j <= i (causal), where the
  queries occupy buffer indices `q_offset .. q_offset + T - 1` and the keys `0 .. S - 1`
  (training and prefill: q_offset = 0 and S = T);
- and only keys of its own segment: `q_segment_ids[b, i] == kv_segment_ids[b, j]`.
  Segment id 0 marks padding; packed documents may carry ids
  1, 2, ... to keep them from attending to each other.

Implementations (`PhiConfig.attention`; docs/attention.md):

- 'xla': plain jnp (einsum, fp32 softmax); every backend; materialises [T, S] scores.
- 'pallas': phi_jax's flash-attention kernel (`phi_jax.kernels.flash_attention`):
  Triton on GPU, Mosaic on TPU, interpret mode on CPU (slow; for tests). A traced
  q_offset falls back to 'xla'.
- 'cudnn': `jax.nn.dot_product_attention(implementation='cudnn')`; CUDA GPUs only,
  no attention dropout; a traced q_offset falls back to 'xla'.
- 'auto': resolved when traced, per device kind and situation (attention dropout on,
  off, prefill): the implementation the device check measured fastest there
  (phi_jax/attention_choices.json), else the backend's default: 'xla' on CPU, 'pallas'
  on GPU and TPU (phi_jax.attention_choices).

Decoding (docs/decoding.md): a prompt is prefilled with the implementation above
(self-attention over the prompt, q_offset 0, so the flash kernels apply), then its
keys/values go into the KV cache; decode steps attend over a bucketed prefix of the
cache with `cached_attention` (plain jnp: few query rows, per-row lengths).

Dropout: `dropout_rng` is one key or one key per batch row [B]; row b's mask comes from
its own key alone (phi_jax.dropout), whatever the batch around it or its sharding.
'xla' and 'pallas' draw different (equally distributed) masks from the same keys.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from phi_jax import attention_choices, sharding, target
from phi_jax import dropout as dropout_lib


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
  does). fp32 inputs get fp32 matmuls (Precision.HIGHEST): GPUs would otherwise use
  TF32, about 1e-3 relative error, as the Pallas kernel avoids too. Masked scores get
  the most negative finite fp32 value rather than -inf,
  so a row with nothing to attend (a padding query) yields finite garbage that
  the caller discards, never NaN.
  """
  mask = attention_mask(q_segment_ids, kv_segment_ids, q_offset)
  return _masked_attention(q_BTHD, k_BSHD, v_BSHD, mask, dropout_rate, dropout_rng)


def cached_attention(q_BTHD: jax.Array, k_BTHD: jax.Array, v_BTHD: jax.Array,
                     k_cache_BHSD: jax.Array, v_cache_BHSD: jax.Array, *,
                     lengths_B: jax.Array) -> jax.Array:
  """Decoding attention: T new tokens of every row against its KV cache and each other.

  Row b holds lengths_B[b] tokens in cache slots 0 .. lengths_B[b] - 1 (packed from
  slot 0, `phi_jax.kv_cache`); its new token t attends to all of them and to its new
  tokens t' <= t (given here, not yet in the cache). Rows may have different lengths.
  The cache may be a bucketed prefix (S = kv_len): that is what makes a step's cost
  follow the filled length.

  Nothing is written into the cache here (the caller appends the new keys and values
  after every layer has run). fp32 scores and softmax, probabilities in the value
  dtype, as xla_attention.

  The cache may be held in a wider dtype than q/k/v (`kv_cache.storage_dtype`: fp32
  for bf16 on the CPU) while holding values of their dtype: the small operands are
  widened to it rather than the whole cache narrowed, which gives the same products
  without a pass over the cache.
  """
  scale = q_BTHD.shape[-1] ** -0.5
  f32, min_f32 = jnp.float32, jnp.finfo(jnp.float32).min
  cache_len = k_cache_BHSD.shape[2]
  wide_k = jnp.promote_types(q_BTHD.dtype, k_cache_BHSD.dtype)
  wide_v = jnp.promote_types(v_BTHD.dtype, v_cache_BHSD.dtype)
  scores_BHTS = jnp.einsum("bthd,bhsd->bhts", q_BTHD.astype(wide_k),
                           k_cache_BHSD.astype(wide_k), preferred_element_type=f32) * scale
  cached_BS = jnp.arange(cache_len, dtype=jnp.int32)[None, :] < lengths_B[:, None]
  scores_BHTS = jnp.where(cached_BS[:, None, None, :], scores_BHTS, min_f32)
  scores_BHTU = jnp.einsum("bthd,buhd->bhtu", q_BTHD, k_BTHD,
                           preferred_element_type=f32) * scale
  t = jnp.arange(q_BTHD.shape[1])
  scores_BHTU = jnp.where(t[None, :] <= t[:, None], scores_BHTU, min_f32)
  probs = jax.nn.softmax(jnp.concatenate([scores_BHTS, scores_BHTU], axis=-1), axis=-1)
  probs = probs.astype(v_BTHD.dtype)
  out_BTHD = jnp.einsum("bhts,bhsd->bthd", probs[..., :cache_len].astype(wide_v),
                        v_cache_BHSD.astype(wide_v), preferred_element_type=f32)
  out_BTHD += jnp.einsum("bhtu,buhd->bthd", probs[..., cache_len:], v_BTHD,
                         preferred_element_type=f32)
  return out_BTHD.astype(v_BTHD.dtype)


def _masked_attention(q_BTHD: jax.Array, k_BSHD: jax.Array, v_BSHD: jax.Array,
                      mask_B1TS: jax.Array, dropout_rate: float,
                      dropout_rng: jax.Array | None) -> jax.Array:
  """softmax(q k^T / sqrt(D), masked) v in fp32 scores; xla_attention's numerics."""
  head_dim = q_BTHD.shape[-1]
  precision = jax.lax.Precision.HIGHEST if q_BTHD.dtype == jnp.float32 else None
  scores_BHTS = jnp.einsum("bthd,bshd->bhts", q_BTHD, k_BSHD, precision=precision,
                           preferred_element_type=jnp.float32)
  scores_BHTS = scores_BHTS * (head_dim ** -0.5)
  scores_BHTS = jnp.where(mask_B1TS, scores_BHTS, jnp.finfo(jnp.float32).min)
  probs_BHTS = jax.nn.softmax(scores_BHTS, axis=-1)
  if dropout_rate > 0.0 and dropout_rng is not None:
    keep = dropout_lib.keep_mask(dropout_lib.row_keys(dropout_rng, probs_BHTS.shape[0]),
                                 dropout_rate, probs_BHTS.shape)
    probs_BHTS = jnp.where(keep, probs_BHTS / (1.0 - dropout_rate), 0.0)
  probs_BHTS = probs_BHTS.astype(v_BSHD.dtype)
  return jnp.einsum("bhts,bshd->bthd", probs_BHTS, v_BSHD, precision=precision)


def _is_static_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def pallas_attention(q_BTHD: jax.Array, k_BSHD: jax.Array, v_BSHD: jax.Array, *,
                     q_segment_ids: jax.Array, kv_segment_ids: jax.Array,
                     q_offset: jax.Array | int = 0, dropout_rate: float = 0.0,
                     dropout_rng: jax.Array | None = None, block_q: int = 0,
                     block_kv: int = 0) -> jax.Array:
  """phi_jax's Pallas flash attention with xla_attention's masking; same result.

  block_q / block_kv: query / key tile rows for the forward and both backward
  kernels; 0 takes the tiles tuned for this device kind, head dim and length
  (phi_jax.attention_choices.tiles), else the platform's defaults
  (`kernels.default_block_sizes`; set both or neither). A q_offset that is not a Python int (decoding: the cache
  index) goes to xla_attention. Dropout draws the kernel's own mask (same rate,
  different stream from xla_attention's).
  """
  from phi_jax import kernels  # pylint: disable=g-import-not-at-top  (pallas imports are slow)

  if not _is_static_int(q_offset):
    return xla_attention(q_BTHD, k_BSHD, v_BSHD, q_segment_ids=q_segment_ids,
                         kv_segment_ids=kv_segment_ids, q_offset=q_offset,
                         dropout_rate=dropout_rate, dropout_rng=dropout_rng)
  block_sizes = None
  if not (block_q or block_kv):  # the tiles tuned on this device kind, if any
    tuned = attention_choices.tiles(target.device_kind(), q_BTHD.shape[-1], q_BTHD.shape[1],
                                    dropout_rate > 0 and dropout_rng is not None)
    if tuned and target.backend() != "cpu":
      block_q, block_kv = tuned
  if block_q or block_kv:
    if not (block_q and block_kv):
      raise ValueError(f"pallas attention: set both block_q ({block_q}) and block_kv "
                       f"({block_kv}), or neither (config.model.attention_block_q/_kv)")
    block_sizes = kernels.BlockSizes.uniform(block_q, block_kv)

  def local(q_BTHD, k_BSHD, v_BSHD, q_segment_ids, kv_segment_ids, *seeds_BH):
    return kernels.flash_attention(
        q_BTHD, k_BSHD, v_BSHD, q_segment_ids=q_segment_ids,
        kv_segment_ids=kv_segment_ids, q_offset=q_offset, dropout_rate=dropout_rate,
        dropout_seeds=seeds_BH[0] if seeds_BH else None, block_sizes=block_sizes)

  # The kernel's seeds per (row, head), drawn from the rows' keys on the whole batch:
  # a shard gets its rows' and heads' seeds, so the masks do not depend on the layout.
  seeds = ()
  if dropout_rng is not None and dropout_rate > 0.0:
    seeds = (kernels.dropout_seeds(dropout_rng, q_BTHD.shape[0], q_BTHD.shape[2]),)
  operands = (q_BTHD, k_BSHD, v_BSHD, q_segment_ids, kv_segment_ids) + seeds
  split = _mesh_split(q_BTHD.shape[0], q_BTHD.shape[2])
  if split is None:
    return local(*operands)
  mesh, batch_axes, head_axes = split
  P = jax.sharding.PartitionSpec  # pylint: disable=invalid-name
  qkv_spec = P(batch_axes or None, None, head_axes or None, None)
  seg_spec = P(batch_axes or None, None)
  seed_spec = P(batch_axes or None, head_axes or None)
  return jax.shard_map(local, mesh=mesh,
                       in_specs=(qkv_spec,) * 3 + (seg_spec,) * 2 + (seed_spec,) * len(seeds),
                       out_specs=qkv_spec, check_vma=False)(*operands)


def _mesh_split(batch: int, heads: int):
  """(mesh, batch axes, head axes) to run the kernel per shard with, or None.

  Only with a context mesh (`jax.set_mesh`; the trainer traces its steps under its
  mesh), and only over its Auto-typed axes of size > 1 that divide batch / heads. The
  axes are those the active sharding rules (phi_jax.sharding.use_rules) give the
  logical axes 'batch' and 'heads', as for the parameters.
  Without one, XLA's partitioner sees the kernel as an opaque custom call and gathers
  its operands onto every device (correct, but slow).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return None
  sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
  auto = {name for name, kind in zip(mesh.axis_names, mesh.axis_types)
          if kind == jax.sharding.AxisType.Auto}  # explicit axes: left to jax
  batch_axes = tuple(a for a in sharding.mesh_axes_of("batch")
                     if sizes.get(a, 1) > 1 and a in auto)
  head_axes = tuple(a for a in sharding.mesh_axes_of("heads")
                    if sizes.get(a, 1) > 1 and a in auto and a not in batch_axes)
  if batch % math.prod(sizes[a] for a in batch_axes):
    batch_axes = ()
  if heads % math.prod(sizes[a] for a in head_axes):
    head_axes = ()
  if not batch_axes + head_axes:
    return None
  return mesh, batch_axes, head_axes


def cudnn_attention(q_BTHD: jax.Array, k_BSHD: jax.Array, v_BSHD: jax.Array, *,
                    q_segment_ids: jax.Array, kv_segment_ids: jax.Array,
                    q_offset: jax.Array | int = 0, dropout_rate: float = 0.0,
                    dropout_rng: jax.Array | None = None) -> jax.Array:
  """cuDNN flash attention via `jax.nn.dot_product_attention(implementation='cudnn')`.

  Causal masking is cuDNN's own (blocks above the diagonal are skipped); segment
  ids go in as a boolean [B, 1, T, S] mask (materialised: the public jax API takes
  no segment ids). Needs a CUDA GPU and bf16/fp16 inputs; the public API has no
  dropout, so attention dropout raises. Decoding (traced q_offset) uses xla_attention.
  """
  if not _is_static_int(q_offset):
    return xla_attention(q_BTHD, k_BSHD, v_BSHD, q_segment_ids=q_segment_ids,
                         kv_segment_ids=kv_segment_ids, q_offset=q_offset,
                         dropout_rate=dropout_rate, dropout_rng=dropout_rng)
  if dropout_rate > 0.0 and dropout_rng is not None:
    raise ValueError("attention='cudnn' has no attention dropout (jax.nn."
                     "dot_product_attention takes none): set config.model.attention_dropout "
                     "= 0 or use attention='pallas'")
  if target.backend() != "gpu":
    raise ValueError(f"attention='cudnn' needs a CUDA GPU with cuDNN; the target backend "
                     f"is {target.backend()!r} (use 'auto' or 'xla')")
  q_len, kv_len = q_BTHD.shape[1], k_BSHD.shape[1]
  same_segment = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]  # [B, T, S]
  if q_offset == 0 and q_len == kv_len:
    return jax.nn.dot_product_attention(q_BTHD, k_BSHD, v_BSHD, mask=same_segment[:, None],
                                        is_causal=True, implementation="cudnn")
  mask = attention_mask(q_segment_ids, kv_segment_ids, q_offset)
  return jax.nn.dot_product_attention(q_BTHD, k_BSHD, v_BSHD, mask=mask,
                                      implementation="cudnn")


_IMPLEMENTATIONS = {"xla": xla_attention, "pallas": pallas_attention,
                    "cudnn": cudnn_attention}


def resolve_implementation(implementation: str, backend: str | None = None,
                           situation: str = "train") -> str:
  """The concrete implementation: 'auto' becomes what phi_jax.attention_choices picks
  for the traced-for device kind and `situation` ('train_dropout', 'train', 'prefill'),
  the measured fastest or the backend's default (backend default: the target backend,
  `phi_jax.target.backend()`)."""
  if implementation != "auto":
    return implementation
  backend = backend or target.backend()
  backend = "gpu" if backend in ("cuda", "rocm") else backend
  return attention_choices.choose(backend, target.device_kind(), situation)


def dot_product_attention(q_BTHD: jax.Array, k_BSHD: jax.Array, v_BSHD: jax.Array, *,
                          implementation: str, block_q: int = 0, block_kv: int = 0,
                          prefill: bool = False, **kwargs) -> jax.Array:
  """Dispatches to the implementation named by `PhiConfig.attention` ('auto' resolved
  here, at trace time, for the situation: attention dropout on, off, or a prefill).
  block_q / block_kv only reach 'pallas' (0: its defaults)."""
  dropout = kwargs.get("dropout_rng") is not None and kwargs.get("dropout_rate", 0.0) > 0
  situation = "prefill" if prefill else "train_dropout" if dropout else "train"
  name = resolve_implementation(implementation, situation=situation)
  try:
    fn = _IMPLEMENTATIONS[name]
  except KeyError:
    raise ValueError(f"unknown attention implementation {implementation!r}; "
                     f"available: {sorted(_IMPLEMENTATIONS) + ['auto']}") from None
  if name == "pallas":
    kwargs.update(block_q=block_q, block_kv=block_kv)
  return fn(q_BTHD, k_BSHD, v_BSHD, **kwargs)
