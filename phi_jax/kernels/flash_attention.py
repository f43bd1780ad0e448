"""phi_jax's flash attention in Pallas: forward, backward and the public entry point.

One kernel source for both accelerators: the bodies below work on 2-D tiles
([rows, head_dim]) and only the BlockSpecs differ per backend.

- GPU (Pallas Triton lowering): q/k/v stay in the model's [B, T, H, D] layout
  (no transposes); a program owns one (batch, head, query block).
- TPU (Pallas Mosaic lowering): q/k/v are transposed to [B, H, T, D] first, because
  Mosaic wants the last two block dims to be (rows, head_dim).
- CPU: the GPU variant in Pallas interpret mode (slow; for tests).

Forward: each program holds one query block and walks the key/value blocks with an
online softmax (running max `m`, normaliser `l`, fp32 accumulator), so no T x S
matrix is ever materialised. Key blocks entirely above the causal diagonal are never
visited; blocks entirely below it skip the causal mask. Only the logsumexp per query
row is saved for the backward pass.

Backward (`jax.custom_vjp`): delta = rowsum(dO * O) in XLA, then two kernels that
recompute the probability tiles from q, k and the saved logsumexp: one program per
key block accumulates dK and dV over the query blocks that can see it, one program
per query block accumulates dQ over the key blocks it can see.

Masking follows `phi_jax.attention` exactly: query i (buffer index q_offset + i) sees
key j iff j <= q_offset + i (when causal) and the segment ids are equal. Lengths that
are not a multiple of the block size are padded inside and the padded keys masked
by index, so they are never attended. A query row with nothing to attend gets
output 0 and logsumexp = the mask value (finite; its gradient is 0), never NaN.

Dropout: the kernel draws its own keep-mask from a counter-based hash of
(seed, query index, key index), with one seed per (batch row, head) drawn from the
row's dropout key (`dropout_seeds`, phi_jax.dropout), so the backward pass regenerates
the forward's mask without storing it, and a row's mask does not depend on the rest of
the batch or on how batch and heads are sharded. This is NOT the `jax.random` stream
that `xla_attention` uses: the same key gives a different (equally distributed) mask.
`dropout_keep_mask` computes the kernel's mask in plain jnp, for tests.

Decoding (q_offset traced, i.e. a KV cache index) is not handled here:
`phi_jax.attention` routes it to the XLA path (see docs/attention.md).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from phi_jax import dropout as dropout_lib
from phi_jax import target

# Masked scores get this instead of -inf so that exp(m_old - m_new) is never
# exp(-inf + inf) = NaN; probabilities of masked entries are also zeroed explicitly.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)
SUPPORTED_HEAD_DIMS = (64, 128)
PLATFORMS = ("gpu", "tpu", "cpu")
# Smallest tile per backend: Triton's tl.dot needs 16 rows/cols; on TPU the key block
# is the lane dimension of the score tile (128 lanes).
_MIN_BLOCK = {"gpu": 16, "tpu": 128, "cpu": 16}
_MIN_Q_BLOCK = {"gpu": 16, "tpu": 8, "cpu": 16}


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tile sizes of the three kernels (rows of q / of k and v per tile).

  Each is clamped to the (power-of-two-rounded) sequence length, so short
  sequences use small tiles. All must be powers of two.

  Attributes:
    block_q, block_kv: forward: query rows per program, key rows per loop step.
    block_q_dkv, block_kv_dkv: dK/dV kernel: query rows per loop step, key rows per
      program.
    block_q_dq, block_kv_dq: dQ kernel: query rows per program, key rows per step.
    warps_fwd, warps_dkv, warps_dq: Triton warps per program of each kernel (GPU only);
      None: those of `default_block_sizes('gpu', head_dim)`.
    num_stages: Triton software-pipelining stages of the inner loops (GPU only).
  """

  block_q: int = 128
  block_kv: int = 64
  block_q_dkv: int = 32
  block_kv_dkv: int = 128
  block_q_dq: int = 128
  block_kv_dq: int = 32
  warps_fwd: int | None = None
  warps_dkv: int | None = None
  warps_dq: int | None = None
  num_stages: int = 2

  def __post_init__(self):
    for field in ("block_q", "block_kv", "block_q_dkv", "block_kv_dkv", "block_q_dq",
                  "block_kv_dq"):
      value = getattr(self, field)
      if not isinstance(value, int) or value < 8 or value & (value - 1):
        raise ValueError(f"BlockSizes.{field} = {value!r}: must be a power of two >= 8")
    for field in ("warps_fwd", "warps_dkv", "warps_dq"):
      value = getattr(self, field)
      if value is not None and value not in (1, 2, 4, 8, 16):
        raise ValueError(f"BlockSizes.{field} = {value!r}: must be 1, 2, 4, 8 or 16 (or None)")
    if not isinstance(self.num_stages, int) or self.num_stages < 1:
      raise ValueError(f"BlockSizes.num_stages = {self.num_stages!r}: must be an int >= 1")

  def warps(self, kernel: str, head_dim: int) -> int:
    """Triton warps of kernel 'fwd', 'dkv' or 'dq' at this head_dim."""
    chosen = getattr(self, f"warps_{kernel}")
    if chosen is None:
      chosen = getattr(default_block_sizes("gpu", head_dim), f"warps_{kernel}")
    return chosen

  @classmethod
  def uniform(cls, block_q: int, block_kv: int, **kwargs) -> BlockSizes:
    """The same query/key tile sizes for forward and both backward kernels."""
    return cls(block_q=block_q, block_kv=block_kv, block_q_dkv=block_q,
               block_kv_dkv=block_kv, block_q_dq=block_q, block_kv_dq=block_kv, **kwargs)


