"""LLMClient: the `openai` package with retries, a persistent cache and a concurrency cap."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import random
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import openai

from phi_jax.llm.cache import CACHE_FORMAT, ResponseCache, request_key
from phi_jax.llm.config import CALL_OPTIONS, SAMPLING_PARAMS, LLMConfig
from phi_jax.llm.ratelimit import Clock, RateLimiter, RealClock, request_tokens

# The placeholder key sent to servers that need none (vLLM, phi_jax's own server).
NO_KEY = "EMPTY"


class LLMError(RuntimeError):
  """A request failed: a non-retryable status, or retries ran out.

  Attributes:
    status: the HTTP status of the last answer (None: timeout, connection, bad body).
    retryable: whether the cause was transient (the retries ran out).
  """

  def __init__(self, message: str, status: int | None = None, retryable: bool = False):
    super().__init__(message)
    self.status = status
    self.retryable = retryable



@dataclasses.dataclass(frozen=True)
class LLMResponse:
  """One answer: its text, why it ended ('stop', 'length', ...), token usage, cache hit."""

  text: str
  finish_reason: str | None
  usage: dict[str, int]
  cached: bool = False


USAGE_FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _usage(usage: dict) -> dict[str, int]:
  """Token usage in one key order (the cache stores its JSON with sorted keys): a
  response serialises to the same bytes whether it came from the server or the cache."""
  if not usage:
    return {}
  return {k: int(usage.get(k) or 0) for k in USAGE_FIELDS}


@dataclasses.dataclass
class LLMStats:
  """What a client did (thread-safe counters, read them any time)."""

  requests: int = 0          # HTTP requests sent (retries included)
  answers: int = 0           # successful answers from the server
  cache_hits: int = 0
  retries: int = 0
  failures: int = 0          # calls that raised LLMError
  rate_limited: int = 0      # HTTP 429 answers
  prompt_tokens: int = 0     # of answers sent online (cache hits not counted)
  completion_tokens: int = 0
  batch_prompt_tokens: int = 0  # of answers that came in a batch (phi_jax.llm.batch)
  batch_completion_tokens: int = 0



class LLMClient:
  """Calls a model through the `openai` package with retries, a cache and a concurrency cap.

  Thread-safe: share one client between threads (map_jsonl does).
  """

  def __init__(self, config: LLMConfig, clock: Clock | None = None):
    config.require_model()
    self.config = config
    self.clock = clock or RealClock()  # waits (backoff, pacing) and batch polls
    self.limiter = RateLimiter(config.rpm_limit, config.tpm_limit, self.clock)
    self.stats = LLMStats()
    self._stats_lock = threading.Lock()
    self._slots = threading.BoundedSemaphore(config.max_concurrency)
    self._random = random.Random()
    self.cache = ResponseCache(config.cache_dir) if config.cache_dir else None
    base_url = config.base_url or os.environ.get("OPENAI_BASE_URL") or None
    api_key = os.environ.get(config.api_key_env)
    if not api_key:
      if base_url is None:
        raise LLMError(
            f"no API key for OpenAI: set the environment variable {config.api_key_env} "
            f"(named by LLMConfig.api_key_env), or give LLMConfig.base_url of a server "
            f"that needs none")
      api_key = NO_KEY
    # Retries are ours (counted, logged, same policy everywhere): the SDK's are off.
    self._openai = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0,
                                 timeout=config.timeout_s)
    self.base_url = str(self._openai.base_url).rstrip("/")

  def __repr__(self) -> str:
    return f"LLMClient(model={self.config.model!r}, base_url={self.base_url!r})"

  def __enter__(self) -> LLMClient:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    self._openai.close()

  # -- public calls ---------------------------------------------------------------------

  def chat(self, messages: Sequence[Mapping[str, str]], *, refresh: bool = False,
           **overrides: Any) -> LLMResponse:
    """One chat completion (POST {base_url}/chat/completions).

    Args:
      messages: [{"role": "system"|"user"|"assistant", "content": str}, ...].
      refresh: skip the cache lookup (the new answer still replaces the cached one).
      **overrides: per-call `model`, `variant` or sampling parameters (SAMPLING_PARAMS).

    Raises:
      LLMError: a non-retryable status, retries exhausted, or an unusable answer.
    """
    messages = _check_messages(messages)
    return self._call("chat", messages, overrides, refresh)

  def complete(self, prompt: str, *, refresh: bool = False, **overrides: Any) -> LLMResponse:
    """One legacy text completion (POST {base_url}/completions); args as in `chat`."""
    if not isinstance(prompt, str):
      raise TypeError(f"complete: prompt must be a str, got {type(prompt).__name__}")
    if "response_format" in overrides:
      raise ValueError("complete: response_format is a chat option")
    return self._call("completions", prompt, overrides, refresh)

  # -- internals ------------------------------------------------------------------------

  def _count(self, **deltas: int) -> None:
    with self._stats_lock:
      for name, delta in deltas.items():
        setattr(self.stats, name, getattr(self.stats, name) + delta)

  def prepare(self, endpoint: str, inputs: Any, overrides: Mapping[str, Any]
              ) -> tuple[str, str, dict, Any]:
    """(cache key, model, sampling params sent, variant) of one call."""
    unknown = sorted(set(overrides) - set(CALL_OPTIONS))
    if unknown:
      raise ValueError(f"{endpoint}: unknown option(s) {unknown}; known: {list(CALL_OPTIONS)}")
    model = overrides.get("model") or self.config.model
    variant = overrides.get("variant")
    params = self.config.sampling_defaults()
    params.update({k: v for k, v in overrides.items() if k in SAMPLING_PARAMS})
    params = {k: v for k, v in params.items() if v is not None}
    identity = self.config.model_identity if model == self.config.model else ""
    key = request_key(endpoint, f"{model}#{identity}" if identity else model, inputs, params,
                      variant)
    return key, model, params, variant

  def cached(self, key: str) -> LLMResponse | None:
    """The cached answer of a prepared call, or None (counted as a cache hit)."""
    if self.cache is None:
      return None
    entry = self.cache.get(key)
    if entry is None:
      return None
    self._count(cache_hits=1)
    response = entry["response"]
    return LLMResponse(response["text"], response.get("finish_reason"),
                       _usage(response.get("usage") or {}), cached=True)

  def remember(self, key: str, endpoint: str, model: str, inputs: Any,
               params: Mapping[str, Any], variant: Any, response: LLMResponse) -> None:
    """Puts an answer in the cache (online answers, and those of a batch)."""
    if self.cache is None:
      return
    self.cache.put(key, {
        "key": key, "format": CACHE_FORMAT, "endpoint": endpoint, "model": model,
        "request": {"inputs": inputs, "params": dict(params), "variant": variant},
        "response": {"text": response.text, "finish_reason": response.finish_reason,
                     "usage": response.usage},
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    })

  def _call(self, endpoint: str, inputs: Any, overrides: Mapping[str, Any],
            refresh: bool) -> LLMResponse:
    key, model, params, variant = self.prepare(endpoint, inputs, overrides)
    if not refresh:
      response = self.cached(key)
      if response is not None:
        return response
    try:
      response = self._send_with_retries(endpoint, model, inputs, params)
    except LLMError:
      self._count(failures=1)
      raise
    self._count(answers=1, prompt_tokens=response.usage.get("prompt_tokens", 0),
                completion_tokens=response.usage.get("completion_tokens", 0))
    self.remember(key, endpoint, model, inputs, params, variant, response)
    return response

  def _where(self, endpoint: str, model: str) -> str:
    path = "chat/completions" if endpoint == "chat" else "completions"
    return f"{endpoint} request to {self.base_url}/{path} (model {model!r})"

  def _send_with_retries(self, endpoint: str, model: str, inputs: Any,
                         params: Mapping[str, Any]) -> LLMResponse:
    where = self._where(endpoint, model)
    attempts = self.config.max_retries + 1
    last_error, last_status = "", None
    tokens = request_tokens(inputs, params.get("max_tokens"))
    for attempt in range(attempts):
      retry_after = None
      try:
        with self._slots:
          charged, ticket = self.limiter.acquire(tokens)
          try:
            self._count(requests=1)
            try:
              response, headers = self._send(endpoint, model, inputs, params)
            except openai.APIStatusError as e:
              self.limiter.observe(e.response.headers)
              raise
            self.limiter.observe(headers, charged, ticket)
          finally:
            self.limiter.done(ticket)
          return response
      except openai.APIStatusError as e:
        status, detail = e.status_code, _error_detail(e)
        if status != 429 and status < 500:
          raise LLMError(f"{where}: HTTP {status}: {detail}", status=status) from None
        last_error, last_status = f"HTTP {status}: {detail}", status
        retry_after = _retry_after_s(e.response.headers)
        if status == 429:
          self._count(rate_limited=1)
          self.limiter.pause(retry_after if retry_after is not None
                             else self.config.backoff_initial_s)
      except openai.APITimeoutError:
        last_error, last_status = f"timed out after {self.config.timeout_s}s", None
      except openai.APIConnectionError as e:
        cause = e.__cause__ or e
        last_error, last_status = f"connection error: {cause}", None
      except (ValueError, MalformedResponse) as e:  # the body was not a completion
        last_error, last_status = f"malformed response: {e}", None
      if attempt + 1 < attempts:
        self._count(retries=1)
        self.clock.sleep(self._backoff_s(attempt, retry_after))
    raise LLMError(f"{where}: gave up after {attempts} attempt(s) "
                   f"(LLMConfig.max_retries={self.config.max_retries}); last error: {last_error}",
                   status=last_status, retryable=True)

  def _backoff_s(self, attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with equal jitter; a server's Retry-After is honoured (capped)."""
    delay = min(self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** attempt)
    with self._stats_lock:
      delay = self._random.uniform(delay / 2, delay)
    if retry_after is not None:
      delay = max(delay, min(retry_after, self.config.backoff_max_s))
    return delay

  def _send(self, endpoint: str, model: str, inputs: Any, params: Mapping[str, Any]
            ) -> tuple[LLMResponse, Mapping[str, str]]:
    """One HTTP request: the answer and the response's headers (rate limits)."""
    if endpoint == "chat":
      raw = self._openai.chat.completions.with_raw_response.create(
          model=model, messages=inputs, **params)
    else:
      raw = self._openai.completions.with_raw_response.create(model=model, prompt=inputs,
                                                              **params)
    return completion_response(endpoint, raw.parse()), raw.headers

  # -- the Batch API's transport (phi_jax.llm.batch) ------------------------------------

  @property
  def openai(self) -> openai.OpenAI:
    """The underlying `openai` client (the Files and Batches endpoints)."""
    return self._openai

  def count_batch_answer(self, usage: Mapping[str, int]) -> None:
    self._count(answers=1, batch_prompt_tokens=usage.get("prompt_tokens", 0),
                batch_completion_tokens=usage.get("completion_tokens", 0))


