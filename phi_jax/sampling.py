"""Batched autoregressive sampling with the KV cache.

Prompts are left-padded into a batch; prefill runs the whole prompt once, then decoding
runs `chunk_size` steps per jitted call (a `lax.scan`), after which the host checks stop
sequences and stops early once every row is finished. Shapes are bucketed (batch and
prompt length to powers of two, generation length to whole chunks), so a new prompt
reuses a compiled program instead of recompiling.

Per row: greedy (temperature 0), or temperature with top-k and top-p (nucleus)
filtering. A row finishes at an end-of-text token, at a stop sequence, or after
`max_new_tokens`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from phi_jax.model import PhiForCausalLM
from phi_jax.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How one row picks its next token; temperature 0 is greedy."""
  temperature: float = 0.0
  top_p: float = 1.0
  top_k: int = 0  # 0 = no top-k filter

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclasses.dataclass
class Completion:
  """One generated continuation."""
  text: str | None  # None when no tokenizer is known (token-id prompts)
  tokens: list[int]  # generated ids, up to and including an end-of-text or stop
  finish_reason: str  # 'stop' (end-of-text or stop sequence) or 'length'
  prompt_tokens: int


def sample_logits(logits_BV: jax.Array, rng: jax.Array, temperature_B: jax.Array,
                  top_p_B: jax.Array, top_k_B: jax.Array) -> jax.Array:
  """Next tokens [B] from fp32 logits; rows with temperature 0 take the argmax."""
  greedy_B = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)

  def stochastic():
    vocab = logits_BV.shape[-1]
    scaled = logits_BV / jnp.maximum(temperature_B, 1e-6)[:, None]
    sorted_desc = -jnp.sort(-scaled, axis=-1)
    k = jnp.where(top_k_B > 0, jnp.minimum(top_k_B, vocab), vocab)
    kth = jnp.take_along_axis(sorted_desc, (k - 1)[:, None], axis=-1)
    sorted_desc = jnp.where(jnp.arange(vocab)[None] < k[:, None], sorted_desc, -jnp.inf)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    keep = mass_before < top_p_B[:, None]  # always keeps the most likely token
    p_threshold = jnp.min(jnp.where(keep, sorted_desc, jnp.inf), axis=-1, keepdims=True)
    threshold = jnp.maximum(kth, p_threshold)
    filtered = jnp.where(scaled >= threshold, scaled, -jnp.inf)
    return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)

  sampled_B = jax.lax.cond(jnp.all(temperature_B == 0), lambda: greedy_B, stochastic)
  return jnp.where(temperature_B == 0, greedy_B, sampled_B)


@functools.lru_cache(maxsize=16)
def _compiled(graphdef: nnx.GraphDef):
  """The jitted prefill and decode programs of one model structure."""

  @functools.partial(jax.jit, static_argnames=("cache_len",))
  def prefill(state, tokens_BP, mask_BP, *, cache_len: int):
    model = nnx.merge(graphdef, state)
    cache = model.init_cache(tokens_BP.shape[0], cache_len)
    return model.decode(tokens_BP, cache, attention_mask=mask_BP)

  @functools.partial(jax.jit, static_argnames=("steps",), donate_argnames=("cache",))
  def decode(state, cache, logits_BV, rng, done_B, temperature_B, top_p_B, top_k_B,
             eos_ids, *, steps: int):
    model = nnx.merge(graphdef, state)

    def step(carry, _):
      cache, logits_BV, rng, done_B = carry
      rng, key = jax.random.split(rng)
      token_B = sample_logits(logits_BV, key, temperature_B, top_p_B, top_k_B)
      token_B = jnp.where(done_B, 0, token_B)
      valid_B = ~done_B
      done_B = done_B | jnp.isin(token_B, eos_ids)
      logits_BV, cache = model.decode(token_B[:, None], cache, attention_mask=valid_B[:, None])
      return (cache, logits_BV, rng, done_B), (token_B, valid_B)

    carry, (tokens_SB, valid_SB) = jax.lax.scan(step, (cache, logits_BV, rng, done_B), None,
                                                length=steps)
    return (tokens_SB.T, valid_SB.T) + carry

  return prefill, decode