# Defaults by (platform, head_dim); `default_block_sizes` picks the entry of the smallest
# listed head_dim >= the model's. GPU: the tiles of the Triton fused-attention tutorial
# for head_dim 64 (forward 128 x 64; dK/dV 32 x 128; dQ 128 x 32; head_dim 128 halves
# the dK/dV key tile), and per kernel the fewest warps at which no kernel variant
# (causal, + dropout, + segment ids) spills registers when compiled ahead of time for
# sm_90 (bench/triton_resources.py --sweep; the numbers are in BENCHMARKS.md). That is
# register pressure, not speed: no GPU has timed them yet (bench/attention.py).
# TPU: 256-wide tiles (the MXU is 128/256 wide).
DEFAULT_BLOCK_SIZES = {
    ("gpu", 64): BlockSizes(warps_fwd=8, warps_dkv=8, warps_dq=4),
    ("gpu", 128): BlockSizes(block_kv_dkv=64, warps_fwd=8, warps_dkv=8, warps_dq=8),
    ("tpu", 128): BlockSizes.uniform(256, 256),
}


def default_block_sizes(platform: str, head_dim: int) -> BlockSizes:
  """The default tiles and warps for a platform ('gpu', 'tpu'; 'cpu' = 'gpu') and head_dim."""
  platform = "gpu" if platform == "cpu" else platform
  dims = sorted(d for p, d in DEFAULT_BLOCK_SIZES if p == platform)
  if not dims:
    raise ValueError(f"default_block_sizes: no defaults for platform {platform!r}")
  return DEFAULT_BLOCK_SIZES[platform, next((d for d in dims if d >= head_dim), dims[-1])]


@dataclasses.dataclass(frozen=True)
class _Static:
  """Everything the kernels specialise on (hashable: a custom_vjp nondiff arg)."""

  platform: str  # 'gpu' | 'tpu' | 'cpu' (cpu = gpu kernels in interpret mode)
  interpret: bool
  causal: bool
  q_offset: int
  sm_scale: float
  dropout_rate: float
  has_segments: bool
  q_len: int  # real (unpadded) lengths
  kv_len: int
  blocks: BlockSizes  # already clamped; q/kv lengths padded to multiples of them
  q_len_padded: int
  kv_len_padded: int

  @property
  def layout(self) -> str:
    return "BHTD" if self.platform == "tpu" else "BTHD"


def _round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple


def _clamp_blocks(blocks: BlockSizes, q_len: int, kv_len: int, platform: str) -> BlockSizes:
  """Block sizes no larger than the power-of-two-rounded lengths (>= the backend min)."""
  q_cap = max(pl.next_power_of_2(q_len), _MIN_Q_BLOCK[platform])
  kv_cap = max(pl.next_power_of_2(kv_len), _MIN_BLOCK[platform])
  clamp_q = lambda b: max(min(b, q_cap), _MIN_Q_BLOCK[platform])
  clamp_kv = lambda b: max(min(b, kv_cap), _MIN_BLOCK[platform])
  return dataclasses.replace(
      blocks, block_q=clamp_q(blocks.block_q), block_kv=clamp_kv(blocks.block_kv),
      block_q_dkv=clamp_q(blocks.block_q_dkv), block_kv_dkv=clamp_kv(blocks.block_kv_dkv),
      block_q_dq=clamp_q(blocks.block_q_dq), block_kv_dq=clamp_kv(blocks.block_kv_dq))


# ----------------------------------------------------------------------------------
# Dropout: a counter-based hash, identical in the kernels and in plain jnp.

_GOLDEN = 0x9E3779B1 - (1 << 32)  # as int32
_MIX_1 = 0x7FEB352D
_MIX_2 = 0x846CA68B - (1 << 32)


def _srl(x: jax.Array, bits: int) -> jax.Array:
  return jax.lax.shift_right_logical(x, jnp.int32(bits))


def _mix32(x: jax.Array) -> jax.Array:
  """The 'lowbias32' integer hash on int32 (wrapping arithmetic)."""
  x = x ^ _srl(x, 16)
  x = x * jnp.int32(_MIX_1)
  x = x ^ _srl(x, 15)
  x = x * jnp.int32(_MIX_2)
  return x ^ _srl(x, 16)


