"""The chunked lm_head + cross entropy (phi_jax.train.loss) against the whole computation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs.base import get_config
from phi_jax.config import PhiConfig
from phi_jax.settings import to_config
from phi_jax.train import loss as loss_lib, mesh as mesh_lib, step as step_lib
from phi_jax.train.settings import train_settings
from tests.conftest import random_params

CONFIG = PhiConfig(vocab_size=96, d_model=32, num_layers=2, num_heads=4, mlp_dim=64,
                   rotary_dim=4, max_seq_len=32, dtype="float32", residual_dropout=0.1,
                   attention_dropout=0.1)
RTOL = 1e-6


def close(a, b, rtol=RTOL):
  """|a - b| <= rtol x max |b| per array (the relative error of the whole array)."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert np.max(np.abs(a - b)) <= rtol * max(np.max(np.abs(b)), 1e-30), (a, b)


def full_sums(hidden, kernel, bias, labels, weights):
  """The reference: every position's fp32 logits at once."""
  logits = jnp.einsum("bte,ev->btv", hidden, kernel,
                      precision=jax.lax.Precision.HIGHEST) + bias
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(losses * weights), jnp.sum(weights)


@pytest.mark.parametrize("chunk", [1, 5, 12])
def test_chunks_equal_the_whole_loss_and_gradients(chunk):
  rng = np.random.RandomState(chunk)
  batch, length, width, vocab = 3, 12, 16, 40
  hidden = jnp.asarray(rng.randn(batch, length, width), jnp.float32)
  kernel = jnp.asarray(rng.randn(width, vocab) * 0.3, jnp.float32)
  bias = jnp.asarray(rng.randn(vocab) * 0.1, jnp.float32)
  labels = jnp.asarray(rng.randint(0, vocab, (batch, length)), jnp.int32)
  weights = jnp.asarray(rng.rand(batch, length) * (rng.rand(batch, length) > 0.3),
                        jnp.float32)

  def chunked(h, k, b):
    with jax.default_matmul_precision("highest"):
      return loss_lib.cross_entropy_sums(h, k, b, labels, weights, dtype=jnp.float32,
                                         chunk=chunk)[0]

  value, grads = jax.jit(jax.value_and_grad(chunked, argnums=(0, 1, 2)))(hidden, kernel, bias)
  reference, reference_grads = jax.jit(jax.value_and_grad(
      lambda h, k, b: full_sums(h, k, b, labels, weights)[0], argnums=(0, 1, 2)))(
          hidden, kernel, bias)
  close(value, reference)
  for grad, expected in zip(grads, reference_grads):
    close(grad, expected)
  assert float(loss_lib.cross_entropy_sums(hidden, kernel, bias, labels, weights,
                                           dtype=jnp.float32, chunk=chunk)[1]) == \
      pytest.approx(float(jnp.sum(weights)))


def test_chunked_backward_holds_one_chunk_of_logits():
  """The backward's residuals: no [B, T, V] array (only one chunk's logits at a time)."""
  batch, length, width, vocab = 2, 64, 8, 1000
  args = (jnp.ones((batch, length, width)), jnp.ones((width, vocab)), jnp.ones((vocab,)),
          jnp.zeros((batch, length), jnp.int32), jnp.ones((batch, length)))

  def residual_shapes(chunk):
    def f(h, k, b):
      return loss_lib.cross_entropy_sums(h, k, b, *args[3:], dtype=jnp.float32,
                                         chunk=chunk)[0]
    residuals = jax.vjp(f, *args[:3])[1]
    return [leaf.shape for leaf in jax.tree.leaves(residuals)]

  whole = batch * length * vocab
  assert any(np.prod(shape) >= whole for shape in residual_shapes(0))
  assert all(np.prod(shape) < whole / 4 for shape in residual_shapes(8))


def make_batch(masked: bool, seed: int = 0):
  rng = np.random.RandomState(seed)
  tokens = rng.randint(0, CONFIG.vocab_size, (8, 16)).astype(np.int32)
  batch = dict(tokens=tokens)
  if masked:
    batch["loss_mask"] = (rng.rand(8, 16) > 0.4).astype(np.int32)
    batch["attention_mask"] = (np.arange(16)[None, :] < 16 - np.arange(8)[:, None]
                               ).astype(np.int32)
  return batch


@pytest.mark.parametrize("masked", [pytest.param(False, marks=pytest.mark.slow), True])
def test_model_loss_and_gradients_equal_the_unchunked(masked):
  params = random_params(CONFIG, seed=1)
  batch = {k: jnp.asarray(v) for k, v in make_batch(masked).items()}
  rng = jax.random.key(3)  # dropout on: both see the same masks

  def loss(chunk):
    grad_fn = jax.value_and_grad(step_lib.loss_sums, has_aux=True)
    with jax.default_matmul_precision("highest"):
      return jax.jit(lambda p: grad_fn(p, CONFIG, batch, rng, chunk))(params)

  (total, tokens), grads = loss(0)
  for chunk in (5,):
    (chunk_total, chunk_tokens), chunk_grads = loss(chunk)
    close(chunk_total, total)
    assert float(chunk_tokens) == float(tokens)
    jax.tree.map(close, chunk_grads, grads)


@pytest.mark.slow
def test_train_steps_with_microbatches_equal_the_unchunked():
  """Three optimizer steps (dropout on, masks, 2 micro-batches) on a 2x2x2 mesh: the same
  losses and parameters with the chunked loss as without."""
  mesh = mesh_lib.make_mesh(dict(data=2, fsdp=2, tensor=2))
  rules = mesh_lib.parse_rules(get_config().mesh.rules)
  results = []
  for chunk in (0, 4):
    cfg = to_config(train_settings(steps=10, batch_size=8, lr=1e-2, warmup_steps=0,
                                   microbatches=2, loss_chunk=chunk))
    cfg.optimizer.eps = 1e-4
    trainer = step_lib.Trainer(CONFIG, cfg, mesh, rules, 10)
    state = trainer.state_from_params(random_params(CONFIG, seed=2))
    batch = trainer.shard_batch(make_batch(masked=True, seed=4))
    losses = []
    with jax.default_matmul_precision("highest"):
      for _ in range(3):
        state, metrics = trainer.train_step(state, batch, jax.random.key(5))
        losses.append((float(metrics["loss"]), float(metrics["grad_norm"])))
    results.append((losses, state.params))
  (losses, params), (chunk_losses, chunk_params) = results
  close(chunk_losses, losses)
  jax.tree.map(lambda a, b: close(a, b, 1e-5), chunk_params, params)