def _split(model: PhiForCausalLM) -> tuple[nnx.GraphDef, nnx.State]:
  """nnx.split without the model's tokenizer, which the compiled programs never use.

  A tokenizer attribute is static, so it is part of the GraphDef, and Tokenizers
  compare by identity: two loads of one checkpoint would otherwise key `_compiled`
  differently and compile every program again.
  """
  tokenizer = getattr(model, "tokenizer", None)
  if tokenizer is None:
    return nnx.split(model)
  model.tokenizer = None
  try:
    return nnx.split(model)
  finally:
    model.tokenizer = tokenizer


def _bucket(n: int, minimum: int) -> int:
  return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def _stop_index(text: str, stop: Sequence[str]) -> int:
  """The index of the earliest stop sequence in text, or -1."""
  hits = [i for i in (text.find(s) for s in stop) if i >= 0]
  return min(hits) if hits else -1


class _Row:
  """Host-side state of one row while it decodes."""

  def __init__(self, prompt_len: int):
    self.tokens: list[int] = []
    self.prompt_tokens = prompt_len
    self.finished = False


def generate_tokens(model: PhiForCausalLM, prompts: Sequence[Sequence[int]],
                    params: Sequence[SamplingParams], *, max_new_tokens: int,
                    stop: Sequence[str] = (), eos_token_ids: Sequence[int] = (),
                    tokenizer: Tokenizer | None = None, seed: int = 0,
                    batch_size: int = 32, chunk_size: int = 16) -> list[Completion]:
  """Samples one completion per (token prompt, SamplingParams) pair, in order."""
  if len(prompts) != len(params):
    raise ValueError(f"{len(prompts)} prompts but {len(params)} sampling params")
  if stop and tokenizer is None:
    raise ValueError("stop sequences need a tokenizer")
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if chunk_size < 1 or batch_size < 1:
    raise ValueError(f"chunk_size and batch_size must be >= 1, got {chunk_size}, {batch_size}")
  vocab = model.config.vocab_size
  for i, prompt in enumerate(prompts):
    if len(prompt) == 0:
      raise ValueError(f"prompt {i} is empty")
    if min(prompt) < 0 or max(prompt) >= vocab:
      raise ValueError(f"prompt {i} has token ids outside [0, {vocab})")
  graphdef, state = _split(model)
  prefill, decode = _compiled(graphdef)
  eos_ids = jnp.asarray(list(eos_token_ids) or [-1], jnp.int32)
  # A short generation runs a shorter chunk (a power of two), not chunk_size steps.
  chunk_size = min(chunk_size, _bucket(max_new_tokens, 1))
  gen_len = _bucket(math.ceil(max_new_tokens / chunk_size), 1) * chunk_size
  completions: list[Completion] = []
  for start in range(0, len(prompts), batch_size):
    batch_prompts = prompts[start:start + batch_size]
    batch_params = params[start:start + batch_size]
    rows = [_Row(len(p)) for p in batch_prompts]
    n = len(rows)
    batch = _bucket(n, 1)
    prompt_len = _bucket(max(len(p) for p in batch_prompts), 8)
    tokens = np.zeros((batch, prompt_len), np.int32)
    mask = np.zeros((batch, prompt_len), np.int32)
    for r, prompt in enumerate(batch_prompts):
      tokens[r, prompt_len - len(prompt):] = prompt
      mask[r, prompt_len - len(prompt):] = 1
    mask[n:, -1] = 1  # filler rows: one token, discarded
    padded_params = list(batch_params) + [SamplingParams()] * (batch - n)
    temperature = jnp.asarray([p.temperature for p in padded_params], jnp.float32)
    top_p = jnp.asarray([p.top_p for p in padded_params], jnp.float32)
    top_k = jnp.asarray([p.top_k for p in padded_params], jnp.int32)
    logits, cache = prefill(state, jnp.asarray(tokens), jnp.asarray(mask),
                            cache_len=prompt_len + gen_len)
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), start)
    done = jnp.asarray(np.arange(batch) >= n)
    generated = 0
    while generated < max_new_tokens:
      chunk_tokens, chunk_valid, cache, logits, rng, done = decode(
          state, cache, logits, rng, done, temperature, top_p, top_k, eos_ids,
          steps=chunk_size)
      generated += chunk_size
      chunk_tokens, chunk_valid = np.asarray(chunk_tokens), np.asarray(chunk_valid)
      host_done = np.asarray(done).copy()
      for r, row in enumerate(rows):
        if row.finished:
          continue
        row.tokens.extend(chunk_tokens[r][chunk_valid[r]].tolist())
        if host_done[r] or len(row.tokens) >= max_new_tokens or (
            stop and _stop_index(tokenizer.decode(row.tokens), stop) >= 0):
          row.finished = host_done[r] = True
      if all(row.finished for row in rows):
        break
      done = jnp.asarray(host_done)
    completions.extend(_finish(row, max_new_tokens, stop, set(eos_token_ids), tokenizer)
                       for row in rows)
  return completions