def _keep(seed: jax.Array, rows: jax.Array, cols: jax.Array, rate: float) -> jax.Array:
  """Boolean keep-mask of one (batch row, head)'s seed, broadcast of rows [R, 1] x
  cols [1, C] (buffer indices)."""
  row_key = _mix32(_mix32(seed) ^ rows)
  bits = _srl(_mix32(row_key + cols * jnp.int32(_GOLDEN)), 8)  # uniform in [0, 2^24)
  return bits >= jnp.int32(round(rate * (1 << 24)))


def _tile_keep(seed: jax.Array, q_start, kv_start, bq: int, bk: int,
               rate: float) -> jax.Array:
  """The keep-mask [bq, bk] of the tile at (q_start, kv_start): the same bits in the
  forward and both backward kernels, whatever their block sizes."""
  rows = q_start + jax.lax.broadcasted_iota(jnp.int32, (bq, 1), 0)
  cols = kv_start + jax.lax.broadcasted_iota(jnp.int32, (1, bk), 1)
  return _keep(seed, rows, cols, rate)


def dropout_seeds(dropout_rng: jax.Array, batch: int, heads: int) -> jax.Array:
  """The kernel's int32 dropout seeds [batch, heads]: row b's from its dropout key alone
  (`dropout_rng`: one key, or one per row [batch]; phi_jax.dropout.row_keys)."""
  return _draw_seeds(dropout_rng, batch, heads)


def _draw_seeds(dropout_rng: jax.Array, batch: int, heads: int) -> jax.Array:
  keys_B = dropout_lib.row_keys(dropout_rng, batch)
  return dropout_lib.bits(keys_B, (heads,)).astype(jnp.int32)


def dropout_keep_mask(seeds_BH: jax.Array, q_len: int, kv_len: int,
                      rate: float) -> jax.Array:
  """The kernel's keep-mask [batch, heads, q_len, kv_len] in plain jnp (for tests).

  seeds_BH: from `dropout_seeds`. Entry (b, h, i, j) is what the kernel uses for query
  i and key j of batch row b and head h.
  """
  rows = jnp.arange(q_len, dtype=jnp.int32)[:, None]
  cols = jnp.arange(kv_len, dtype=jnp.int32)[None, :]
  keep = jax.vmap(jax.vmap(lambda seed: _keep(seed, rows, cols, rate)))
  return keep(jnp.asarray(seeds_BH, jnp.int32))


# ----------------------------------------------------------------------------------
# Kernel bodies (shared by all backends). Tiles: q [bq, D], k/v [bk, D],
# q segment ids [bq, 1], kv segment ids [1, bk], per-row stats [bq, 1].

def _matmul(a, b, dtype, contract):
  """fp32-accumulated matmul of a and b cast to `dtype` (the input dtype); fp32
  inputs ask for full fp32 precision (no TF32 on GPU)."""
  precision = jax.lax.Precision.HIGHEST if dtype == jnp.float32 else None
  return jax.lax.dot_general(a.astype(dtype), b.astype(dtype), (contract, ((), ())),
                             precision=precision, preferred_element_type=jnp.float32)


def _dot(a, b, dtype):
  """a @ b: [m, k] x [k, n]."""
  return _matmul(a, b, dtype, ((1,), (0,)))


def _dot_nt(a, b, dtype):
  """a @ b^T: [m, k] x [n, k]."""
  return _matmul(a, b, dtype, ((1,), (1,)))


def _dot_tn(a, b, dtype):
  """a^T @ b: [k, m] x [k, n]."""
  return _matmul(a, b, dtype, ((0,), (0,)))


def _scores(q, k, sm_scale):
  return _dot_nt(q, k, q.dtype) * sm_scale


def _tile_mask(st: _Static, q_start, kv_start, bq: int, bk: int, q_seg, kv_seg, *,
               causal: bool, check_kv_len: bool):
  """Boolean [bq, bk] of allowed pairs in a tile, or None when everything is allowed."""
  mask = None

  def conj(a, b):
    return b if a is None else a & b

  if causal or check_kv_len:
    kv_index = kv_start + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 1)
    if causal:
      q_index = st.q_offset + q_start + jax.lax.broadcasted_iota(jnp.int32, (bq, bk), 0)
      mask = conj(mask, kv_index <= q_index)
    if check_kv_len:
      mask = conj(mask, kv_index < st.kv_len)
  if q_seg is not None:
    mask = conj(mask, q_seg == kv_seg)
  return mask


def _div(x, divisor: int):
  """x // divisor for x >= 0 (truncating division; no sign handling, which Mosaic
  would lower with chip-specific rules)."""
  if isinstance(x, int):
    return x // divisor
  return jax.lax.div(x, jnp.int32(divisor))


