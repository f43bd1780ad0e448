"""Batched autoregressive sampling with a KV cache whose rows are refilled continuously.

`Generator` owns a fixed number of rows (a KV cache with one length per row,
`phi_jax.kv_cache`). Each `step` first admits queued requests into free rows (one
jitted prefill of just those prompts, through the configured attention kernel), then
runs `chunk_size` decode steps of every row in one jitted call (a `lax.scan`), and
then checks, on the host, each row's new tokens for end-of-text, its stop strings and
its `max_new_tokens`. A finished row is free again at the next step, so a long
generation never holds up the requests behind it: `generate_tokens` and the server's
scheduler both run on it.

Cost follows what the rows hold: a decode chunk attends over the smallest bucket
(power of two) of cache slots that holds the longest active row, not the whole cache,
and stop strings are searched in the text of new tokens only. Shapes are bucketed
(rows fixed per Generator, prompt length and admitted count to powers of two, cache
prefix to powers of two), so new prompts reuse compiled programs. Weights run in the
compute dtype: they are cast once per Generator, not on every call.

Per row: greedy (temperature 0), or temperature with top-k and top-p (nucleus)
filtering, with the row's own random key, so a row's samples depend on its seed only,
not on the other rows, the batch size or when it was admitted. Ids at or past the
tokenizer's vocabulary (the model's vocabulary is padded, to 51200 for phi-1) are
never sampled.

Log-probabilities (a request's `logprobs`, and `score_tokens` for given tokens) are
the model's own: the log-softmax of its fp32 logits over the whole (padded)
vocabulary, before temperature, top-k or top-p, so they do not depend on how a token
was picked. The top alternatives are chosen among the tokenizer's ids.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from collections.abc import Callable, Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from phi_jax import fim
from phi_jax import kv_cache as kv_cache_lib
from phi_jax.model import PhiForCausalLM
from phi_jax.settings import (OPERATIONAL, at_least, each, in_range, number_at_least,
                              setting, text)
from phi_jax.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class SampleSettings:
  """`config.sample`: completions of a few prompts from a model of the run."""
  model: str = setting("", "the model to sample (recipe/models.py): '' = the latest model of "
                       "this run, '<stage>[:<step>]', a checkpoint, a transformers dir or a "
                       "hub repo id", check=text())
  prompts: tuple[str, ...] = setting(
      ("def fibonacci(n):\n", 'def is_prime(n: int) -> bool:\n    """'), "text prompts to "
      "complete", check=each(text(), non_empty=True))
  num_samples: int = setting(1, "samples per prompt", check=at_least(1))
  max_new_tokens: int = setting(64, "tokens generated per sample at most", check=at_least(1))
  temperature: float = setting(0.0, "0 = greedy", check=number_at_least(0))
  top_p: float = setting(1.0, "nucleus sampling mass (1 = off)",
                         check=in_range(0, 1, low_open=True))
  top_k: int = setting(0, "top-k filter (0 = off)", check=at_least(0))
  stop: tuple[str, ...] = setting(("\ndef ", "\nclass ", "\nif __name__"),
                                  "text stop sequences", check=each(text()))
  batch_size: int = setting(32, "prompts decoded together", kind=OPERATIONAL,
                            check=at_least(1))

  def inert(self) -> set[str]:
    return {"top_p", "top_k"} if self.temperature == 0 else set()


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
  # With Request.logprobs: one entry per token of `tokens`.
  logprobs: TokenLogprobs | None = None
  # The prompt's own (`score_tokens`), when its caller asked for them (a server's echo).
  prompt_logprobs: TokenLogprobs | None = None


@dataclasses.dataclass
class TokenLogprobs:
  """The model's log-probability of each token of a sequence, and the top alternatives.

  logprobs[i]: log p(token i | the tokens before it); None for a sequence's first token
    (nothing conditions it). top[i]: the `k` most likely (id, logprob) at position i,
    most likely first (None where logprobs[i] is None).
  """
  logprobs: list[float | None]
  top: list[list[tuple[int, float]] | None]

  def __len__(self) -> int:
    return len(self.logprobs)

  def __add__(self, other: TokenLogprobs) -> TokenLogprobs:
    return TokenLogprobs(self.logprobs + other.logprobs, self.top + other.top)

  def cut(self, n: int) -> TokenLogprobs:
    return TokenLogprobs(self.logprobs[:n], self.top[:n])


MAX_TOP_LOGPROBS = 20  # top alternatives a request may ask for per token


