"""Batched autoregressive sampling with the KV cache.

Prompts are left-padded into a batch; prefill runs the whole prompt once, then decoding
runs `chunk_size` steps per jitted call (a `lax.scan`), after which the host checks stop
sequences and stops early once every row is finished. Shapes are bucketed (batch and
prompt length to powers of two, generation length to whole chunks), so a new prompt
reuses a compiled program instead of recompiling.

Per row: greedy (temperature 0), or temperature with top-k and top-p (nucleus)
filtering, with the row's own random key, so a row's samples depend on its seed only,
not on the other rows or the batch size. A row finishes at an end-of-text token, at one
of its stop sequences, or after its `max_new_tokens`. Callbacks report each row's new
tokens after every chunk and its Completion as soon as it finishes (for streaming
servers).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

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
  """Next tokens [B] from fp32 logits; rows with temperature 0 take the argmax.

  rng: one raw PRNG key [2] for the whole batch, or one per row [B, 2].
  """
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
    if rng.ndim == 2:
      return jax.vmap(jax.random.categorical)(rng, filtered).astype(jnp.int32)
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
  def decode(state, cache, logits_BV, rng_B2, done_B, temperature_B, top_p_B, top_k_B,
             eos_ids, *, steps: int):
    model = nnx.merge(graphdef, state)

    def step(carry, _):
      cache, logits_BV, rng_B2, done_B = carry
      keys_B22 = jax.vmap(jax.random.split)(rng_B2)
      rng_B2, key_B2 = keys_B22[:, 0], keys_B22[:, 1]
      token_B = sample_logits(logits_BV, key_B2, temperature_B, top_p_B, top_k_B)
      token_B = jnp.where(done_B, 0, token_B)
      valid_B = ~done_B
      done_B = done_B | jnp.isin(token_B, eos_ids)
      logits_BV, cache = model.decode(token_B[:, None], cache, attention_mask=valid_B[:, None])
      return (cache, logits_BV, rng_B2, done_B), (token_B, valid_B)

    carry, (tokens_SB, valid_SB) = jax.lax.scan(step, (cache, logits_BV, rng_B2, done_B),
                                                None, length=steps)
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

  def __init__(self, prompt_len: int, max_new_tokens: int, stop: tuple[str, ...]):
    self.tokens: list[int] = []
    self.prompt_tokens = prompt_len
    self.max_new_tokens = max_new_tokens
    self.stop = stop
    self.reported = 0  # tokens already passed to on_chunk
    self.finished = False


def _per_row_stops(stop: Sequence[str] | Sequence[Sequence[str]],
                   n: int) -> list[tuple[str, ...]]:
  """One tuple of stop strings per row, from shared or per-row stop strings."""
  if isinstance(stop, str):
    raise TypeError(f"stop must be a sequence of strings, not the string {stop!r}")
  if all(isinstance(s, str) for s in stop):
    rows = [tuple(stop)] * n
  else:
    if len(stop) != n:
      raise ValueError(f"{n} prompts but {len(stop)} per-row stop lists")
    rows = []
    for i, row_stop in enumerate(stop):
      if isinstance(row_stop, str) or not all(isinstance(s, str) for s in row_stop):
        raise TypeError(f"stop[{i}] must be a sequence of strings, got {row_stop!r}")
      rows.append(tuple(row_stop))
  if any(s == "" for row in rows for s in row):
    raise ValueError("stop strings must be non-empty")
  return rows


def _per_row_ints(value: int | Sequence[int], n: int, name: str) -> list[int]:
  """One int per row, from one shared int or a sequence of n ints."""
  if isinstance(value, (int, np.integer)):
    return [int(value)] * n
  if len(value) != n:
    raise ValueError(f"{n} prompts but {len(value)} values of {name}")
  return [int(v) for v in value]


def _row_keys(seed: int | Sequence[int], start: int, batch: int) -> jax.Array:
  """Raw PRNG keys [batch, 2] of the rows start .. start + batch - 1.

  A shared int seed gives row i the key fold_in(PRNGKey(seed), i); per-row seeds give
  row i PRNGKey(seed[i]) (filler rows past the last prompt get seed 0).
  """
  if isinstance(seed, (int, np.integer)):
    base = jax.random.PRNGKey(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(
        jnp.arange(start, start + batch, dtype=jnp.uint32))
  seeds = list(seed[start:start + batch])
  seeds += [0] * (batch - len(seeds))
  return jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])


def generate_tokens(model: PhiForCausalLM, prompts: Sequence[Sequence[int]],
                    params: Sequence[SamplingParams], *,
                    max_new_tokens: int | Sequence[int],
                    stop: Sequence[str] | Sequence[Sequence[str]] = (),
                    eos_token_ids: Sequence[int] = (), tokenizer: Tokenizer | None = None,
                    seed: int | Sequence[int] = 0, batch_size: int = 32,
                    chunk_size: int = 16,
                    on_chunk: Callable[[int, list[int]], None] | None = None,
                    on_finish: Callable[[int, Completion], None] | None = None,
                    ) -> list[Completion]:
  """Samples one completion per (token prompt, SamplingParams) pair, in order.

  Args:
    model: the model; its tokenizer is not used (pass `tokenizer`).
    prompts: token-id prompts, each non-empty.
    params: one SamplingParams per prompt.
    max_new_tokens: the most tokens to generate, for every row (an int) or per row.
    stop: stop strings: one sequence of strings for every row, or one sequence of
      strings per row. A row's text is cut before the earliest of its stop strings.
    eos_token_ids: end-of-text ids; a row stops after generating one (kept in
      `tokens`, not in `text`).
    tokenizer: decodes `text` and finds stop strings; required when there are any.
    seed: an int (row i samples with key fold_in(PRNGKey(seed), i)) or one int per
      row (row i samples with PRNGKey(seed[i])); either way a row's samples do not
      depend on the other rows or on batch_size.
    batch_size: rows decoded together; more rows run in consecutive batches.
    chunk_size: decode steps per compiled call; stop strings and callbacks are
      checked between chunks.
    on_chunk: called as on_chunk(i, new_tokens) after each decode chunk, for each
      row i unfinished before it, with the row's new tokens (those within its
      max_new_tokens, up to and including an end-of-text id; text past a stop
      string is included, the Completion cuts it). Not called with no new tokens.
    on_finish: called as on_finish(i, completion) as soon as row i finishes (before
      the rest of its batch), after its last on_chunk.

  Returns:
    One Completion per prompt, in order.
  """
  n_rows = len(prompts)
  if n_rows != len(params):
    raise ValueError(f"{n_rows} prompts but {len(params)} sampling params")
  stops = _per_row_stops(stop, n_rows)
  if any(stops) and tokenizer is None:
    raise ValueError("stop sequences need a tokenizer")
  max_new = _per_row_ints(max_new_tokens, n_rows, "max_new_tokens")
  if any(m < 1 for m in max_new):
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if not isinstance(seed, (int, np.integer)) and len(seed) != n_rows:
    raise ValueError(f"{n_rows} prompts but {len(seed)} seeds")
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
  eos_set = set(eos_token_ids)
  completions: list[Completion | None] = [None] * n_rows
  for start in range(0, n_rows, batch_size):
    batch_prompts = prompts[start:start + batch_size]
    batch_params = params[start:start + batch_size]
    rows = [_Row(len(p), m, s) for p, m, s in zip(
        batch_prompts, max_new[start:start + batch_size], stops[start:start + batch_size])]
    n = len(rows)
    batch_max_new = max(row.max_new_tokens for row in rows)
    # A short generation runs a shorter chunk (a power of two), not chunk_size steps.
    steps = min(chunk_size, _bucket(batch_max_new, 1))
    gen_len = _bucket(math.ceil(batch_max_new / steps), 1) * steps
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
    rng = _row_keys(seed, start, batch)
    done = jnp.asarray(np.arange(batch) >= n)
    generated = 0
    while generated < batch_max_new:
      chunk_tokens, chunk_valid, cache, logits, rng, done = decode(
          state, cache, logits, rng, done, temperature, top_p, top_k, eos_ids, steps=steps)
      generated += steps
      chunk_tokens, chunk_valid = np.asarray(chunk_tokens), np.asarray(chunk_valid)
      host_done = np.asarray(done).copy()
      for r, row in enumerate(rows):
        if row.finished:
          continue
        row.tokens.extend(chunk_tokens[r][chunk_valid[r]].tolist())
        if on_chunk is not None:
          new_tokens = row.tokens[row.reported:row.max_new_tokens]
          row.reported += len(new_tokens)
          if new_tokens:
            on_chunk(start + r, new_tokens)
        if host_done[r] or len(row.tokens) >= row.max_new_tokens or (
            row.stop and _stop_index(tokenizer.decode(row.tokens), row.stop) >= 0):
          row.finished = host_done[r] = True
          completion = completions[start + r] = _finish(row, eos_set, tokenizer)
          if on_finish is not None:
            on_finish(start + r, completion)
      if all(row.finished for row in rows):
        break
      done = jnp.asarray(host_done)
  return completions  # type: ignore[return-value]


def _finish(row: _Row, eos_ids: set[int], tokenizer: Tokenizer | None) -> Completion:
  tokens = row.tokens[:row.max_new_tokens]
  stop = row.stop
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
  [i * num_samples, (i + 1) * num_samples); the randomness of row r (prompt r //
  num_samples) comes from (seed, r) alone, whatever batch_size. The tokenizer defaults to
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