def _kv_block_ranges(st: _Static, q_start, bq: int, bk: int):
  """(n_unmasked, n_total) key blocks a query block visits.

  Blocks [0, n_unmasked) need no causal or length mask; [n_unmasked, n_total) do.
  Blocks past n_total are entirely masked (causal) or padding, and are skipped.
  """
  n_real = pl.cdiv(st.kv_len, bk)
  n_full = st.kv_len // bk  # blocks with no padded keys
  if not st.causal:
    return n_full, n_real
  first_q = st.q_offset + q_start  # buffer index of the block's first query (>= 0)
  n_total = jnp.minimum(_div(first_q + bq - 1, bk) + 1, n_real)
  # Key block j is fully visible to every query in the block iff (j+1)*bk - 1 <= first_q.
  n_unmasked = jnp.minimum(_div(first_q + 1, bk), n_full)
  return jnp.minimum(n_unmasked, n_total), n_total


def _q_block_ranges(st: _Static, kv_start, bq: int, bk: int):
  """(first, n_unmasked_from, n_total) query blocks that see a key block (dK/dV).

  Query blocks [first, n_total) see it; within them, blocks >= n_unmasked_from have
  every query at or past the block's last key (no causal mask needed).
  """
  n_real = pl.cdiv(st.q_len, bq)
  if not st.causal:
    return 0, 0, n_real
  # Query i sees key kv_start iff q_offset + i >= kv_start.
  first = jnp.minimum(_div(jnp.maximum(kv_start - st.q_offset, 0), bq), n_real)
  # Block n is unmasked iff its first query q_offset + n*bq >= kv_start + bk - 1.
  unmasked_from = _div(jnp.maximum(kv_start + bk - 1 - st.q_offset, 0) + bq - 1, bq)
  unmasked_from = jnp.clip(unmasked_from, first, n_real)
  return first, unmasked_from, n_real


def _split_refs(refs, st: _Static):
  """(dropout seed ref, q segment ids ref, kv segment ids ref, the rest): the optional
  leading operands (`_extra_inputs`) are None when absent."""
  refs = list(refs)
  seed_ref = refs.pop(0) if st.dropout_rate > 0 else None
  q_seg_ref, kv_seg_ref = (refs.pop(0), refs.pop(0)) if st.has_segments else (None, None)
  return seed_ref, q_seg_ref, kv_seg_ref, refs


def _forward_kernel(*refs, st: _Static):
  seed_ref, q_seg_ref, kv_seg_ref, refs = _split_refs(refs, st)
  q_ref, k_ref, v_ref, o_ref, lse_ref = refs
  bq, bk = st.blocks.block_q, st.blocks.block_kv
  q_block = pl.program_id(2)
  q_start = q_block * bq
  q = q_ref[...]
  head_dim = q.shape[-1]
  q_seg = None if q_seg_ref is None else q_seg_ref[...]
  seed = None if seed_ref is None else seed_ref[...]

  def body(kv_block, carry, *, masked):
    acc, m, l = carry
    kv_start = pl.multiple_of(kv_block * bk, bk)
    k = k_ref[pl.ds(kv_start, bk), :]
    v = v_ref[pl.ds(kv_start, bk), :]
    kv_seg = None if kv_seg_ref is None else kv_seg_ref[:, pl.ds(kv_start, bk)]
    s = _scores(q, k, st.sm_scale)
    mask = _tile_mask(st, q_start, kv_start, bq, bk, q_seg, kv_seg,
                      causal=masked and st.causal,
                      check_kv_len=masked and st.kv_len % bk != 0)
    if mask is not None:
      s = jnp.where(mask, s, MASK_VALUE)
    m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
    p = jnp.exp(s - m_new)
    if mask is not None:
      p = jnp.where(mask, p, 0.0)
    correction = jnp.exp(m - m_new)
    l = correction * l + jnp.sum(p, axis=1, keepdims=True)
    if seed is not None:
      keep = _tile_keep(seed, q_start, kv_start, bq, bk, st.dropout_rate)
      p = jnp.where(keep, p * (1.0 / (1.0 - st.dropout_rate)), 0.0)
    acc = correction * acc + _dot(p, v, v.dtype)
    return acc, m_new, l

  def step(masked):
    return functools.partial(body, masked=masked)

  carry = (jnp.zeros((bq, head_dim), jnp.float32),
           jnp.full((bq, 1), MASK_VALUE, jnp.float32),
           jnp.zeros((bq, 1), jnp.float32))
  n_unmasked, n_total = _kv_block_ranges(st, q_start, bq, bk)
  carry = jax.lax.fori_loop(0, n_unmasked, step(False), carry)
  acc, m, l = jax.lax.fori_loop(n_unmasked, n_total, step(True), carry)
  empty = l == 0.0  # nothing to attend: output 0, lse finite
  l_safe = jnp.where(empty, 1.0, l)
  o_ref[...] = (acc / l_safe).astype(o_ref.dtype)
  lse_ref[...] = jnp.where(empty, MASK_VALUE, m + jnp.log(l_safe))


def _probabilities(st, q, k, lse, q_start, kv_start, bq, bk, q_seg, kv_seg, *, masked):
  """Recomputed softmax tile p [bq, bk] (0 where masked) from the saved logsumexp."""
  s = _scores(q, k, st.sm_scale)
  mask = _tile_mask(st, q_start, kv_start, bq, bk, q_seg, kv_seg,
                    causal=masked and st.causal,
                    check_kv_len=masked and st.kv_len % bk != 0)
  p = jnp.exp(s - lse)
  return p if mask is None else jnp.where(mask, p, 0.0)


