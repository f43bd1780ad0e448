"""Bits per byte against a brute-force computation with the model, one token at a time."""

import math

import jax
import numpy as np
import ml_collections
import pytest

from phi_jax.train.settings import train_settings

from configs import base as base_config
from phi_jax import bpb, tokenizer as tokenizer_lib
from phi_jax.config import PhiConfig
from phi_jax.train import mesh as mesh_lib
from phi_jax.train.step import Trainer
from tests.conftest import phi_logits, random_model

CONFIG = PhiConfig(vocab_size=260, d_model=32, num_layers=2, num_heads=4, mlp_dim=64,
                   rotary_dim=8, max_seq_len=64, dtype="float32", attention_dropout=0.0,
                   residual_dropout=0.0)
PAIRS = [("def add(a, b):\n", "  return a + b\n"),
         ('"""Say hé."""\n', "print('hé')\n"),  # non-ASCII: bytes != characters
         ("x", "= 1" * 30)]  # longer than the window: context cut, then target cut


def _brute_force_bits(model, context, target):
  """-log2 p(target | context) from one unpadded, unmasked forward pass of the row,
  summed token by token in float64."""
  logits = phi_logits(model, [context + target])[0].astype(np.float64)
  bits = 0.0
  for i, token in enumerate(target):
    row = logits[len(context) + i - 1]  # the position that predicts target[i]
    log_z = row.max() + np.log(np.exp(row - row.max()).sum())
    bits -= (row[token] - log_z) / math.log(2.0)
  return bits


@pytest.fixture(scope="module")
def model():
  return random_model(CONFIG, seed=3)


def test_bits_per_byte_matches_brute_force(model):
  tok = tokenizer_lib.byte_level()
  max_len = 24
  contexts = [tok.encode(c) for c, _ in PAIRS]
  targets = [tok.encode(t) for _, t in PAIRS]
  sizes = [len(t.encode("utf-8")) for _, t in PAIRS]
  scoring = bpb.build_scoring_set(contexts, targets, sizes, max_len,
                                  cut_bytes=lambda ids: len(tok.decode(ids).encode("utf-8")))
  bits, n_bytes = 0.0, 0
  for context, target, size in zip(contexts, targets, sizes):
    if len(target) > max_len - 1:  # what the window keeps: one context token
      target = target[:max_len - 1]
      size = len(tok.decode(target).encode("utf-8"))
    context = context[-(max_len - len(target)):]
    bits += _brute_force_bits(model, context, target)
    n_bytes += size
  assert scoring.n_bytes == n_bytes
  want = bits / n_bytes
  # batch 2 over 3 rows: the last batch is padded with unscored rows
  got = bpb.bits_per_byte(bpb.model_nll_sums(model), scoring, batch_size=2)
  np.testing.assert_allclose(got, want, rtol=1e-4)

  # the training loop's scorer (sharded eval step) gives the same number
  from phi_jax.pretrained import params_of
  batch_size = 8 * len(jax.devices())  # a multiple of the data-parallel devices
  train_cfg = train_settings(steps=10, batch_size=batch_size, lr=1e-3, warmup_steps=1)
  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1)))
  trainer = Trainer(CONFIG, train_cfg, mesh,
                    mesh_lib.parse_rules(base_config.get_config().mesh.rules), total_steps=10)
  state = trainer.state_from_params(params_of(model))
  got_trainer = bpb.bits_per_byte(bpb.trainer_nll_sums(trainer, state), scoring, batch_size)
  np.testing.assert_allclose(got_trainer, want, rtol=1e-4)


def test_scoring_set_layout_and_errors():
  scoring = bpb.build_scoring_set([[5, 6, 7]], [[8, 9]], [3], max_len=4)
  np.testing.assert_array_equal(scoring.tokens_NL, [[6, 7, 8, 9]])  # context cut from the left
  np.testing.assert_array_equal(scoring.loss_mask_NL, [[0, 0, 1, 1]])
  with pytest.raises(ValueError, match="cut_bytes"):
    bpb.build_scoring_set([[1]], [[2] * 10], [10], max_len=4)
  with pytest.raises(ValueError, match="empty"):
    bpb.build_scoring_set([[]], [[2]], [1], max_len=4)