def _log_softmax_top(logits_BV: jax.Array, token_B: jax.Array, k: int,
                     vocab_limit: jax.Array | int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(logprob of token_B [B], top-k logprobs [B, k], their ids [B, k]) of fp32 logits.

  The log-softmax is over the whole vocabulary (the model's distribution); the top
  alternatives are among ids < vocab_limit (ids a tokenizer can decode).
  """
  logp_BV = jax.nn.log_softmax(logits_BV.astype(jnp.float32), axis=-1)
  token_logp_B = jnp.take_along_axis(logp_BV, token_B[:, None], axis=-1)[:, 0]
  if k == 0:
    b = logits_BV.shape[0]
    return token_logp_B, jnp.zeros((b, 0), jnp.float32), jnp.zeros((b, 0), jnp.int32)
  ids_V = jnp.arange(logits_BV.shape[-1])
  top_logp_BK, top_ids_BK = jax.lax.top_k(
      jnp.where(ids_V[None] < vocab_limit, logp_BV, -jnp.inf), k)
  return token_logp_B, top_logp_BK, top_ids_BK.astype(jnp.int32)


def filter_logits(scaled_BV: jax.Array, top_p_B: jax.Array, top_k_B: jax.Array) -> jax.Array:
  """Temperature-scaled logits with everything outside the top-k and the nucleus at -inf.

  top-k keeps the k largest (0: all); top-p then keeps the most likely tokens, in
  order, until their (top-k renormalised) mass reaches top_p, always keeping the most
  likely one. top_p = 1 and top_k = 0 return the logits unchanged, bit for bit (the
  cumulative mass can round to 1 before the last token, which must not drop it).
  """
  vocab = scaled_BV.shape[-1]
  sorted_desc = -jnp.sort(-scaled_BV, axis=-1)
  k = jnp.where(top_k_B > 0, jnp.minimum(top_k_B, vocab), vocab)
  kth = jnp.take_along_axis(sorted_desc, (k - 1)[:, None], axis=-1)
  sorted_desc = jnp.where(jnp.arange(vocab)[None] < k[:, None], sorted_desc, -jnp.inf)
  probs = jax.nn.softmax(sorted_desc, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  keep = (mass_before < top_p_B[:, None]) | (top_p_B[:, None] >= 1.0)
  p_threshold = jnp.min(jnp.where(keep, sorted_desc, jnp.inf), axis=-1, keepdims=True)
  threshold = jnp.maximum(kth, p_threshold)
  no_filter = ((top_k_B == 0) & (top_p_B >= 1.0))[:, None]
  return jnp.where(no_filter | (scaled_BV >= threshold), scaled_BV, -jnp.inf)


def first_argmax(x_BV: jax.Array) -> jax.Array:
  """jnp.argmax(x_BV, axis=-1) as int32: the first maximum, or the first NaN if any.

  A max followed by a min over the indices that reach it: two plain reductions, which
  XLA's CPU backend vectorises, where argmax's (value, index) reduction is not; over a
  51200-wide vocabulary that halves the cost of a greedy pick.
  """
  ids_V = jnp.arange(x_BV.shape[-1], dtype=jnp.int32)
  max_B1 = jnp.max(x_BV, axis=-1, keepdims=True)  # NaN when a row holds one
  hits_BV = (x_BV == max_B1) | jnp.isnan(x_BV)
  return jnp.min(jnp.where(hits_BV, ids_V[None], x_BV.shape[-1]), axis=-1)


def sample_logits(logits_BV: jax.Array, rng: jax.Array, temperature_B: jax.Array,
                  top_p_B: jax.Array, top_k_B: jax.Array,
                  vocab_limit: jax.Array | int | None = None) -> jax.Array:
  """Next tokens [B] from fp32 logits; rows with temperature 0 take the argmax.

  rng: one raw PRNG key [2] for the whole batch, or one per row [B, 2].
  vocab_limit: ids >= it are never returned (the model's padded vocabulary rows).
  """
  if vocab_limit is not None:
    ids_V = jnp.arange(logits_BV.shape[-1])
    logits_BV = jnp.where(ids_V[None] < vocab_limit, logits_BV, -jnp.inf)
  greedy_B = first_argmax(logits_BV)

  def stochastic():
    scaled = logits_BV / jnp.maximum(temperature_B, 1e-6)[:, None]
    filtered = filter_logits(scaled, top_p_B, top_k_B)
    if rng.ndim == 2:
      return jax.vmap(jax.random.categorical)(rng, filtered).astype(jnp.int32)
    return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)

  sampled_B = jax.lax.cond(jnp.all(temperature_B == 0), lambda: greedy_B, stochastic)
  return jnp.where(temperature_B == 0, greedy_B, sampled_B)


@functools.lru_cache(maxsize=16)
def _compiled(graphdef: nnx.GraphDef):
  """The jitted prefill and decode programs of one model structure."""

  @functools.partial(jax.jit, donate_argnames=("cache", "logits_BV", "rng_B2"))
  def prefill(state, cache, logits_BV, rng_B2, tokens_NP, mask_NP, rows_N, keys_N2):
    """Prompts into rows rows_N (>= batch: skipped); their first logits and keys."""
    model = nnx.merge(graphdef, state)
    logits_NV, cache = model.prefill(tokens_NP, cache, attention_mask=mask_NP, rows=rows_N)
    return (cache, logits_BV.at[rows_N].set(logits_NV, mode="drop"),
            rng_B2.at[rows_N].set(keys_N2, mode="drop"))

  @functools.partial(jax.jit, static_argnames=("steps", "kv_len", "logprobs"),
                     donate_argnames=("cache", "logits_BV", "rng_B2"))
  def decode(state, cache, logits_BV, rng_B2, done_B, temperature_B, top_p_B, top_k_B,
             eos_ids, vocab_limit, *, steps: int, kv_len: int, logprobs: int | None = None):
    """`steps` tokens of every row, attending over the first kv_len cache slots; with
    `logprobs` (k >= 0) also each token's logprob and the top-k alternatives."""
    model = nnx.merge(graphdef, state)
    layer_states = model.layer_states()  # sliced once per call, not once per step

    def step(carry, _):
      cache, logits_BV, rng_B2, done_B = carry
      keys_B22 = jax.vmap(jax.random.split)(rng_B2)
      rng_B2, key_B2 = keys_B22[:, 0], keys_B22[:, 1]
      token_B = sample_logits(logits_BV, key_B2, temperature_B, top_p_B, top_k_B, vocab_limit)
      token_B = jnp.where(done_B, 0, token_B)
      scores = (None if logprobs is None else
                _log_softmax_top(logits_BV, token_B, logprobs, vocab_limit))
      valid_B = ~done_B
      done_B = done_B | jnp.isin(token_B, eos_ids)
      logits_BV, cache = model.decode(token_B[:, None], cache, attention_mask=valid_B[:, None],
                                      layer_states=layer_states)
      return (cache, logits_BV, rng_B2, done_B), (token_B, valid_B, scores)

    carry = (cache.prefix(kv_len), logits_BV, rng_B2, done_B)
    (prefix, logits_BV, rng_B2, done_B), (tokens_SB, valid_SB, scores_S) = jax.lax.scan(
        step, carry, None, length=steps)
    scores = None if scores_S is None else jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1),
                                                        scores_S)
    return (tokens_SB.T, valid_SB.T, cache.with_prefix(prefix), logits_BV, rng_B2, done_B,
            scores)

  return prefill, decode


@functools.lru_cache(maxsize=16)
def _compiled_score(graphdef: nnx.GraphDef):
  """The jitted scoring program of one model structure (`score_tokens`)."""

  @functools.partial(jax.jit, static_argnames=("k",))
  def score(state, tokens_BT, mask_BT, vocab_limit, *, k: int):
    """Per position t < T - 1: logprob of token t + 1, and the top-k at t + 1."""
    model = nnx.merge(graphdef, state)
    logits_BTV = model(tokens_BT, attention_mask=mask_BT)[:, :-1]
    b, t, v = logits_BTV.shape
    token_lp, top_lp, top_ids = _log_softmax_top(
        logits_BTV.reshape(b * t, v), tokens_BT[:, 1:].reshape(b * t), k, vocab_limit)
    return (token_lp.reshape(b, t), top_lp.reshape(b, t, k), top_ids.reshape(b, t, k))

  return score


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


def inference_state(state: nnx.State, dtype: jnp.dtype) -> nnx.State:
  """The model state with its matmul weights (kernels, embedding) in `dtype`.

  The model casts every kernel to the compute dtype where it is used; holding them in
  it already makes those casts no-ops, so a decode step reads half the bytes of fp32
  weights (bf16) and converts nothing. Biases and LayerNorm parameters stay as they
  are (they are added in fp32), so the logits are bit-identical.

  The embedding is gathered, not multiplied: it holds `dtype`'s values in
  `kv_cache.storage_dtype(dtype)`, fp32 for bf16 on the CPU, whose XLA backend has no
  16-bit float gather and would convert the whole [V, E] table to fp32 on every step.
  """
  embed_dtype = kv_cache_lib.storage_dtype(dtype)

  def cast(path, leaf):
    names = {getattr(key, "key", None) for key in path}
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
      return leaf
    if "embed" in names:
      return leaf.astype(dtype).astype(embed_dtype)
    if "kernel" in names and leaf.dtype != dtype:
      return leaf.astype(dtype)
    return leaf

  return jax.tree_util.tree_map_with_path(cast, state)


def _bucket(n: int, minimum: int) -> int:
  return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def _stop_index(text: str, stop: Sequence[str]) -> int:
  """The index of the earliest stop sequence in text, or -1."""
  hits = [i for i in (text.find(s) for s in stop) if i >= 0]
  return min(hits) if hits else -1


_REPLACEMENT = "\ufffd"
# New tokens a row's incremental text waits for to complete a multi-byte character
# (a UTF-8 character has at most 4 bytes, so byte-level tokens complete it within 4).
_MAX_PENDING_TOKENS = 8


@dataclasses.dataclass(eq=False)
class Request:
  """One row to generate: a token prompt and how to continue it.

  key: the row's raw PRNG key [2] (`row_key`); tag: anything hashable that the
  Generator's callbacks hand back to say which request they are about.
  """
  prompt: Sequence[int]
  params: SamplingParams
  max_new_tokens: int
  key: jax.Array
  tag: Hashable
  stop: tuple[str, ...] = ()
  logprobs: int | None = None  # None: none; k >= 0: each new token's and the top k


class _Row:
  """Host-side state of one admitted request while it decodes."""

  def __init__(self, request: Request):
    self.request = request
    self.tokens: list[int] = []
    self.logprobs = TokenLogprobs([], []) if request.logprobs is not None else None
    self.reported = 0  # tokens already passed to on_chunk
    # The text of tokens[:read_offset], built incrementally for stop strings: only
    # the text of the tokens since prefix_offset is decoded again after a chunk.
    self.text = ""
    self.prefix_offset = self.read_offset = 0
    self.searched = 0  # chars of `text` already searched for stop strings

  @property
  def length(self) -> int:
    """Tokens this row holds in the KV cache (prompt and every fed token)."""
    return len(self.request.prompt) + len(self.tokens)

  def hit_stop(self, tokenizer: Tokenizer) -> bool:
    """Whether a stop string appears in the text of this row's new tokens.

    Decodes only the tokens since the last stable point, and searches only the new
    text (with an overlap of the longest stop string), so a chunk costs what it adds.
    """
    stop = self.request.stop
    prefix_text = tokenizer.decode(self.tokens[self.prefix_offset:self.read_offset])
    new_text = tokenizer.decode(self.tokens[self.prefix_offset:])
    pending = len(self.tokens) - self.read_offset
    if len(new_text) <= len(prefix_text) or (new_text.endswith(_REPLACEMENT) and
                                             pending < _MAX_PENDING_TOKENS):
      return False  # nothing new, or a character still incomplete
    self.text += new_text[len(prefix_text):]
    self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
    start = max(0, self.searched - max(map(len, stop)) + 1)
    self.searched = len(self.text)
    return any(self.text.find(s, start) >= 0 for s in stop)


class Generator:
  """Continuous batching: a fixed number of KV-cache rows, each refilled when it frees.

  Usage (a server's loop, or `generate_tokens`):

      gen = Generator(model, rows=8, chunk_size=16, eos_token_ids=[eos], tokenizer=tok)
      gen.add(Request(prompt, params, max_new_tokens, key=row_key(seed), tag=i))
      while not gen.idle:
        gen.step(on_chunk=..., on_finish=...)    # requests may be added between steps

  Requests wait in a queue until a row is free; a step admits as many as there are
  free rows (one prefill), decodes every admitted row by up to `chunk_size` tokens,
  and reports each row's new tokens and, as soon as it finishes, its Completion. The
  KV cache starts at `max_len` slots and grows (to a power of two) when a row reaches
  its end, so memory follows what the rows hold, not their max_new_tokens. Between
  steps, `cancel` drops a request (its row is free at once) and `resize` changes the
  number of rows (a server sizes the batch to its load).
  """

  def __init__(self, model: PhiForCausalLM, *, rows: int, chunk_size: int = 16,
               max_len: int = 64, eos_token_ids: Sequence[int] = (),
               tokenizer: Tokenizer | None = None):
    if rows < 1 or chunk_size < 1:
      raise ValueError(f"rows and chunk_size must be >= 1, got {rows}, {chunk_size}")
    self.rows = rows
    self.chunk_size = chunk_size
    self.tokenizer = tokenizer
    self.vocab_size = model.config.vocab_size
    # Ids the tokenizer cannot decode (the model's vocabulary is padded) are never sampled.
    self._vocab_limit = jnp.asarray(min(self.vocab_size, tokenizer.vocab_size)
                                    if tokenizer is not None else self.vocab_size, jnp.int32)
    self._eos_ids = jnp.asarray(list(eos_token_ids) or [-1], jnp.int32)
    self._eos_set = set(eos_token_ids)
    graphdef, state = _split(model)
    self._state = inference_state(state, model.config.compute_dtype)
    self._prefill, self._decode = _compiled(graphdef)
    self._score = _compiled_score(graphdef)
    self._cache = model.init_cache(rows, _bucket(max_len, 64))
    self._logits = jnp.zeros((rows, self.vocab_size), jnp.float32)
    self._rng = jnp.zeros((rows, 2), jnp.uint32)
    self._temperature = np.zeros(rows, np.float32)
    self._top_p = np.ones(rows, np.float32)
    self._top_k = np.zeros(rows, np.int32)
    self._slots: list[_Row | None] = [None] * rows
    self._queue: collections.deque[Request] = collections.deque()

  @property
  def max_len(self) -> int:
    """Slots per row of the KV cache now."""
    return self._cache.max_len

  @property
  def active(self) -> int:
    """Rows decoding now."""
    return sum(slot is not None for slot in self._slots)

  @property
  def queued(self) -> int:
    """Requests waiting for a free row."""
    return len(self._queue)

  @property
  def idle(self) -> bool:
    """Nothing admitted and nothing queued."""
    return not self._queue and not self.active

  def add(self, request: Request) -> None:
    """Queues a request; it is admitted into the first free row at a later step."""
    prompt = request.prompt
    if len(prompt) == 0:
      raise ValueError(f"request {request.tag!r}: the prompt is empty")
    if min(prompt) < 0 or max(prompt) >= self.vocab_size:
      raise ValueError(f"request {request.tag!r}: prompt token ids outside "
                       f"[0, {self.vocab_size})")
    if request.max_new_tokens < 1:
      raise ValueError(f"request {request.tag!r}: max_new_tokens must be >= 1, got "
                       f"{request.max_new_tokens}")
    if request.stop and self.tokenizer is None:
      raise ValueError("stop sequences need a tokenizer")
    if request.logprobs is not None and not 0 <= request.logprobs <= MAX_TOP_LOGPROBS:
      raise ValueError(f"request {request.tag!r}: logprobs must be in [0, "
                       f"{MAX_TOP_LOGPROBS}], got {request.logprobs}")
    self._queue.append(request)

  def cancel(self, tag: Hashable) -> bool:
    """Drops the request tagged `tag`: from the queue, or from its row, which is free
    for the next step (nothing more is reported about it). False when there is none."""
    for request in self._queue:
      if request.tag == tag:
        self._queue.remove(request)
        return True
    for r, row in enumerate(self._slots):
      if row is not None and row.request.tag == tag:
        self._slots[r] = None
        return True
    return False

  def resize(self, rows: int) -> None:
    """Sets the number of rows: added rows are free; removed ones must be free (rows
    past the last admitted one). Admitted rows decode on unchanged, so a server can
    size the batch (and the cost of each decode chunk) to its load."""
    if rows < 1:
      raise ValueError(f"rows must be >= 1, got {rows}")
    occupied = [r for r, row in enumerate(self._slots) if row is not None]
    if occupied and occupied[-1] >= rows:
      raise ValueError(f"cannot resize to {rows} rows: row {occupied[-1]} is decoding")
    if rows == self.rows:
      return

    def fit(x, fill=0):
      if rows < x.shape[0]:
        return x[:rows]
      widths = [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1)
      return (jnp.pad if isinstance(x, jax.Array) else np.pad)(x, widths, constant_values=fill)

    cache = self._cache
    self._cache = cache.replace(k=tuple(map(fit, cache.k)), v=tuple(map(fit, cache.v)),
                                lengths=fit(cache.lengths))
    self._logits, self._rng = fit(self._logits), fit(self._rng)
    self._temperature, self._top_k = fit(self._temperature), fit(self._top_k)
    self._top_p = fit(self._top_p, fill=1)
    self._slots = (self._slots + [None] * rows)[:rows]
    self.rows = rows

  def warm_up(self, prompt_len: int, new_tokens: int) -> None:
    """Compiles what a full batch of this generator's rows runs on prompts of
    `prompt_len` tokens generating `new_tokens` tokens each: the prefill of every row at
    once and the decode chunks up to prompt_len + new_tokens cached tokens (every 64-slot
    bucket on the way). End-of-text is ignored, so every row runs to its end. Nothing is
    reported; the generator must be idle and is idle after."""
    if not self.idle:
      raise RuntimeError("warm_up needs an idle generator")
    if prompt_len < 1 or new_tokens < 1:
      raise ValueError(f"prompt_len and new_tokens must be >= 1, got {prompt_len}, "
                       f"{new_tokens}")
    eos_ids, eos_set = self._eos_ids, self._eos_set
    # the same shape and dtype, so the same compiled programs, matching no token
    self._eos_ids, self._eos_set = jnp.full_like(eos_ids, -1), set()
    try:
      for r in range(self.rows):
        self.add(Request(prompt=[0] * prompt_len, params=SamplingParams(temperature=1.0),
                         max_new_tokens=new_tokens, key=row_key(0, r), tag=("warm_up", r)))
      while not self.idle:
        self.step()
    finally:
      self._eos_ids, self._eos_set = eos_ids, eos_set
      self._queue.clear()
      self._slots = [None] * self.rows

  def step(self, on_chunk: Callable[[Hashable, list[int]], None] | None = None,
           on_finish: Callable[[Hashable, Completion], None] | None = None) -> None:
    """Admits queued requests into free rows, then decodes every row by one chunk.

    on_chunk(tag, new_tokens): after the chunk, for each row unfinished before it,
      with its new tokens (within its max_new_tokens, up to and including an
      end-of-text id; text past a stop string is included, the Completion cuts it);
      not called with no new tokens.
    on_finish(tag, completion): as soon as a row finishes, after its last on_chunk.
    """
    self._admit()
    active = [(r, row) for r, row in enumerate(self._slots) if row is not None]
    if not active:
      return
    longest = max(row.request.max_new_tokens for _, row in active)
    steps = min(self.chunk_size, _bucket(longest, 1))
    # Slots this chunk writes: each row's length plus `steps`, less the last token,
    # which is sampled but never fed back (a row's max_new_tokens-th token needs no slot).
    needed = max(min(row.length + steps, len(row.request.prompt) + row.request.max_new_tokens)
                 for _, row in active)
    self._reserve(needed)
    kv_len = min(self.max_len, _bucket(needed, 64))
    done = np.asarray([row is None for row in self._slots])
    # Top alternatives: the most any row asks for, bucketed (one program per bucket);
    # None when no row wants logprobs, so plain decoding computes none.
    wanted = [row.request.logprobs for _, row in active if row.request.logprobs is not None]
    k = None if not wanted else (
        0 if max(wanted) == 0 else min(_bucket(max(wanted), 1), self.vocab_size))
    tokens, valid, self._cache, self._logits, self._rng, done, scores = self._decode(
        self._state, self._cache, self._logits, self._rng, jnp.asarray(done),
        jnp.asarray(self._temperature), jnp.asarray(self._top_p), jnp.asarray(self._top_k),
        self._eos_ids, self._vocab_limit, steps=steps, kv_len=kv_len, logprobs=k)
    tokens, valid, done = np.asarray(tokens), np.asarray(valid), np.asarray(done)
    if scores is not None:
      token_lp, top_lp, top_ids = map(np.asarray, scores)
    for r, row in active:
      row.tokens.extend(tokens[r][valid[r]].tolist())
      if row.logprobs is not None:
        n_top = row.request.logprobs
        row.logprobs.logprobs.extend(token_lp[r][valid[r]].tolist())
        row.logprobs.top.extend(
            list(zip(ids[:n_top].tolist(), lps[:n_top].tolist()))
            for ids, lps in zip(top_ids[r][valid[r]], top_lp[r][valid[r]]))
      max_new = row.request.max_new_tokens
      if on_chunk is not None:
        new_tokens = row.tokens[row.reported:max_new]
        row.reported += len(new_tokens)
        if new_tokens:
          on_chunk(row.request.tag, new_tokens)
      if done[r] or len(row.tokens) >= max_new or (
          row.request.stop and row.hit_stop(self.tokenizer)):
        self._slots[r] = None
        completion = _finish(row, self._eos_set, self.tokenizer)
        if on_finish is not None:
          on_finish(row.request.tag, completion)

  def score(self, prompt: Sequence[int], k: int = 0) -> TokenLogprobs:
    """The model's logprob of each token of `prompt` given the ones before it, and the
    top-k alternatives at each position (`score_tokens`), with this generator's
    weights. Runs at once, beside the rows decoding (it touches no KV cache)."""
    return _score(self._score, self._state, prompt, k, self._vocab_limit)

  def _reserve(self, slots: int) -> None:
    """Grows the KV cache (to a power of two) so every row has `slots` slots."""
    if slots > self.max_len:
      self._cache = self._cache.grow(_bucket(slots, 1))

  def _admit(self) -> None:
    """Prefills queued requests into free rows (one call, bucketed shapes)."""
    free = [r for r, row in enumerate(self._slots) if row is None]
    admitted = [self._queue.popleft() for _ in range(min(len(free), len(self._queue)))]
    if not admitted:
      return
    self._reserve(max(len(q.prompt) for q in admitted))
    n = _bucket(len(admitted), 1)
    prompt_len = min(self.max_len, _bucket(max(len(q.prompt) for q in admitted), 8))
    tokens = np.zeros((n, prompt_len), np.int32)
    mask = np.zeros((n, prompt_len), np.int32)
    rows = np.full((n,), self.rows, np.int32)  # filler entries: row index past the end
    keys = np.zeros((n, 2), np.uint32)
    for i, (r, request) in enumerate(zip(free, admitted)):
      tokens[i, :len(request.prompt)] = request.prompt
      mask[i, :len(request.prompt)] = 1
      rows[i], keys[i] = r, np.asarray(request.key)
      self._slots[r] = _Row(request)
      params = request.params
      self._temperature[r], self._top_p[r], self._top_k[r] = (
          params.temperature, params.top_p, params.top_k)
    self._cache, self._logits, self._rng = self._prefill(
        self._state, self._cache, self._logits, self._rng, jnp.asarray(tokens),
        jnp.asarray(mask), jnp.asarray(rows), jnp.asarray(keys))


def _score(score_fn, state: nnx.State, prompt: Sequence[int], k: int,
           vocab_limit: jax.Array | int) -> TokenLogprobs:
  """`score_tokens` of one token sequence with a compiled scoring program."""
  if not 0 <= k <= MAX_TOP_LOGPROBS:
    raise ValueError(f"k must be in [0, {MAX_TOP_LOGPROBS}], got {k}")
  n = len(prompt)
  if n == 0:
    raise ValueError("cannot score an empty sequence")
  if n == 1:
    return TokenLogprobs([None], [None])
  length = _bucket(n, 8)  # right padding: one program per power-of-two length
  tokens = np.zeros((1, length), np.int32)
  tokens[0, :n] = prompt
  mask = np.zeros((1, length), np.int32)
  mask[0, :n] = 1
  token_lp, top_lp, top_ids = map(np.asarray, score_fn(
      state, jnp.asarray(tokens), jnp.asarray(mask), vocab_limit, k=k))
  logprobs = [None] + token_lp[0, :n - 1].tolist()
  top = [None] + [list(zip(ids.tolist(), lps.tolist()))
                  for ids, lps in zip(top_ids[0, :n - 1], top_lp[0, :n - 1])]
  return TokenLogprobs(logprobs, top)


def score_tokens(model: PhiForCausalLM, tokens: Sequence[int], k: int = 0,
                 tokenizer: Tokenizer | None = None) -> TokenLogprobs:
  """The model's log-probability of each of `tokens` given the ones before it (None for
  the first), and the k most likely alternatives at each position: one forward pass,
  log-softmax of the fp32 logits over the whole vocabulary. Alternatives are among the
  ids of `tokenizer` (default: the model's; none: every id)."""
  tokenizer = tokenizer or getattr(model, "tokenizer", None)
  vocab = model.config.vocab_size
  limit = min(vocab, tokenizer.vocab_size) if tokenizer is not None else vocab
  if len(tokens) and (min(tokens) < 0 or max(tokens) >= vocab):
    raise ValueError(f"token ids outside [0, {vocab})")
  graphdef, state = _split(model)
  state = inference_state(state, model.config.compute_dtype)
  return _score(_compiled_score(graphdef), state, list(tokens), k,
                jnp.asarray(limit, jnp.int32))


def row_key(seed: int, index: int | None = None) -> jax.Array:
  """A row's raw PRNG key [2]: PRNGKey(seed), or fold_in(PRNGKey(seed), index)."""
  key = jax.random.PRNGKey(seed)
  return key if index is None else jax.random.fold_in(key, index)


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
      Ids at or past its vocabulary size are never sampled.
    seed: an int (row i samples with key fold_in(PRNGKey(seed), i)) or one int per
      row (row i samples with PRNGKey(seed[i])); either way a row's samples do not
      depend on the other rows or on batch_size.
    batch_size: the most rows decoded together; the rest wait and take the rows that
      finish (continuous batching, `Generator`), in order.
    chunk_size: decode steps per compiled call; stop strings and callbacks are
      checked between chunks.
    on_chunk: called as on_chunk(i, new_tokens) after each decode chunk, for each
      row i unfinished before it, with the row's new tokens (those within its
      max_new_tokens, up to and including an end-of-text id; text past a stop
      string is included, the Completion cuts it). Not called with no new tokens.
    on_finish: called as on_finish(i, completion) as soon as row i finishes (before
      the rows decoding beside it), after its last on_chunk.

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
  for i, prompt in enumerate(prompts):
    if len(prompt) == 0:
      raise ValueError(f"prompt {i} is empty")
    if min(prompt) < 0 or max(prompt) >= model.config.vocab_size:
      raise ValueError(f"prompt {i} has token ids outside [0, {model.config.vocab_size})")
  if n_rows == 0:
    return []
  generator = Generator(
      model, rows=_bucket(min(batch_size, n_rows), 1), chunk_size=chunk_size,
      max_len=max(len(p) for p in prompts) + chunk_size,
      eos_token_ids=eos_token_ids, tokenizer=tokenizer)
  keys = (jax.vmap(functools.partial(jax.random.fold_in, row_key(int(seed))))(
      jnp.arange(n_rows, dtype=jnp.uint32)) if isinstance(seed, (int, np.integer))
          else jnp.stack([row_key(int(s)) for s in seed]))
  waiting = collections.deque(
      Request(prompt=list(prompt), params=p, max_new_tokens=m, key=key, tag=i, stop=row_stop)
      for i, (prompt, p, m, row_stop, key) in enumerate(
          zip(prompts, params, max_new, stops, keys)))
  completions: list[Completion | None] = [None] * n_rows

  def finished(i: int, completion: Completion) -> None:
    completions[i] = completion
    if on_finish is not None:
      on_finish(i, completion)

  while waiting or not generator.idle:
    # At most batch_size rows at once (the Generator's rows are a power of two above).
    while waiting and generator.active + generator.queued < batch_size:
      generator.add(waiting.popleft())
    generator.step(on_chunk=on_chunk, on_finish=finished)
  return completions  # type: ignore[return-value]