def _tile_backward(st, seed, q, k, v, do, lse, delta, q_start, kv_start,
                   bq: int, bk: int, q_seg, kv_seg, *, masked: bool):
  """(dropped probabilities, dS) of one [bq, bk] tile, shared by the dK/dV and dQ kernels.

  P is recomputed from the logsumexp; with dropout, the forward's keep-mask scales both
  P (for dV = P_dropped^T dO) and dP = dO V^T. dS = P * (dP - delta).
  """
  p = _probabilities(st, q, k, lse, q_start, kv_start, bq, bk, q_seg, kv_seg, masked=masked)
  dp = _dot_nt(do, v, q.dtype)
  p_dropped = p
  if seed is not None:
    keep = _tile_keep(seed, q_start, kv_start, bq, bk, st.dropout_rate)
    scale = 1.0 / (1.0 - st.dropout_rate)
    p_dropped = jnp.where(keep, p * scale, 0.0)
    dp = jnp.where(keep, dp * scale, 0.0)
  return p_dropped, p * (dp - delta)


def _dkv_kernel(*refs, st: _Static):
  seed_ref, q_seg_ref, kv_seg_ref, refs = _split_refs(refs, st)
  q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref = refs
  bq, bk = st.blocks.block_q_dkv, st.blocks.block_kv_dkv
  kv_block = pl.program_id(2)
  kv_start = kv_block * bk
  k, v = k_ref[...], v_ref[...]
  dtype = k.dtype
  kv_seg = None if kv_seg_ref is None else kv_seg_ref[...]
  seed = None if seed_ref is None else seed_ref[...]

  def step(masked):
    def run(q_block, carry):
      dk, dv = carry
      q_start = pl.multiple_of(q_block * bq, bq)
      rows = pl.ds(q_start, bq)
      q, do = q_ref[rows, :], do_ref[rows, :]
      lse, delta = lse_ref[rows, :], delta_ref[rows, :]
      q_seg = None if q_seg_ref is None else q_seg_ref[rows, :]
      p_dropped, ds = _tile_backward(st, seed, q, k, v, do, lse, delta, q_start, kv_start, bq, bk, q_seg, kv_seg,
                                     masked=masked)
      dv = dv + _dot_tn(p_dropped, do, dtype)
      dk = dk + _dot_tn(ds, q, dtype)
      return dk, dv
    return run

  head_dim = k.shape[-1]
  carry = (jnp.zeros((bk, head_dim), jnp.float32), jnp.zeros((bk, head_dim), jnp.float32))
  first, unmasked_from, n_total = _q_block_ranges(st, kv_start, bq, bk)
  needs_len_mask = st.kv_len % bk != 0
  if needs_len_mask:  # the key block may hold padding: mask every tile
    carry = jax.lax.fori_loop(first, n_total, step(True), carry)
  else:
    carry = jax.lax.fori_loop(first, unmasked_from, step(True), carry)
    carry = jax.lax.fori_loop(unmasked_from, n_total, step(False), carry)
  dk, dv = carry
  dk_ref[...] = (dk * st.sm_scale).astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(*refs, st: _Static):
  seed_ref, q_seg_ref, kv_seg_ref, refs = _split_refs(refs, st)
  q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref = refs
  bq, bk = st.blocks.block_q_dq, st.blocks.block_kv_dq
  q_block = pl.program_id(2)
  q_start = q_block * bq
  q, do, lse, delta = q_ref[...], do_ref[...], lse_ref[...], delta_ref[...]
  dtype = q.dtype
  q_seg = None if q_seg_ref is None else q_seg_ref[...]
  seed = None if seed_ref is None else seed_ref[...]

  def step(masked):
    def run(kv_block, dq):
      kv_start = pl.multiple_of(kv_block * bk, bk)
      cols = pl.ds(kv_start, bk)
      k, v = k_ref[cols, :], v_ref[cols, :]
      kv_seg = None if kv_seg_ref is None else kv_seg_ref[:, cols]
      _, ds = _tile_backward(st, seed, q, k, v, do, lse, delta, q_start, kv_start, bq, bk, q_seg, kv_seg, masked=masked)
      return dq + _dot(ds, k, dtype)
    return run

  dq = jnp.zeros((bq, q.shape[-1]), jnp.float32)
  n_unmasked, n_total = _kv_block_ranges(st, q_start, bq, bk)
  dq = jax.lax.fori_loop(0, n_unmasked, step(False), dq)
  dq = jax.lax.fori_loop(n_unmasked, n_total, step(True), dq)
  dq_ref[...] = (dq * st.sm_scale).astype(dq_ref.dtype)


