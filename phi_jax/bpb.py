"""Bits per byte of continuations given their contexts: a tokenizer-independent loss.

    bpb = sum over scored tokens of -log2 p(token | everything before it) / bytes scored

Each row is a context (e.g. a benchmark prompt) followed by a target (e.g. its
canonical solution); only the target's tokens are scored, and the denominator is the
UTF-8 length of the scored target text, so models with different tokenizers compare.
Rows longer than `max_len` lose context from the left first; a target that alone
exceeds the window is cut, and only the bytes of its kept tokens count.

The scorer is any function from a batch ({"tokens", "loss_mask"}: [B, T] arrays, as
phi_jax.train.step reads them) to (summed cross entropy in nats, counted targets):
the training loop's `Trainer.eval_step` or `model_nll_sums(model)` for a loaded model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

# (batch) -> (sum of the counted targets' cross entropies in nats, their count)
NllSums = Callable[[Mapping[str, np.ndarray]], tuple[float, float]]


@dataclasses.dataclass(frozen=True)
class ScoringSet:
  """Rows to score: tokens_NL and loss_mask_NL ([rows, max_len], right-padded with 0),
  and the bytes of the scored text over all rows."""
  tokens_NL: np.ndarray
  loss_mask_NL: np.ndarray
  n_bytes: int

  @property
  def num_rows(self) -> int:
    return int(self.tokens_NL.shape[0])


def build_scoring_set(contexts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]],
                      target_bytes: Sequence[int], max_len: int, *,
                      cut_bytes: Callable[[Sequence[int]], int] | None = None) -> ScoringSet:
  """Rows of context + target token ids, the target's positions marked for scoring.

  contexts, targets: token ids per row. target_bytes: the UTF-8 length of each
  target's text. max_len: tokens per row. cut_bytes: the byte length of a cut target's
  kept tokens (needed only when a target alone exceeds max_len - 1 tokens).
  """
  if not len(contexts) == len(targets) == len(target_bytes):
    raise ValueError(f"{len(contexts)} contexts, {len(targets)} targets and "
                     f"{len(target_bytes)} byte counts: one each per row")
  if max_len < 2:
    raise ValueError(f"max_len {max_len}: must be >= 2 (a context token and a target)")
  tokens = np.zeros((len(targets), max_len), np.int32)
  mask = np.zeros((len(targets), max_len), np.float32)
  n_bytes = 0
  for row, (context, target, size) in enumerate(zip(contexts, targets, target_bytes)):
    context, target = list(context), list(target)
    if not context or not target:
      raise ValueError(f"row {row}: an empty context or target (nothing predicts the "
                       "first token, and an empty target scores nothing)")
    if len(target) > max_len - 1:
      target = target[:max_len - 1]
      if cut_bytes is None:
        raise ValueError(f"row {row}: the target has more than max_len - 1 = {max_len - 1} "
                         "tokens; pass cut_bytes to score its kept prefix")
      size = cut_bytes(target)
    context = context[-(max_len - len(target)):]
    ids = context + target
    tokens[row, :len(ids)] = ids
    mask[row, len(context):len(ids)] = 1.0
    n_bytes += int(size)
  return ScoringSet(tokens, mask, n_bytes)


def batches(scoring: ScoringSet, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """The rows in batches of exactly `batch_size` (the last filled with unscored rows, so
  every batch has one shape and a compiled scorer compiles once)."""
  for begin in range(0, scoring.num_rows, batch_size):
    tokens = scoring.tokens_NL[begin:begin + batch_size]
    mask = scoring.loss_mask_NL[begin:begin + batch_size]
    pad = batch_size - tokens.shape[0]
    if pad:
      tokens = np.concatenate([tokens, np.zeros((pad, tokens.shape[1]), tokens.dtype)])
      mask = np.concatenate([mask, np.zeros((pad, mask.shape[1]), mask.dtype)])
    yield {"tokens": tokens, "loss_mask": mask}


def bits_per_byte(nll_sums: NllSums, scoring: ScoringSet, batch_size: int) -> float:
  """sum of -log2 p over the scored tokens / the scored bytes."""
  if scoring.n_bytes <= 0:
    raise ValueError("nothing to score: the scoring set has no bytes")
  nats, counted = 0.0, 0.0
  for batch in batches(scoring, batch_size):
    batch_nats, batch_counted = nll_sums(batch)
    nats += float(batch_nats)
    counted += float(batch_counted)
  expected = float(scoring.loss_mask_NL.sum())
  if not math.isclose(counted, expected):
    raise ValueError(f"the scorer counted {counted} targets, the set marks {expected}")
  return nats / math.log(2.0) / scoring.n_bytes


def model_nll_sums(model) -> NllSums:
  """The scorer of a loaded model (phi_jax.from_pretrained): jitted, without dropout."""
  import jax  # pylint: disable=g-import-not-at-top

  from phi_jax.pretrained import params_of  # pylint: disable=g-import-not-at-top
  from phi_jax.train.step import loss_sums  # pylint: disable=g-import-not-at-top

  params, config = params_of(model), model.config
  compiled = jax.jit(lambda p, b: loss_sums(p, config, b))

  def nll_sums(batch):
    total, counted = jax.device_get(compiled(params, dict(batch)))
    return float(total), float(counted)

  return nll_sums


def trainer_nll_sums(trainer, state) -> NllSums:
  """The scorer of a training state: the training loop's compiled, sharded eval step.

  Every host builds the same global batches; each hands the trainer its own share of
  the rows (in process order), as training batches are fed.
  """
  import jax  # pylint: disable=g-import-not-at-top

  def nll_sums(batch):
    count, index = jax.process_count(), jax.process_index()
    rows = batch["tokens"].shape[0] // count
    local = {k: v[index * rows:(index + 1) * rows] for k, v in batch.items()}
    out = jax.device_get(trainer.eval_step(state, trainer.shard_batch(local)))
    return float(out["loss"]) * float(out["tokens"]), float(out["tokens"])

  return nll_sums