def completion_response(endpoint: str, result: Any) -> LLMResponse:
  """The LLMResponse of a chat completion or completion: an `openai` object, or its JSON
  body (a batch's output line); MalformedResponse when it is not one."""
  if isinstance(result, Mapping):
    kind = (openai.types.chat.ChatCompletion if endpoint == "chat"
            else openai.types.Completion)
    try:
      result = kind.model_validate(dict(result))
    except ValueError as e:  # pydantic's ValidationError is a ValueError
      raise MalformedResponse(f"not a {endpoint} completion: {e}") from None
  choices = getattr(result, "choices", None)
  if not choices:
    raise MalformedResponse(f"no choices in the answer: {str(result)[:300]}")
  choice = choices[0]
  if endpoint == "chat":
    message = getattr(choice, "message", None)
    if message is None:
      raise MalformedResponse("the first choice has no message")
    text = message.content or ""
  else:
    text = getattr(choice, "text", None)
    if text is None:
      raise MalformedResponse("the first choice has no text")
  usage = {}
  if getattr(result, "usage", None) is not None:
    usage = _usage({k: getattr(result.usage, k, 0) for k in USAGE_FIELDS})
  return LLMResponse(text, choice.finish_reason, usage, cached=False)


class MalformedResponse(Exception):
  """A 200 answer that is not a completion."""


def _check_messages(messages: Sequence[Mapping[str, str]]) -> list[dict]:
  if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
    raise TypeError("chat: messages must be a non-empty list of {'role', 'content'} dicts")
  checked = []
  for i, message in enumerate(messages):
    if (not isinstance(message, Mapping) or not isinstance(message.get("role"), str) or
        not isinstance(message.get("content"), str)):
      raise TypeError(f"chat: messages[{i}] must be a dict with str 'role' and 'content', "
                      f"got {message!r:.200}")
    checked.append(dict(message))
  return checked


def _error_detail(error: openai.APIStatusError) -> str:
  body = error.body
  if isinstance(body, Mapping):
    inner = body.get("error", body)
    if isinstance(inner, Mapping) and inner.get("message"):
      return str(inner["message"])[:1000]
    return json.dumps(body)[:1000]
  if body:
    return str(body)[:1000]
  return str(error.message)[:1000]


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
  """Seconds a server asked us to wait (retry-after-ms or retry-after in seconds)."""
  for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
    value = headers.get(name)
    if value is None:
      continue
    try:
      seconds = float(value) * scale
    except ValueError:
      continue  # an HTTP date: fall back to our own backoff
    if 0 <= seconds < 3600:
      return seconds
  return None