# ----------------------------------------------------------------------------------
# pallas_call wrappers. Arrays arrive padded and in the backend's layout:
# q/k/v/o [B, T, H, D] ('BTHD') or [B, H, T, D] ('BHTD'); lse/delta [B, H, T, 1];
# q segment ids [B, T, 1]; kv segment ids [B, 1, S]; dropout seeds [B, H, 1, 1].

def _specs(st: _Static, head_dim: int):
  """BlockSpec factories for the current layout."""
  bhtd = st.layout == "BHTD"

  def tiles(block: int) -> pl.BlockSpec:  # q/k/v/o tiles along grid axis 2
    if bhtd:
      return pl.BlockSpec((None, None, block, head_dim), lambda b, h, i: (b, h, i, 0))
    return pl.BlockSpec((None, block, None, head_dim), lambda b, h, i: (b, i, h, 0))

  def whole(length: int) -> pl.BlockSpec:  # every row of one (batch, head)
    if bhtd:
      return pl.BlockSpec((None, None, length, head_dim), lambda b, h, i: (b, h, 0, 0))
    return pl.BlockSpec((None, length, None, head_dim), lambda b, h, i: (b, 0, h, 0))

  def stat_tiles(block: int) -> pl.BlockSpec:
    return pl.BlockSpec((None, None, block, 1), lambda b, h, i: (b, h, i, 0))

  def stat_whole(length: int) -> pl.BlockSpec:
    return pl.BlockSpec((None, None, length, 1), lambda b, h, i: (b, h, 0, 0))

  def q_seg(block: int | None) -> pl.BlockSpec:
    if block is None:
      return pl.BlockSpec((None, st.q_len_padded, 1), lambda b, h, i: (b, 0, 0))
    return pl.BlockSpec((None, block, 1), lambda b, h, i: (b, i, 0))

  def kv_seg(block: int | None) -> pl.BlockSpec:
    if block is None:
      return pl.BlockSpec((None, 1, st.kv_len_padded), lambda b, h, i: (b, 0, 0))
    return pl.BlockSpec((None, 1, block), lambda b, h, i: (b, 0, i))

  seed = pl.BlockSpec((None, None, 1, 1), lambda b, h, i: (b, h, 0, 0))
  return tiles, whole, stat_tiles, stat_whole, q_seg, kv_seg, seed


def _compiler_params(st: _Static, kernel: str, head_dim: int):
  """Backend compiler parameters of kernel 'fwd', 'dkv' or 'dq' (None in interpret mode)."""
  if st.interpret:
    return None
  if st.platform == "gpu":
    from jax.experimental.pallas import triton as plgpu  # pylint: disable=g-import-not-at-top
    return plgpu.CompilerParams(num_warps=st.blocks.warps(kernel, head_dim),
                                num_stages=st.blocks.num_stages)
  from jax.experimental.pallas import tpu as pltpu  # pylint: disable=g-import-not-at-top
  return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel"))


def _dims(st: _Static, x: jax.Array) -> tuple[int, int, int]:
  """(batch, heads, head_dim) of a q/k/v-shaped array in the kernel layout."""
  if st.layout == "BHTD":
    return x.shape[0], x.shape[1], x.shape[3]
  return x.shape[0], x.shape[2], x.shape[3]


def _extra_inputs(st, q_seg, kv_seg, seed, q_seg_spec, kv_seg_spec, seed_spec):
  inputs, specs = [], []
  if st.dropout_rate > 0:
    inputs.append(seed)
    specs.append(seed_spec)
  if st.has_segments:
    inputs += [q_seg, kv_seg]
    specs += [q_seg_spec, kv_seg_spec]
  return inputs, specs


def _forward(st: _Static, q, k, v, q_seg, kv_seg, seed):
  """(o, lse) on padded, laid-out arrays."""
  batch, heads, head_dim = _dims(st, q)
  bq = st.blocks.block_q
  tiles, whole, stat_tiles, _, q_seg_spec, kv_seg_spec, seed_spec = _specs(st, head_dim)
  inputs, in_specs = _extra_inputs(st, q_seg, kv_seg, seed, q_seg_spec(bq),
                                   kv_seg_spec(None), seed_spec)
  lse_shape = jax.ShapeDtypeStruct((batch, heads, st.q_len_padded, 1), jnp.float32)
  return pl.pallas_call(
      functools.partial(_forward_kernel, st=st),
      grid=(batch, heads, st.q_len_padded // bq),
      in_specs=in_specs + [tiles(bq), whole(st.kv_len_padded), whole(st.kv_len_padded)],
      out_specs=[tiles(bq), stat_tiles(bq)],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype), lse_shape],
      compiler_params=_compiler_params(st, "fwd", head_dim),
      interpret=st.interpret,
      name="phi_flash_attention_fwd",
  )(*inputs, q, k, v)


