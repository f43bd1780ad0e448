"""phi_jax's Pallas flash attention against the plain XLA attention.

On CPU the kernels run in Pallas interpret mode (the same kernel bodies that Triton
and Mosaic compile); the real GPU/TPU lowerings are checked with jax.export. On a GPU
or TPU host (PHI_JAX_TEST_PLATFORM=gpu or tpu, see tests/conftest.py) the same tests
run the compiled kernels: `interpret` is left to the kernel's default, which is
interpret mode on the CPU backend only (the 'tpu' cases stay in interpret mode). Every
numerical check compares with `phi_jax.attention.xla_attention` (or, for dropout,
with the same dense attention using the kernel's own keep-mask).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from phi_jax import attention as attention_lib
from phi_jax.attention import xla_attention
from phi_jax.config import ConfigError, PhiConfig
from phi_jax import dropout as dropout_lib
from phi_jax.kernels import BlockSizes, dropout_keep_mask, dropout_seeds, flash_attention
from tests.conftest import cpu_only, random_model


@dataclasses.dataclass(frozen=True)
class Case:
  q_len: int
  heads: int
  head_dim: int
  causal: bool = True
  segments: bool = False
  dtype: str = "float32"
  batch: int = 1
  kv_len: int | None = None  # default: q_len
  q_offset: int = 0
  # None: the default backend (on CPU: interpret mode); 'tpu': the Mosaic variant
  # ([B, H, T, D] layout) in interpret mode.
  platform: str | None = None
  blocks: tuple[int, int] | None = None  # uniform (block_q, block_kv) via the dispatcher

  def __str__(self):
    return (f"T{self.q_len}-S{self.kv_len or self.q_len}-off{self.q_offset}-B{self.batch}"
            f"-H{self.heads}-D{self.head_dim}-{'causal' if self.causal else 'full'}"
            f"-{'seg' if self.segments else 'noseg'}-{self.dtype}"
            + (f"-{self.platform}" if self.platform else "")
            + (f"-blocks{self.blocks[0]}x{self.blocks[1]}" if self.blocks else ""))


CASES = [
    Case(1, 2, 64),
    Case(1, 1, 64, segments=True, kv_len=300, q_offset=299),  # one query, long cache
    Case(17, 2, 128, causal=False),
    Case(128, 2, 64, causal=False, segments=True, batch=2),
    Case(128, 2, 128),
    Case(300, 2, 64, segments=True),
    Case(300, 1, 128, causal=False, segments=True),
    Case(40, 2, 64, kv_len=100, q_offset=60),  # a chunk of queries against a longer cache
    Case(300, 1, 64, segments=True, blocks=(32, 64)),  # many small tiles, via the dispatcher
    Case(2048, 1, 64),
    Case(17, 2, 64, segments=True, batch=2, dtype="bfloat16"),
    Case(128, 2, 128, causal=False, dtype="bfloat16"),
    Case(300, 2, 64, segments=True, platform="tpu"),
    Case(17, 1, 128, causal=False, dtype="bfloat16", platform="tpu"),
]
SLOW_CASES = [
    Case(17, 2, 64, segments=True, batch=2),
    Case(300, 2, 64, segments=True, dtype="bfloat16"),
    Case(2048, 1, 64, dtype="bfloat16"),
    Case(2048, 2, 128, segments=True),
    Case(2048, 2, 64, segments=True, batch=2, dtype="bfloat16"),
]


def segment_ids(rng: np.random.RandomState, batch: int, length: int) -> np.ndarray:
  """Packed documents of random lengths (ids 1, 2, ...) then right padding (id 0)."""
  ids = np.zeros((batch, length), np.int32)
  for b in range(batch):
    position, doc = 0, 1
    real = length - rng.randint(0, max(length // 4, 1) + 1)  # the rest is padding
    while position < real:
      size = rng.randint(1, max(real // 3, 1) + 1)
      ids[b, position:min(position + size, real)] = doc
      position, doc = position + size, doc + 1
  return ids


def inputs(case: Case, seed: int = 0):
  dtype = jnp.dtype(case.dtype)
  kv_len = case.kv_len or case.q_len
  keys = jax.random.split(jax.random.key(seed), 4)
  q = jax.random.normal(keys[0], (case.batch, case.q_len, case.heads, case.head_dim), dtype)
  k = jax.random.normal(keys[1], (case.batch, kv_len, case.heads, case.head_dim), dtype)
  v = jax.random.normal(keys[2], (case.batch, kv_len, case.heads, case.head_dim), dtype)
  do = jax.random.normal(keys[3], q.shape, dtype)
  rng = np.random.RandomState(seed)
  if case.segments:
    kv_seg = segment_ids(rng, case.batch, kv_len)
    q_seg = kv_seg[:, case.q_offset:case.q_offset + case.q_len] if kv_len != case.q_len else (
        kv_seg)
  else:
    q_seg = np.ones((case.batch, case.q_len), np.int32)
    kv_seg = np.ones((case.batch, kv_len), np.int32)
  return q, k, v, do, jnp.asarray(q_seg), jnp.asarray(kv_seg)


def value_and_grads(fn, q, k, v, do):
  """(out, dq, dk, dv) of fn with output cotangent do."""
  out, vjp = jax.vjp(fn, q, k, v)
  return (out,) + vjp(do)


def pallas_fn(case: Case, q_seg, kv_seg):
  seg = dict(q_segment_ids=q_seg, kv_segment_ids=kv_seg) if case.segments else {}
  if case.blocks:
    assert case.causal and case.platform is None
    return lambda q, k, v: attention_lib.dot_product_attention(
        q, k, v, implementation="pallas", block_q=case.blocks[0], block_kv=case.blocks[1],
        q_segment_ids=q_seg, kv_segment_ids=kv_seg, q_offset=case.q_offset)
  interpret = True if case.platform else None
  return lambda q, k, v: flash_attention(q, k, v, causal=case.causal, q_offset=case.q_offset,
                                         platform=case.platform, interpret=interpret, **seg)


def reference_fn(case: Case, q_seg, kv_seg):
  # Non-causal = causal with every key at or before the first query.
  offset = case.q_offset if case.causal else (case.kv_len or case.q_len)
  return lambda q, k, v: xla_attention(q, k, v, q_segment_ids=q_seg, kv_segment_ids=kv_seg,
                                       q_offset=offset)


def assert_close(got, want, tolerance, what):
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  assert np.all(np.isfinite(got)), f"{what}: non-finite values"
  error = np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want))))
  assert error <= tolerance, f"{what}: max error {error:.3g} (relative to max |want|) > {tolerance}"


def check_case(case: Case):
  q, k, v, do, q_seg, kv_seg = inputs(case)

  @jax.jit
  def both(q, k, v, do):
    return (value_and_grads(pallas_fn(case, q_seg, kv_seg), q, k, v, do),
            value_and_grads(reference_fn(case, q_seg, kv_seg), q, k, v, do))

  got, want = both(q, k, v, do)
  tolerance = 2e-5 if case.dtype == "float32" else 2e-2
  for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
    assert g.dtype == w.dtype == q.dtype, (name, g.dtype, w.dtype)
    assert g.shape == w.shape, (name, g.shape, w.shape)
    assert_close(g, w, tolerance, f"{case}: {name}")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_xla_attention(case):
  check_case(case)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES, ids=str)
def test_matches_xla_attention_long(case):
  check_case(case)


def test_rows_with_nothing_to_attend_are_zero_and_finite():
  """A query whose segment has no visible key gets output 0 and zero gradients (the
  XLA path returns finite garbage there); every other row matches xla_attention."""
  case = Case(40, 2, 64, segments=True, kv_len=70, q_offset=30)
  q, k, v, do, _, _ = inputs(case)
  kv_seg = jnp.asarray(np.repeat([1, 2], 35)[None], jnp.int32)
  # Queries at buffer 30..39 (segment 1) and 50..69 (segment 2) have keys; those at
  # 40..49 belong to segment 3, which no key has.
  q_seg = jnp.asarray(np.array([[1] * 10 + [3] * 10 + [2] * 20]), jnp.int32)
  empty = np.asarray(q_seg[0] == 3)
  # The reference routes gradient through its garbage rows into dk, dv: give those
  # rows a zero cotangent (the model's loss ignores padding rows the same way).
  do = do * jnp.asarray(~empty)[None, :, None, None]
  pallas = lambda q, k, v: flash_attention(q, k, v, q_segment_ids=q_seg,
                                           kv_segment_ids=kv_seg, q_offset=30)
  got, want = jax.jit(lambda q, k, v, do: (
      value_and_grads(pallas, q, k, v, do),
      value_and_grads(reference_fn(case, q_seg, kv_seg), q, k, v, do)))(q, k, v, do)
  for name, g in zip(("out", "dq", "dk", "dv"), got):
    assert np.all(np.isfinite(np.asarray(g))), name
  np.testing.assert_array_equal(np.asarray(got[0])[0, empty], 0.0)
  np.testing.assert_array_equal(np.asarray(got[1])[0, empty], 0.0)  # dq of empty rows
  assert_close(got[0][0, ~empty], want[0][0, ~empty], 2e-5, "out of non-empty rows")
  for name, g, w in zip(("dq", "dk", "dv"), got[1:], want[1:]):
    assert_close(g, w, 2e-5, name)


# --- dropout -------------------------------------------------------------------------

def masked_reference(q, k, v, q_seg, kv_seg, keep_BHTS, rate):
  """Dense causal attention whose probabilities are dropped with a given keep-mask
  (fp32 matmuls in full precision: no TF32 on GPUs)."""
  highest = jax.lax.Precision.HIGHEST
  scores = jnp.einsum("bthd,bshd->bhts", q, k, precision=highest) * q.shape[-1] ** -0.5
  mask = attention_lib.attention_mask(q_seg, kv_seg, 0)
  probs = jax.nn.softmax(jnp.where(mask, scores, jnp.finfo(jnp.float32).min), axis=-1)
  probs = jnp.where(keep_BHTS, probs / (1.0 - rate), 0.0)
  return jnp.einsum("bhts,bshd->bthd", probs, v, precision=highest)


def test_dropout_equals_dense_attention_with_the_kernels_mask():
  rate = 0.3
  case = Case(300, 2, 64, segments=True, batch=2)
  q, k, v, do, q_seg, kv_seg = inputs(case)
  rng = jax.random.key(7)
  keep = dropout_keep_mask(dropout_seeds(rng, 2, 2), 300, 300, rate)
  got = jax.jit(lambda q, k, v, do: value_and_grads(
      lambda q, k, v: flash_attention(q, k, v, q_segment_ids=q_seg, kv_segment_ids=kv_seg,
                                      dropout_rate=rate, dropout_rng=rng), q, k, v, do))(
                                          q, k, v, do)
  want = value_and_grads(
      lambda q, k, v: masked_reference(q, k, v, q_seg, kv_seg, keep, rate), q, k, v, do)
  for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
    assert_close(g, w, 2e-5, f"dropout {name}")
  # It really dropped something: without dropout the output differs.
  plain = flash_attention(q, k, v, q_segment_ids=q_seg, kv_segment_ids=kv_seg)
  assert float(jnp.max(jnp.abs(plain - got[0]))) > 0.1


def test_dropout_mask_statistics():
  rate = 0.1
  keep = np.asarray(dropout_keep_mask(dropout_seeds(jax.random.key(0), 4, 4), 256, 256, rate))
  # 1M Bernoulli(0.9) draws: the kept fraction is within 5 standard errors of 0.9,
  # and so is every (batch, head) slice (65k draws each) within its own error.
  assert abs(keep.mean() - 0.9) < 5 * np.sqrt(0.09 / keep.size)
  per_slice = keep.mean(axis=(2, 3))
  assert np.all(np.abs(per_slice - 0.9) < 5 * np.sqrt(0.09 / (256 * 256)))
  # Neighbouring rows / columns / heads are uncorrelated (no striping from the hash).
  centred = keep - keep.mean()
  for axis in (1, 2, 3):
    shifted = np.roll(centred, 1, axis=axis)
    correlation = (centred * shifted).mean() / centred.var()
    assert abs(correlation) < 0.01, (axis, correlation)
  # Another key gives another mask.
  other = np.asarray(dropout_keep_mask(dropout_seeds(jax.random.key(1), 4, 4), 256, 256, rate))
  assert 0.1 < (keep != other).mean() < 0.25  # ~ 2 * 0.9 * 0.1 = 0.18


def test_dropout_preserves_the_mean():
  """With v = 1 every output is sum_j keep_ij p_ij / (1 - rate): mean 1 over rows."""
  rate = 0.25
  q, k = 0.3 * jax.random.normal(jax.random.key(0), (2, 2, 256, 2, 64))  # spread attention
  out = flash_attention(q, k, jnp.ones_like(q), dropout_rate=rate,
                        dropout_rng=jax.random.key(3))
  row_sums = np.asarray(out[..., 0])
  assert abs(row_sums[:, 64:].mean() - 1.0) < 0.02  # rows with >= 64 keys: small variance
  assert np.any(np.abs(row_sums - 1.0) > 0.05)  # but individual rows are perturbed


def test_dropout_needs_a_key():
  case = Case(17, 2, 64)
  q, k, v, _, _, _ = inputs(case)
  np.testing.assert_array_equal(flash_attention(q, k, v, dropout_rate=0.5),
                                flash_attention(q, k, v))


# --- the model and the attention switch ----------------------------------------------

def test_model_pallas_matches_xla_logits_and_gradients():
  config = PhiConfig(vocab_size=64, d_model=128, num_layers=2, num_heads=2, mlp_dim=256,
                     rotary_dim=32, max_seq_len=64, dtype="float32", attention="xla")
  graphdef_xla, state = nnx.split(random_model(config))
  graphdef_pallas, _ = nnx.split(random_model(config.replace(attention="pallas")))
  rng = np.random.RandomState(0)
  tokens = jnp.asarray(rng.randint(0, 64, (2, 37)), jnp.int32)
  mask = jnp.asarray(np.arange(37)[None] < np.array([[37], [30]]), jnp.int32)  # right pad
  seg = jnp.asarray(segment_ids(rng, 2, 37))

  def loss(state, graphdef):
    logits = nnx.merge(graphdef, state)(tokens, attention_mask=mask, segment_ids=seg)
    weight = (mask * (seg > 0))[..., None]
    return jnp.sum(jax.nn.log_softmax(logits) * weight) / weight.sum(), logits

  grad = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)
  # fp32 projections too (GPUs default to TF32, whose rounding would amplify the
  # attention implementations' last-bit differences)
  with jax.default_matmul_precision("highest"):
    grads_xla, logits_xla = grad(state, graphdef_xla)
    grads_pallas, logits_pallas = grad(state, graphdef_pallas)
  np.testing.assert_allclose(logits_pallas, logits_xla, atol=2e-5, rtol=1e-5)
  leaves_xla = jax.tree.leaves(grads_xla)
  leaves_pallas = jax.tree.leaves(grads_pallas)
  assert len(leaves_xla) == len(leaves_pallas) > 10
  for g_pallas, g_xla in zip(leaves_pallas, leaves_xla):
    np.testing.assert_allclose(g_pallas, g_xla, atol=2e-6, rtol=2e-4)


def test_decoding_falls_back_to_xla():
  """A traced q_offset (the KV-cache index) makes 'pallas' and 'cudnn' use the XLA
  path, bit for bit."""
  case = Case(3, 2, 64, segments=True, kv_len=50, q_offset=20)
  q, k, v, _, q_seg, kv_seg = inputs(case)

  @jax.jit
  def all_three(q, k, v, offset):
    return [attention_lib.dot_product_attention(
        q, k, v, implementation=name, q_segment_ids=q_seg, kv_segment_ids=kv_seg,
        q_offset=offset) for name in ("pallas", "cudnn", "xla")]

  pallas, cudnn, xla = all_three(q, k, v, jnp.int32(20))
  np.testing.assert_array_equal(pallas, xla)
  np.testing.assert_array_equal(cudnn, xla)


@cpu_only  # 8 devices
def test_runs_per_shard_under_a_context_mesh():
  """With a (data, fsdp, tensor) mesh set, the kernel runs per shard (shard_map over
  batch and heads) and still equals xla_attention; dropout masks are per (row, head),
  the same as without the mesh."""
  from jax.sharding import Mesh  # pylint: disable=g-import-not-at-top
  mesh = Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ("data", "fsdp", "tensor"))
  case = Case(40, 4, 64, segments=True, batch=4)
  q, k, v, do, q_seg, kv_seg = inputs(case)
  kwargs = dict(q_segment_ids=q_seg, kv_segment_ids=kv_seg)
  pallas = lambda q, k, v: attention_lib.pallas_attention(q, k, v, **kwargs)
  reference = lambda q, k, v: xla_attention(q, k, v, **kwargs)
  same_rows = jnp.broadcast_to(q[:1], q.shape)  # every batch row and head alike
  dropped = lambda q: attention_lib.pallas_attention(
      q, q, q, dropout_rate=0.5, dropout_rng=jax.random.key(0),
      q_segment_ids=jnp.ones((4, 40), jnp.int32), kv_segment_ids=jnp.ones((4, 40), jnp.int32))
  with jax.set_mesh(mesh):
    assert "shard_map" in str(jax.make_jaxpr(pallas)(q, k, v))
    got, want, out = jax.jit(lambda q, k, v, do, same_rows: (
        value_and_grads(pallas, q, k, v, do), value_and_grads(reference, q, k, v, do),
        dropped(same_rows)))(q, k, v, do, same_rows)
  for name, g, w in zip(("out", "dq", "dk", "dv"), got, want):
    assert_close(g, w, 2e-5, f"sharded {name}")
  out = np.asarray(out)
  # Every batch row has its own key: different masks ...
  assert all(np.abs(out[0] - out[b]).max() > 0.1 for b in (1, 2, 3))
  # ... the same ones as on one device, without the mesh.
  np.testing.assert_allclose(out, np.asarray(jax.jit(dropped)(same_rows)), atol=1e-6)


def test_dropout_mask_of_a_row_does_not_depend_on_the_batch():
  """Rows 1..2 of a batch of 4, run alone with their own per-row keys, get the masks
  (and so the outputs and gradients) they get in the whole batch."""
  case = Case(40, 2, 64, segments=True, batch=4)
  q, k, v, do, q_seg, kv_seg = inputs(case)
  keys = dropout_lib.row_keys(jax.random.key(5), 4)

  def run(rows):
    fn = lambda q, k, v: flash_attention(
        q, k, v, q_segment_ids=q_seg[rows], kv_segment_ids=kv_seg[rows], dropout_rate=0.3,
        dropout_rng=keys[rows])
    return value_and_grads(fn, q[rows], k[rows], v[rows], do[rows])

  whole, part = run(slice(0, 4)), run(slice(1, 3))
  for name, w, p in zip(("out", "dq", "dk", "dv"), whole, part):
    np.testing.assert_allclose(np.asarray(w)[1:3], np.asarray(p), atol=1e-6, err_msg=name)
  # One key means row b's key fold_in(key, b): the same masks.
  np.testing.assert_array_equal(
      dropout_seeds(jax.random.key(5), 4, 2), dropout_seeds(keys, 4, 2))


def test_auto_resolves_by_backend():
  assert attention_lib.resolve_implementation("auto", "cpu") == "xla"
  assert attention_lib.resolve_implementation("auto", "gpu") == "pallas"
  assert attention_lib.resolve_implementation("auto", "cuda") == "pallas"
  assert attention_lib.resolve_implementation("auto", "tpu") == "pallas"
  assert attention_lib.resolve_implementation("cudnn", "cpu") == "cudnn"
  on_cpu = jax.default_backend() == "cpu"
  assert attention_lib.resolve_implementation("auto") == ("xla" if on_cpu else "pallas")
  q, k, v, _, q_seg, kv_seg = inputs(Case(17, 2, 64))
  kwargs = dict(q_segment_ids=q_seg, kv_segment_ids=kv_seg)
  auto, xla = jax.jit(lambda q, k, v: (
      attention_lib.dot_product_attention(q, k, v, implementation="auto", **kwargs),
      xla_attention(q, k, v, **kwargs)))(q, k, v)
  if on_cpu:
    np.testing.assert_array_equal(auto, xla)
  else:  # the compiled kernel
    assert_close(auto, xla, 2e-5, "auto")


def test_cudnn_needs_a_gpu_and_no_dropout():
  q, k, v, _, q_seg, kv_seg = inputs(Case(17, 2, 64, dtype="bfloat16"))
  kwargs = dict(q_segment_ids=q_seg, kv_segment_ids=kv_seg)
  if jax.default_backend() == "cpu":
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
      attention_lib.dot_product_attention(q, k, v, implementation="cudnn", **kwargs)
  with pytest.raises(ValueError, match="attention_dropout"):
    attention_lib.dot_product_attention(q, k, v, implementation="cudnn", dropout_rate=0.1,
                                        dropout_rng=jax.random.key(0), **kwargs)
  with pytest.raises(ConfigError, match="'attention'"):
    PhiConfig(attention="cudnn", attention_dropout=0.1)
  PhiConfig(attention="cudnn", attention_dropout=0.0)  # fine


@pytest.mark.parametrize("changes, field", [
    (dict(attention_block_q=48, attention_block_kv=64), "attention_block_q"),
    (dict(attention_block_q=8, attention_block_kv=64), "attention_block_q"),
    (dict(attention_block_q=64, attention_block_kv=-1), "attention_block_kv"),
    (dict(attention_block_q=64), "attention_block_q"),
    (dict(attention="triton"), "attention"),
])
def test_config_rejects_bad_attention_settings(changes, field):
  with pytest.raises(ConfigError, match=f"'{field}'"):
    PhiConfig(**changes)


def test_config_accepts_attention_settings():
  for name in ("auto", "xla", "pallas"):
    assert PhiConfig(attention=name).attention == name
  assert PhiConfig(attention_block_q=64, attention_block_kv=128).attention_block_kv == 128


def test_bad_inputs_are_named():
  q = jnp.zeros((1, 16, 2, 64))
  with pytest.raises(ValueError, match="q_offset must be a static int"):
    jax.jit(lambda q, o: flash_attention(q, q, q, q_offset=o))(q, 3)
  with pytest.raises(ValueError, match="both q_segment_ids and kv_segment_ids"):
    flash_attention(q, q, q, q_segment_ids=jnp.ones((1, 16), jnp.int32))
  with pytest.raises(ValueError, match="head_dim 48"):
    jax.eval_shape(lambda q: flash_attention(q, q, q, platform="gpu"),
                   jnp.zeros((1, 16, 2, 48)))
  with pytest.raises(ValueError, match="no CPU lowering"):
    flash_attention(q, q, q, platform="cpu", interpret=False)
  with pytest.raises(ValueError, match="power of two"):
    BlockSizes(block_q=96)


# --- the real lowerings ----------------------------------------------------------------

# Pallas' Triton kernels are custom calls without export compatibility guarantees;
# allow them so that the lowering can be serialised and inspected.
_TRITON = jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")


@pytest.mark.parametrize("platform, target, custom_call", [
    ("gpu", "cuda", "__gpu$xla.gpu.triton"),
    ("tpu", "tpu", "tpu_custom_call"),
])
@pytest.mark.parametrize("dtype, head_dim, features", [
    ("bfloat16", 64, "segments+dropout"),  # phi-1 training: 8 x 2048, 32 heads x 64
    ("float32", 128, "plain"),
])
def test_forward_and_backward_lower_for_gpu_and_tpu(platform, target, custom_call, dtype,
                                                      head_dim, features):
  """Lowers forward + backward for the real backend (Triton on GPU, Mosaic on TPU)
  without the hardware; three kernels: forward, dK/dV and dQ."""
  heads = 32 if head_dim == 64 else 16
  q = jax.ShapeDtypeStruct((8, 2048, heads, head_dim), jnp.dtype(dtype))
  seg = jax.ShapeDtypeStruct((8, 2048), jnp.int32)
  extras = features == "segments+dropout"

  def loss(q, k, v, seg):
    out = flash_attention(q, k, v, q_segment_ids=seg if extras else None,
                          kv_segment_ids=seg if extras else None,
                          dropout_rate=0.1 if extras else 0.0,
                          dropout_rng=jax.random.key(0) if extras else None,
                          platform=platform)
    return jnp.sum(out.astype(jnp.float32))

  exported = jax.export.export(jax.jit(jax.grad(loss, argnums=(0, 1, 2))),
                               platforms=[target], disabled_checks=[_TRITON])(q, q, q, seg)
  text = exported.mlir_module()
  assert text.count(f"stablehlo.custom_call @{custom_call}") == 3
  for kernel in ("phi_flash_attention_fwd", "phi_flash_attention_dkv",
                 "phi_flash_attention_dq"):
    assert kernel in text
  assert [a.shape for a in exported.out_avals] == [q.shape] * 3


# --- bench/attention.py ---------------------------------------------------------------

@cpu_only
def test_attention_benchmark_runs_on_cpu_and_records_nothing(monkeypatch, tmp_path):
  from bench import attention as bench_attention  # pylint: disable=g-import-not-at-top
  from bench import record  # pylint: disable=g-import-not-at-top

  appended = []
  monkeypatch.setattr(record, "append_row", lambda *a, **k: appended.append(a))
  results = bench_attention.main(["--small", "--seq=64", "--repeats=1",
                                  "--impls=pallas,cudnn,xla"])
  by_impl = {r.impl: r for r in results}
  assert set(by_impl) == {"pallas", "cudnn", "xla"}
  assert "CUDA GPU" in by_impl["cudnn"].skipped
  assert not by_impl["pallas"].skipped and by_impl["pallas"].max_err < 1e-2  # bf16
  assert by_impl["pallas"].fwd_s > 0 and by_impl["pallas"].fwd_bwd_s > 0
  assert not appended  # CPU interpret-mode timings are never recorded

  # The row arithmetic, on made-up GPU timings: phi-1 shapes, 1 ms forward.
  args = bench_attention.parse_args(["--seq=2048"])
  fake = [bench_attention.Result("xla", 2048, fwd_s=4e-3, fwd_bwd_s=14e-3, max_err=None),
          bench_attention.Result("pallas", 2048, fwd_s=1e-3, fwd_bwd_s=3.5e-3, max_err=1e-3)]
  rows = bench_attention.table_rows(fake, args, "1x test GPU")
  cells = [c.strip() for c in rows[1].strip("|").split("|")]
  flops = 4 * 8 * 32 * 2048 * 2048 * 64 / 2  # causal half of QK^T + PV
  assert cells[3:9] == ["pallas", "8", "2048", "32", "64", "bfloat16"]
  assert cells[9:] == ["1.000", f"{flops / 1e-3 / 1e12:.1f}", "3.500",
                       f"{3.5 * flops / 3.5e-3 / 1e12:.1f}", "4.00", "1.0e-03"]
  path = tmp_path / "BENCHMARKS.md"
  monkeypatch.undo()
  for row in rows:
    record.append_row(bench_attention.SECTION, bench_attention.INTRO, row, path=str(path))
  text = path.read_text()
  assert text.count(bench_attention.SECTION) == 1 and rows[0] in text and rows[1] in text
