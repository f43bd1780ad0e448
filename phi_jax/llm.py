"""phi_jax's one LLM client: the OpenAI API, any compatible server, cached and resumable.

Everything in phi_jax that asks a language model something (grading open problems,
annotating the educational value of code, writing synthetic textbooks and exercises)
goes through `LLMClient`, which speaks the OpenAI API with the official `openai`
package to any compatible base URL: OpenAI itself, a vLLM server, phi_jax's own server.

    config = LLMConfig(model="gpt-4o", cache_dir="workdir/llm_cache")
    client = LLMClient(config)
    client.chat([{"role": "user", "content": "Hi"}]).text
    client.complete("def fib(n):", max_tokens=64, stop=["\\ndef "])  # legacy /completions

    map_jsonl(client, requests, "out.jsonl", build=..., parse=...)   # many, concurrently

What it adds to the plain `openai` client:

  - Retries: 429, 5xx, timeouts, connection errors and malformed response bodies are
    retried `max_retries` times with exponential backoff and jitter (honouring
    Retry-After); any other 4xx raises `LLMError` at once, naming status and message.
  - A persistent cache: one JSON file per request, `cache_dir/<k[:2]>/<k>.json`, where
    k = sha256 of (endpoint, model, messages or prompt, sampling parameters, variant),
    written atomically (temp file + rename), so threads and processes can share it and
    a rerun pays for nothing twice. The base URL is not part of the key (the same model
    behind another URL answers from the cache); the API key is never written anywhere:
    configs name the environment variable that holds it (`api_key_env`).
  - Bounded concurrency: at most `max_concurrency` requests in flight per client, from
    any number of threads.
  - `map_jsonl`: a fan-out over many requests that appends one JSON line per request to
    an output file as results arrive, resumes where a killed run stopped, validates
    answers with a `parse` callback (retrying malformed ones, never guessing), and
    shows progress on stderr.

Two threads asking the identical uncached request at the same moment both pay for it
(the cache is filled by whichever answer lands last); map_jsonl's ids are distinct.

`variant` (a call option, part of the cache key but not sent) tells apart several
samples of one request at a temperature above zero, e.g. `variant=i` for the i-th of
n synthetic exercises from the same prompt.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import openai

from phi_jax import atomic
from phi_jax.config import known_fields

try:
  import fcntl
except ImportError:  # not POSIX: no lock against two runs on one output
  fcntl = None

CACHE_FORMAT = 1
# Sampling parameters a call may set (config defaults or per-call overrides).
SAMPLING_PARAMS = ("temperature", "top_p", "max_tokens", "stop", "seed", "presence_penalty",
                   "frequency_penalty", "response_format", "extra_body")
CALL_OPTIONS = ("model", "variant") + SAMPLING_PARAMS
# Statuses that concern one request (too long, invalid), not the whole run: map_jsonl
# records them as that request's error and goes on. Any other LLMError stops it.
REQUEST_ERROR_STATUSES = (400, 413, 422)
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
class LLMConfig:
  """Where and how to call a model. Holds no secret: the key is read from `api_key_env`.

  Attributes:
    model: the model name the server knows ('gpt-4o', or what a vLLM server serves).
    base_url: the API root, e.g. 'http://127.0.0.1:8000/v1'; None (or '') = the
      OPENAI_BASE_URL environment variable, else OpenAI's.
    api_key_env: name of the environment variable holding the API key. When it is
      unset and a base URL is given, the placeholder 'EMPTY' is sent (local servers
      need no key); against OpenAI itself a missing key is an error.
    max_concurrency: requests in flight at once (per client; map_jsonl's thread count).
    max_retries: retries of a transient failure (429, 5xx, timeout, connection) before
      giving up; 0 = try once.
    timeout_s: seconds one HTTP request may take.
    temperature, top_p, max_tokens, seed: sampling defaults; None = not sent (the
      server's default), per-call overrides win.
    stop: stop sequences (default none).
    cache_dir: directory of the response cache; None (or '') = no cache.
    backoff_initial_s: the first retry waits about this long; each retry doubles it.
    backoff_max_s: the most one wait between retries may last.
    parse_retries: map_jsonl: how many times an answer that `parse` rejects is asked
      again (bypassing the cache) before it is recorded as an error.
  """

  model: str = ""
  base_url: str | None = None
  api_key_env: str = "OPENAI_API_KEY"
  max_concurrency: int = 8
  max_retries: int = 6
  timeout_s: float = 120.0
  temperature: float | None = 0.0
  top_p: float | None = None
  max_tokens: int | None = 1024
  seed: int | None = None
  stop: tuple[str, ...] = ()
  cache_dir: str | None = None
  backoff_initial_s: float = 1.0
  backoff_max_s: float = 60.0
  parse_retries: int = 2

  def __post_init__(self):
    for field in ("base_url", "cache_dir"):  # ml_collections configs spell None as ''
      if getattr(self, field) == "":
        object.__setattr__(self, field, None)
    if isinstance(self.stop, str):
      object.__setattr__(self, "stop", (self.stop,))
    elif not isinstance(self.stop, tuple):
      object.__setattr__(self, "stop", tuple(self.stop))
    self.validate()

  def validate(self, where: str = "LLMConfig") -> None:
    """Raises ValueError naming the field when a value is invalid."""

    def fail(field: str, message: str):
      raise ValueError(f"{where}: field '{field}' = {getattr(self, field)!r}: {message}")

    if not isinstance(self.model, str) or not self.model.strip():
      fail("model", "must name the model to call (e.g. 'gpt-4o', or the name a vLLM "
           "server serves)")
    if self.base_url is not None and (not isinstance(self.base_url, str) or
                                      not self.base_url.startswith(("http://", "https://"))):
      fail("base_url", "must be an http(s) URL such as 'http://127.0.0.1:8000/v1', or None")
    if not isinstance(self.api_key_env, str) or not self.api_key_env.strip():
      fail("api_key_env", "must name an environment variable")
    if self.api_key_env.startswith(("sk-", "Bearer ")) or len(self.api_key_env) > 64:
      fail("api_key_env", "looks like a key, not the name of the variable holding one; "
           "never put keys in configs")
    for field, low in (("max_concurrency", 1), ("max_retries", 0), ("parse_retries", 0)):
      value = getattr(self, field)
      if not isinstance(value, int) or isinstance(value, bool) or value < low:
        fail(field, f"must be an integer >= {low}")
    for field in ("timeout_s", "backoff_initial_s", "backoff_max_s"):
      value = getattr(self, field)
      if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        fail(field, "must be a positive number of seconds")
    if self.temperature is not None and not 0 <= self.temperature <= 2:
      fail("temperature", "must be in [0, 2] or None")
    if self.top_p is not None and not 0 < self.top_p <= 1:
      fail("top_p", "must be in (0, 1] or None")
    if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or
                                        self.max_tokens <= 0):
      fail("max_tokens", "must be a positive integer or None")
    if self.seed is not None and not isinstance(self.seed, int):
      fail("seed", "must be an integer or None")
    if not all(isinstance(s, str) and s for s in self.stop):
      fail("stop", "must be a sequence of non-empty strings")

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any], where: str = "config.llm") -> LLMConfig:
    """Builds an LLMConfig from a dict / ConfigDict, rejecting unknown fields by name."""
    values = known_fields(cls, values, where)
    try:
      return cls(**values)
    except ValueError as e:
      raise ValueError(str(e).replace("LLMConfig", where, 1)) from None

  def replace(self, **changes: Any) -> LLMConfig:
    return dataclasses.replace(self, **changes)

  def sampling_defaults(self) -> dict[str, Any]:
    """The configured sampling parameters that are sent (None ones are not)."""
    params = {"temperature": self.temperature, "top_p": self.top_p,
              "max_tokens": self.max_tokens, "seed": self.seed,
              "stop": list(self.stop) or None}
    return {k: v for k, v in params.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class LLMResponse:
  """One answer: its text, why it ended ('stop', 'length', ...), token usage, cache hit."""

  text: str
  finish_reason: str | None
  usage: dict[str, int]
  cached: bool = False


@dataclasses.dataclass
class LLMStats:
  """What a client did (thread-safe counters, read them any time)."""

  requests: int = 0          # HTTP requests sent (retries included)
  answers: int = 0           # successful answers from the server
  cache_hits: int = 0
  retries: int = 0
  failures: int = 0          # calls that raised LLMError
  prompt_tokens: int = 0
  completion_tokens: int = 0


class ResponseCache:
  """Answers on disk, one JSON file per request key: `<root>/<key[:2]>/<key>.json`.

  Files are written whole (temp + rename), so a reader sees a complete entry or none;
  concurrent writers of one key write the same kind of entry and the last rename wins.
  An unreadable entry (edited by hand, disk trouble) is a miss and gets rewritten.
  """

  def __init__(self, root: str):
    self.root = root
    os.makedirs(root, exist_ok=True)

  def path(self, key: str) -> str:
    return os.path.join(self.root, key[:2], key + ".json")

  def get(self, key: str) -> dict | None:
    try:
      with open(self.path(key), encoding="utf-8") as f:
        entry = json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError) as e:
      print(f"llm cache: ignoring unreadable entry {self.path(key)}: {e}", file=sys.stderr)
      return None
    if not isinstance(entry, dict) or entry.get("key") != key or "response" not in entry:
      return None
    return entry

  def put(self, key: str, entry: dict) -> None:
    atomic.write_text(self.path(key), json.dumps(entry, ensure_ascii=False, sort_keys=True))


def request_key(endpoint: str, model: str, inputs: Any, params: Mapping[str, Any],
                variant: Any = None) -> str:
  """The cache key: sha256 of what determines an answer (not the base URL, not the key)."""
  doc = {"format": CACHE_FORMAT, "endpoint": endpoint, "model": model, "inputs": inputs,
         "params": dict(params), "variant": variant}
  data = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
  return hashlib.sha256(data.encode("utf-8")).hexdigest()


class LLMClient:
  """Calls a model through the `openai` package with retries, a cache and a concurrency cap.

  Thread-safe: share one client between threads (map_jsonl does).
  """

  def __init__(self, config: LLMConfig):
    self.config = config
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

  def _call(self, endpoint: str, inputs: Any, overrides: Mapping[str, Any],
            refresh: bool) -> LLMResponse:
    unknown = sorted(set(overrides) - set(CALL_OPTIONS))
    if unknown:
      raise ValueError(f"{endpoint}: unknown option(s) {unknown}; known: {list(CALL_OPTIONS)}")
    model = overrides.get("model") or self.config.model
    variant = overrides.get("variant")
    params = self.config.sampling_defaults()
    params.update({k: v for k, v in overrides.items() if k in SAMPLING_PARAMS})
    params = {k: v for k, v in params.items() if v is not None}
    key = request_key(endpoint, model, inputs, params, variant)
    if self.cache is not None and not refresh:
      entry = self.cache.get(key)
      if entry is not None:
        self._count(cache_hits=1)
        response = entry["response"]
        return LLMResponse(response["text"], response.get("finish_reason"),
                           dict(response.get("usage") or {}), cached=True)
    try:
      response = self._send_with_retries(endpoint, model, inputs, params)
    except LLMError:
      self._count(failures=1)
      raise
    self._count(answers=1, prompt_tokens=response.usage.get("prompt_tokens", 0),
                completion_tokens=response.usage.get("completion_tokens", 0))
    if self.cache is not None:
      self.cache.put(key, {
          "key": key, "format": CACHE_FORMAT, "endpoint": endpoint, "model": model,
          "request": {"inputs": inputs, "params": params, "variant": variant},
          "response": {"text": response.text, "finish_reason": response.finish_reason,
                       "usage": response.usage},
          "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
      })
    return response

  def _where(self, endpoint: str, model: str) -> str:
    path = "chat/completions" if endpoint == "chat" else "completions"
    return f"{endpoint} request to {self.base_url}/{path} (model {model!r})"

  def _send_with_retries(self, endpoint: str, model: str, inputs: Any,
                         params: Mapping[str, Any]) -> LLMResponse:
    where = self._where(endpoint, model)
    attempts = self.config.max_retries + 1
    last_error, last_status = "", None
    for attempt in range(attempts):
      retry_after = None
      try:
        with self._slots:
          self._count(requests=1)
          return self._send(endpoint, model, inputs, params)
      except openai.APIStatusError as e:
        status, detail = e.status_code, _error_detail(e)
        if status != 429 and status < 500:
          raise LLMError(f"{where}: HTTP {status}: {detail}", status=status) from None
        last_error, last_status = f"HTTP {status}: {detail}", status
        retry_after = _retry_after_s(e.response.headers)
      except openai.APITimeoutError:
        last_error, last_status = f"timed out after {self.config.timeout_s}s", None
      except openai.APIConnectionError as e:
        cause = e.__cause__ or e
        last_error, last_status = f"connection error: {cause}", None
      except (ValueError, _MalformedResponse) as e:  # the body was not a completion
        last_error, last_status = f"malformed response: {e}", None
      if attempt + 1 < attempts:
        self._count(retries=1)
        time.sleep(self._backoff_s(attempt, retry_after))
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

  def _send(self, endpoint: str, model: str, inputs: Any,
            params: Mapping[str, Any]) -> LLMResponse:
    if endpoint == "chat":
      result = self._openai.chat.completions.create(model=model, messages=inputs, **params)
    else:
      result = self._openai.completions.create(model=model, prompt=inputs, **params)
    choices = getattr(result, "choices", None)
    if not choices:
      raise _MalformedResponse(f"no choices in the answer: {str(result)[:300]}")
    choice = choices[0]
    if endpoint == "chat":
      message = getattr(choice, "message", None)
      if message is None:
        raise _MalformedResponse("the first choice has no message")
      text = message.content or ""
    else:
      text = getattr(choice, "text", None)
      if text is None:
        raise _MalformedResponse("the first choice has no text")
    usage = {}
    if getattr(result, "usage", None) is not None:
      usage = {k: int(getattr(result.usage, k) or 0)
               for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return LLMResponse(text, choice.finish_reason, usage, cached=False)


class _MalformedResponse(Exception):
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


# -- map_jsonl ------------------------------------------------------------------------------


_FENCED = re.compile(r"```(?:json)?[ \t]*\n(.*?)\n?[ \t]*```", re.DOTALL)


def parse_scored_answer(text: str, key: str, max_value: int,
                        what: str = "answer") -> tuple[int, str]:
  """(value, reason) from an answer that must be exactly {key: int 0..max_value,
  "reason": str}; ValueError (naming what is wrong) otherwise.

  Strict, for graders and annotators: one enclosing ```json fence is tolerated, but a
  number is never read out of prose. A map_jsonl `parse` callback raising this gets the
  request asked again, then recorded as unanswered.
  """
  body = text.strip()
  fenced = _FENCED.fullmatch(body)
  if fenced:
    body = fenced.group(1).strip()
  try:
    answer = json.loads(body)
  except ValueError as e:
    raise ValueError(f"the answer is not a JSON object ({e}): {text[:200]!r}") from None
  if not isinstance(answer, dict):
    raise ValueError(f"the answer is JSON but not an object: {text[:200]!r}")
  if set(answer) != {key, "reason"}:
    raise ValueError(f"the {what} must have exactly the keys '{key}' and 'reason', got "
                     f"{sorted(answer)}")
  value = answer[key]
  if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= max_value:
    raise ValueError(f"'{key}' must be an integer from 0 to {max_value}, got {value!r}")
  if not isinstance(answer["reason"], str) or not answer["reason"].strip():
    raise ValueError("'reason' must be a non-empty string")
  return value, answer["reason"].strip()


def default_build(request: Mapping[str, Any]) -> dict[str, Any]:
  """A request that already holds its call: 'messages' or 'prompt', plus 'params'."""
  spec = {k: request[k] for k in ("messages", "prompt") if k in request}
  spec.update(request.get("params") or {})
  return spec


def read_done_ids(path: str, repair: bool = True) -> set:
  """The ids recorded in a map_jsonl output (streamed); repairs a partial last line.

  A run killed mid-write leaves a last line without its newline: it is cut off (when
  `repair`) or ignored. Any other unreadable line is corruption, reported as file:line.
  """
  ids: set = set()
  if not os.path.exists(path):
    return ids
  complete_end = 0  # bytes up to the end of the last complete line
  with open(path, "rb") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.endswith(b"\n"):
        if repair:
          print(f"map_jsonl: {path}: dropping a partial last line ({len(line)} bytes) left "
                f"by an interrupted run", file=sys.stderr)
        break
      complete_end += len(line)
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except ValueError as e:
        raise ValueError(f"{path}:{lineno}: not a JSON line ({e}); the file is corrupt: "
                         f"fix or delete that line to resume") from None
      if not isinstance(record, dict) or "id" not in record:
        raise ValueError(f"{path}:{lineno}: a record without 'id'; not a map_jsonl output?")
      ids.add(record["id"])
  if repair and complete_end < os.path.getsize(path):
    os.truncate(path, complete_end)
  return ids


def _drop_error_records(path: str) -> int:
  """Rewrites `path` (atomically) without its error records; returns how many."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=directory)
  dropped = 0
  try:
    with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
      for line in src:
        if line.strip() and "error" in json.loads(line):
          dropped += 1
        else:
          dst.write(line)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return dropped


@contextlib.contextmanager
def _exclusive(path: str):
  """Holds an exclusive lock on `path` + '.lock' (POSIX), so two runs cannot interleave."""
  with open(path + ".lock", "w") as lock:
    if fcntl is not None:
      try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except OSError:
        raise RuntimeError(f"map_jsonl: another process is writing {path} (its lock file "
                           f"{path}.lock is held)") from None
    yield


class _Progress:
  """One line on stderr: done/total, rate, cache hits, errors (rewritten on a tty)."""

  def __init__(self, desc: str, total: int | None, enabled: bool, stream=None):
    self.desc, self.total, self.enabled = desc, total, enabled
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
    self.start = time.monotonic()
    self.last = 0.0

  def update(self, done: int, resumed: int, cache_hits: int, errors: int,
             final: bool = False) -> None:
    if not self.enabled:
      return
    now = time.monotonic()
    if not final and now - self.last < (0.5 if self.tty else 15.0):
      return
    self.last = now
    elapsed = max(now - self.start, 1e-9)
    rate = done / elapsed
    total = "?" if self.total is None else str(self.total)
    line = (f"{self.desc}: {resumed + done}/{total} ({resumed} resumed) "
            f"{rate:.1f}/s, cache hits {cache_hits}, errors {errors}")
    if self.total is not None and rate > 0 and not final:
      line += f", eta {max(self.total - resumed - done, 0) / rate:.0f}s"
    if final:
      line += f", {elapsed:.1f}s"
    if self.tty:
      self.stream.write("\r" + line + ("\n" if final else ""))
    else:
      self.stream.write(line + "\n")
    self.stream.flush()


def map_jsonl(client: LLMClient, requests: Iterable[Mapping[str, Any]], out_path: str, *,
              build: Callable[[Mapping[str, Any]], Mapping[str, Any]] = default_build,
              parse: Callable[[str, Mapping[str, Any]], Any] | None = None,
              keep: Sequence[str] = (), parse_retries: int | None = None,
              retry_errors: bool = False, progress: bool = True, desc: str = "llm",
              total: int | None = None) -> dict[str, Any]:
  """Sends many requests concurrently; appends one JSON line per request to `out_path`.

  Resumable: ids already in `out_path` are skipped, so a rerun after a crash (or a
  kill) asks only for the missing ones; a partial last line left by a killed run is
  cut off first. Lines are appended whole and flushed as results arrive, in
  completion order. `out_path + '.lock'` is held (flock) while a run writes, so a
  second process on the same output fails at once instead of interleaving. The file
  grows as work is done: what marks a finished job is the caller's (e.g. eval.grade
  writes its summary, atomically, only after map_jsonl returned).

  Args:
    client: the LLMClient (its max_concurrency bounds the thread pool).
    requests: dicts, each with a unique 'id' (str or int).
    out_path: the JSONL output. Each line is one of
      {"id", <keep fields>, "raw": answer text, "result": parse(raw) (when `parse`),
       "finish_reason", "usage", "cached", "attempts"}
      {"id", <keep fields>, "error": why, "raw": last answer or null, "attempts"}
    build: request -> the call: {"messages": [...]} (chat) or {"prompt": str}
      (completions), plus optional call options (temperature, variant, ...).
    parse: (answer text, request) -> a JSON-serialisable result; raises ValueError
      for an unusable answer, which is then asked again `parse_retries` times
      (bypassing the cache) and finally recorded as an error, never guessed.
    keep: request fields copied into each output line (e.g. 'task_id').
    parse_retries: default: client.config.parse_retries.
    retry_errors: first drop the error records of `out_path`, so those ids are retried.
    progress: print a progress line on stderr.
    desc: the progress line's label.
    total: the number of requests, for the progress line (default: len(requests)).

  Returns:
    {"total", "resumed", "done", "errors", "cache_hits", "seconds", "out_path"} for
    this call ("done" and "errors" count lines written by this call).

  Raises:
    LLMError: a failure that is not one request's fault (auth, unknown model, retries
      exhausted); what finished before it is kept in `out_path`. Errors of one request
      (HTTP 400/413/422: too long, invalid) are recorded as its error line instead.
  """
  parse_retries = client.config.parse_retries if parse_retries is None else parse_retries
  if total is None and hasattr(requests, "__len__"):
    total = len(requests)  # type: ignore[arg-type]
  out_dir = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(out_dir, exist_ok=True)
  with _exclusive(out_path):
    if retry_errors and os.path.exists(out_path):
      read_done_ids(out_path)  # repair first
      _drop_error_records(out_path)
    done_ids = read_done_ids(out_path)
    return _map_jsonl_locked(client, requests, out_path, build, parse, keep, parse_retries,
                             done_ids, _Progress(desc, total, progress))


def _map_jsonl_locked(client, requests, out_path, build, parse, keep, parse_retries,
                      done_ids, meter) -> dict[str, Any]:
  """map_jsonl's work, with the output locked and the finished ids known."""
  workers = client.config.max_concurrency
  counts = {"resumed": 0, "done": 0, "errors": 0, "cache_hits": 0}
  seen: set = set()
  start = time.monotonic()

  def next_request(iterator):
    for index, request in enumerate(iterator):
      if not isinstance(request, Mapping) or "id" not in request:
        raise ValueError(f"map_jsonl: request #{index} has no 'id': {request!r:.200}")
      rid = request["id"]
      if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise ValueError(f"map_jsonl: request #{index}: 'id' must be a str or int, "
                         f"got {rid!r:.100}")
      if rid in seen:
        raise ValueError(f"map_jsonl: duplicate request id {rid!r}")
      seen.add(rid)
      if rid in done_ids:
        counts["resumed"] += 1
        continue
      yield request

  def run_one(request: Mapping[str, Any]) -> dict:
    return _map_one(client, request, build, parse, keep, parse_retries)

  pending_requests = next_request(iter(requests))
  with open(out_path, "a", encoding="utf-8", newline="\n") as out, \
      concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix="llm") as pool:
    in_flight: set = set()
    try:
      while True:
        for request in pending_requests:
          in_flight.add(pool.submit(run_one, request))
          if len(in_flight) >= 2 * workers:
            break
        if not in_flight:
          break
        finished, in_flight = concurrent.futures.wait(
            in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in finished:
          record = future.result()
          out.write(json.dumps(record, ensure_ascii=False) + "\n")
          out.flush()
          counts["errors" if "error" in record else "done"] += 1
          counts["cache_hits"] += bool(record.get("cached"))
        meter.update(counts["done"] + counts["errors"], counts["resumed"],
                     counts["cache_hits"], counts["errors"])
    except BaseException:
      for future in in_flight:
        future.cancel()
      raise
    finally:
      meter.update(counts["done"] + counts["errors"], counts["resumed"], counts["cache_hits"],
                   counts["errors"], final=True)
  return {"total": len(seen), "out_path": out_path,
          "seconds": round(time.monotonic() - start, 3), **counts}


def _map_one(client: LLMClient, request: Mapping[str, Any], build, parse,
             keep: Sequence[str], parse_retries: int) -> dict:
  """One request of map_jsonl: its output record (a result or an error)."""
  rid = request["id"]
  record: dict[str, Any] = {"id": rid}
  for field in keep:
    if field not in request:
      raise ValueError(f"map_jsonl: request {rid!r} has no field {field!r} (named in keep)")
    record[field] = request[field]
  spec = dict(build(request))
  if ("messages" in spec) == ("prompt" in spec):
    raise ValueError(f"map_jsonl: build() of request {rid!r} must give exactly one of "
                     f"'messages' (chat) or 'prompt' (completions), got keys {sorted(spec)}")
  raw, problem = None, ""
  for attempt in range(parse_retries + 1):
    try:
      if "messages" in spec:
        response = client.chat(spec["messages"], refresh=attempt > 0,
                               **{k: v for k, v in spec.items() if k != "messages"})
      else:
        response = client.complete(spec["prompt"], refresh=attempt > 0,
                                   **{k: v for k, v in spec.items() if k != "prompt"})
    except LLMError as e:
      if e.status in REQUEST_ERROR_STATUSES:
        return {**record, "error": str(e), "raw": raw, "attempts": attempt + 1}
      raise
    raw = response.text
    meta = {"finish_reason": response.finish_reason, "usage": response.usage,
            "cached": response.cached, "attempts": attempt + 1}
    if parse is None:
      return {**record, "raw": raw, **meta}
    try:
      result = parse(raw, request)
    except ValueError as e:
      problem = f"{type(e).__name__}: {e}"
      continue
    return {**record, "result": result, "raw": raw, **meta}
  return {**record, "error": f"unusable answer after {parse_retries + 1} attempt(s): {problem}",
          "raw": raw, "attempts": parse_retries + 1}