def _backward(st: _Static, q, k, v, q_seg, kv_seg, seed, o, lse, do):
  """(dq, dk, dv) on padded, laid-out arrays."""
  batch, heads, head_dim = _dims(st, q)
  # delta_i = rowsum(dO_i * O_i) = sum_j p_ij dp_ij (also with dropout: O is the
  # dropped output). One fused XLA pass; [B, H, T, 1] like lse.
  delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1)
  delta = (delta if st.layout == "BHTD" else jnp.swapaxes(delta, 1, 2))[..., None]
  tiles, whole, stat_tiles, stat_whole, q_seg_spec, kv_seg_spec, seed_spec = _specs(
      st, head_dim)
  tq, sk = st.q_len_padded, st.kv_len_padded

  bq, bk = st.blocks.block_q_dkv, st.blocks.block_kv_dkv
  inputs, in_specs = _extra_inputs(st, q_seg, kv_seg, seed, q_seg_spec(None),
                                   kv_seg_spec(bk), seed_spec)
  dk, dv = pl.pallas_call(
      functools.partial(_dkv_kernel, st=st),
      grid=(batch, heads, sk // bk),
      in_specs=in_specs + [whole(tq), tiles(bk), tiles(bk), whole(tq), stat_whole(tq),
                           stat_whole(tq)],
      out_specs=[tiles(bk), tiles(bk)],
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype),
                 jax.ShapeDtypeStruct(v.shape, v.dtype)],
      compiler_params=_compiler_params(st, "dkv", head_dim),
      interpret=st.interpret,
      name="phi_flash_attention_dkv",
  )(*inputs, q, k, v, do, lse, delta)

  bq, bk = st.blocks.block_q_dq, st.blocks.block_kv_dq
  inputs, in_specs = _extra_inputs(st, q_seg, kv_seg, seed, q_seg_spec(bq),
                                   kv_seg_spec(None), seed_spec)
  dq = pl.pallas_call(
      functools.partial(_dq_kernel, st=st),
      grid=(batch, heads, tq // bq),
      in_specs=in_specs + [tiles(bq), whole(sk), whole(sk), tiles(bq), stat_tiles(bq),
                           stat_tiles(bq)],
      out_specs=tiles(bq),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      compiler_params=_compiler_params(st, "dq", head_dim),
      interpret=st.interpret,
      name="phi_flash_attention_dq",
  )(*inputs, q, k, v, do, lse, delta)
  return dq, dk, dv


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(st: _Static, q, k, v, q_seg, kv_seg, seed):
  return _forward(st, q, k, v, q_seg, kv_seg, seed)[0]


def _flash_fwd(st: _Static, q, k, v, q_seg, kv_seg, seed):
  o, lse = _forward(st, q, k, v, q_seg, kv_seg, seed)
  return o, (q, k, v, q_seg, kv_seg, seed, o, lse)


def _flash_bwd(st: _Static, residuals, do):
  q, k, v, q_seg, kv_seg, seed, o, lse = residuals
  dq, dk, dv = _backward(st, q, k, v, q_seg, kv_seg, seed, o, lse, do)
  return dq, dk, dv, None, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


# ----------------------------------------------------------------------------------
# Public entry point.

def default_platform() -> str:
  """'gpu', 'tpu' or 'cpu': the target backend (`phi_jax.target.backend()`: jax's
  default backend unless a program is being compiled for another); any other backend
  counts as 'cpu' (interpret mode)."""
  backend = target.backend()
  return backend if backend in ("gpu", "tpu") else "cpu"


def _pad_axis(x: jax.Array, axis: int, length: int, value=0) -> jax.Array:
  if x.shape[axis] == length:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, length - x.shape[axis])
  return jnp.pad(x, widths, constant_values=value)