def _finish(row: _Row, eos_ids: set[int], tokenizer: Tokenizer | None) -> Completion:
  """A finished row's Completion: cut at its first end-of-text id or stop string."""
  tokens = row.tokens[:row.request.max_new_tokens]
  stop = row.request.stop
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
                    prompt_tokens=len(row.request.prompt),
                    logprobs=None if row.logprobs is None else row.logprobs.cut(len(tokens)))


def generate(model: PhiForCausalLM, prompts: Sequence[str] | Sequence[Sequence[int]], *,
             max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 1.0,
             top_k: int = 0, stop: Sequence[str] | None = None, num_samples: int = 1,
             seed: int = 0, tokenizer: Tokenizer | None = None,
             eos_token_id: int | None | str = "auto", batch_size: int = 32,
             chunk_size: int = 16, suffix: str | Sequence[str] | None = None,
             fim_mode: str = fim.PSM) -> list[Completion]:
  """Samples continuations of text (or token-id) prompts, or infills between text
  prompts and suffixes.

  Returns len(prompts) * num_samples Completions: the samples of prompt i are at
  [i * num_samples, (i + 1) * num_samples); the randomness of row r (prompt r //
  num_samples) comes from (seed, r) alone, whatever batch_size. The tokenizer defaults to
  `model.tokenizer`; eos_token_id 'auto' is the tokenizer's <|endoftext|>, None
  never stops early except on `stop` sequences or max_new_tokens.

  With `suffix` (one string for every prompt, or one per prompt) each text prompt is
  the prefix of a fill-in-the-middle prompt (`phi_jax.fim.infill_prompt`, in `fim_mode`
  'psm' or 'spm' order) and a Completion's text is the middle: what goes between the
  prompt and its suffix. The model must have been trained with FIM (its tokenizer has
  the sentinel tokens; else ValueError).
  """
  tokenizer = tokenizer or getattr(model, "tokenizer", None)
  if isinstance(prompts, str):
    raise TypeError("prompts must be a list of prompts, not one string")
  if suffix is not None:
    token_prompts = _infill_prompts(prompts, suffix, tokenizer, fim_mode)
  elif len(prompts) and isinstance(prompts[0], str):
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


def _infill_prompts(prefixes: Sequence[str], suffix: str | Sequence[str],
                    tokenizer: Tokenizer | None, mode: str) -> list[list[int]]:
  """The fill-in-the-middle token prompts of text prefixes and their suffix(es)."""
  suffixes = [suffix] * len(prefixes) if isinstance(suffix, str) else list(suffix)
  if len(suffixes) != len(prefixes):
    raise ValueError(f"{len(prefixes)} prompts but {len(suffixes)} suffixes")
  if not all(isinstance(t, str) for t in [*prefixes, *suffixes]):
    raise TypeError("infilling (suffix=) needs text prompts and text suffixes")
  if tokenizer is None:
    raise ValueError("infilling needs a tokenizer: the model has none; pass tokenizer=")
  return [fim.infill_prompt(tokenizer, p, s, mode) for p, s in zip(prefixes, suffixes)]