def _finish(row: _Row, max_new_tokens: int, stop: Sequence[str], eos_ids: set[int],
            tokenizer: Tokenizer | None) -> Completion:
  tokens = row.tokens[:max_new_tokens]
  reason = "length"
  for i, token in enumerate(tokens):
    if token in eos_ids:
      tokens, reason = tokens[:i + 1], "stop"
      break
  text_tokens = tokens[:-1] if reason == "stop" else tokens
  text = tokenizer.decode(text_tokens) if tokenizer is not None else None
  if stop and text is not None:
    cut = _stop_index(text, stop)
    if cut >= 0:
      text, reason = text[:cut], "stop"
      # the shortest token prefix whose text contains a stop sequence
      lo, hi = 1, len(text_tokens)
      while lo < hi:
        mid = (lo + hi) // 2
        if _stop_index(tokenizer.decode(text_tokens[:mid]), stop) >= 0:
          hi = mid
        else:
          lo = mid + 1
      tokens = text_tokens[:lo]
  return Completion(text=text, tokens=tokens, finish_reason=reason,
                    prompt_tokens=row.prompt_tokens)


def generate(model: PhiForCausalLM, prompts: Sequence[str] | Sequence[Sequence[int]], *,
             max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
             top_k: int = 0, stop: Sequence[str] | None = None, num_samples: int = 1,
             seed: int = 0, tokenizer: Tokenizer | None = None,
             eos_token_id: int | None | str = "auto", batch_size: int = 32,
             chunk_size: int = 16) -> list[Completion]:
  """Samples continuations of text (or token-id) prompts.

  Returns len(prompts) * num_samples Completions: the samples of prompt i are at
  [i * num_samples, (i + 1) * num_samples). The tokenizer defaults to
  `model.tokenizer`; eos_token_id 'auto' is the tokenizer's <|endoftext|>, None
  never stops early except on `stop` sequences or max_new_tokens.
  """
  tokenizer = tokenizer or getattr(model, "tokenizer", None)
  if isinstance(prompts, str):
    raise TypeError("prompts must be a list of prompts, not one string")
  if len(prompts) and isinstance(prompts[0], str):
    if tokenizer is None:
      raise ValueError("text prompts need a tokenizer: the model has none; pass tokenizer=")
    token_prompts = tokenizer.encode_batch(list(prompts))
  else:
    token_prompts = [list(map(int, p)) for p in prompts]
  if eos_token_id == "auto":
    eos_token_id = tokenizer.eos_id if tokenizer is not None else None
  params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k)
  repeated = [p for p in token_prompts for _ in range(num_samples)]
  return generate_tokens(model, repeated, [params] * len(repeated),
                         max_new_tokens=max_new_tokens, stop=tuple(stop or ()),
                         eos_token_ids=() if eos_token_id is None else (eos_token_id,),
                         tokenizer=tokenizer, seed=seed, batch_size=batch_size,
                         chunk_size=chunk_size)