def flash_attention(q_BTHD: jax.Array, k_BSHD: jax.Array, v_BSHD: jax.Array, *,
                    q_segment_ids: jax.Array | None = None,
                    kv_segment_ids: jax.Array | None = None, q_offset: int = 0,
                    causal: bool = True, dropout_rate: float = 0.0,
                    dropout_rng: jax.Array | None = None,
                    dropout_seeds: jax.Array | None = None,
                    block_sizes: BlockSizes | None = None, platform: str | None = None,
                    interpret: bool | None = None) -> jax.Array:
  """Flash attention; returns [batch, q_len, heads, head_dim] in q's dtype.

  Args:
    q_BTHD, k_BSHD, v_BSHD: queries [B, T, H, D], keys and values [B, S, H, D]
      (bf16, fp16 or fp32; matmuls accumulate in fp32, the softmax runs in fp32).
    q_segment_ids, kv_segment_ids: int [B, T] and [B, S], both or neither; a query
      attends only keys of its own segment (0 = padding, see phi_jax.attention).
    q_offset: buffer index of the first query (a Python int: static).
    causal: query q_offset + i sees keys j <= q_offset + i; False: every key.
    dropout_rate, dropout_rng: dropout on the attention probabilities when both are
      set; the kernel's own mask stream (see `dropout_keep_mask`). dropout_rng: one
      key, or one key per batch row [B] (row b's mask from its key alone).
    dropout_seeds: instead of dropout_rng, the seeds [B, H] `dropout_seeds` drew (a
      caller running the kernel per shard draws them on the whole batch).
    block_sizes: tile sizes (default: `default_block_sizes(platform, head_dim)`).
    platform: 'gpu' (Triton), 'tpu' (Mosaic) or 'cpu'; default: the target backend
      (`phi_jax.target`). Naming one explicitly lets you lower for it elsewhere.
    interpret: run in Pallas interpret mode (default: only on 'cpu').
  """
  platform = platform or default_platform()
  if platform not in PLATFORMS:
    raise ValueError(f"flash_attention: platform {platform!r} is not one of {PLATFORMS}")
  interpret = platform == "cpu" if interpret is None else bool(interpret)
  if platform == "cpu" and not interpret:
    raise ValueError("flash_attention: Pallas has no CPU lowering; use interpret=True on CPU")
  batch, q_len, heads, head_dim = q_BTHD.shape
  kv_len = k_BSHD.shape[1]
  if k_BSHD.shape != (batch, kv_len, heads, head_dim) or v_BSHD.shape != k_BSHD.shape:
    raise ValueError(f"flash_attention: q {q_BTHD.shape}, k {k_BSHD.shape}, v "
                     f"{v_BSHD.shape}: want q [B, T, H, D] and k, v [B, S, H, D]")
  if platform == "gpu" and (head_dim < 16 or head_dim & (head_dim - 1)):
    raise ValueError(f"flash_attention: head_dim {head_dim} (q {q_BTHD.shape}): the Triton "
                     "kernel needs a power of two >= 16 (phi uses 64)")
  if (q_segment_ids is None) != (kv_segment_ids is None):
    raise ValueError("flash_attention: pass both q_segment_ids and kv_segment_ids, or neither")
  if q_segment_ids is not None and (q_segment_ids.shape != (batch, q_len) or
                                    kv_segment_ids.shape != (batch, kv_len)):
    raise ValueError(f"flash_attention: segment ids {q_segment_ids.shape} / "
                     f"{kv_segment_ids.shape} do not match q [B, T] = {(batch, q_len)} / "
                     f"k [B, S] = {(batch, kv_len)}")
  if isinstance(q_offset, jax.core.Tracer) or not isinstance(q_offset, int) or q_offset < 0:
    raise ValueError(f"flash_attention: q_offset must be a static int >= 0, got {q_offset!r} "
                     "(decoding with a traced cache index goes through the XLA path)")
  if not 0.0 <= dropout_rate < 1.0:
    raise ValueError(f"flash_attention: dropout_rate {dropout_rate} not in [0, 1)")
  if dropout_rng is not None and dropout_seeds is not None:
    raise ValueError("flash_attention: pass dropout_rng or dropout_seeds, not both")
  if dropout_seeds is not None and dropout_seeds.shape != (batch, heads):
    raise ValueError(f"flash_attention: dropout_seeds {dropout_seeds.shape}, want "
                     f"[B, H] = {(batch, heads)}")
  use_dropout = dropout_rate > 0.0 and (dropout_rng is not None or dropout_seeds is not None)

  blocks = _clamp_blocks(block_sizes or default_block_sizes(platform, head_dim), q_len, kv_len,
                         platform)
  q_multiple = max(blocks.block_q, blocks.block_q_dkv, blocks.block_q_dq)
  kv_multiple = max(blocks.block_kv, blocks.block_kv_dkv, blocks.block_kv_dq)
  st = _Static(platform=platform, interpret=interpret, causal=bool(causal),
               q_offset=q_offset, sm_scale=head_dim ** -0.5,
               dropout_rate=float(dropout_rate) if use_dropout else 0.0,
               has_segments=q_segment_ids is not None, q_len=q_len, kv_len=kv_len,
               blocks=blocks, q_len_padded=_round_up(q_len, q_multiple),
               kv_len_padded=_round_up(kv_len, kv_multiple))

  q = _pad_axis(q_BTHD, 1, st.q_len_padded)
  k = _pad_axis(k_BSHD, 1, st.kv_len_padded)
  v = _pad_axis(v_BSHD, 1, st.kv_len_padded)
  if st.layout == "BHTD":
    q, k, v = (jnp.swapaxes(x, 1, 2) for x in (q, k, v))
  q_seg = kv_seg = None
  if st.has_segments:
    # Padded queries get -1 (no key matches: empty rows, output 0); padded keys are
    # masked by index anyway.
    q_seg = _pad_axis(q_segment_ids.astype(jnp.int32), 1, st.q_len_padded, -1)[:, :, None]
    kv_seg = _pad_axis(kv_segment_ids.astype(jnp.int32), 1, st.kv_len_padded, -2)[:, None, :]
  seed = None
  if use_dropout:
    if dropout_seeds is None:
      dropout_seeds = _draw_seeds(dropout_rng, batch, heads)
    seed = dropout_seeds.astype(jnp.int32)[:, :, None, None]
  o = _flash(st, q, k, v, q_seg, kv_seg, seed)
  if st.layout == "BHTD":
    o = jnp.swapaxes(o, 1, 2)
  return o[:, :q_len]
