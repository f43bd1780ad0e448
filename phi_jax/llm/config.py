"""LLMConfig: where and how to call a model (no secrets: the key is read from an env var)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from phi_jax.config import known_fields
from phi_jax.settings import OPERATIONAL, setting

# Sampling parameters a call may set (config defaults or per-call overrides).
SAMPLING_PARAMS = ("temperature", "top_p", "max_tokens", "stop", "seed", "presence_penalty",
                   "frequency_penalty", "response_format", "extra_body")
CALL_OPTIONS = ("model", "variant") + SAMPLING_PARAMS


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
    model_identity: part of the cache key beside `model` (see the field).
    mode, batch_*: online requests, or OpenAI's Batch API (phi_jax/llm/batch.py).
    rpm_limit, tpm_limit: pacing (phi_jax/llm/ratelimit.py), beside the provider's
      x-ratelimit-* headers.
    price_*, batch_price_*, budget_usd: the cost accounting and the budget
      (phi_jax/llm/budget.py).

  A client needs `model` set (LLMClient checks it); '' is a config section's "no
  endpoint". Where and how requests are sent is operational (phi_jax/settings.py); which
  model answers and how it samples is output-determining.
  """

  def require_model(self, where: str = "LLMConfig") -> None:
    if not self.model.strip():
      raise ValueError(f"{where}: field 'model' = '': must name the model to call (e.g. "
                       f"'gpt-4o', or the name a vLLM server serves)")

  model: str = setting("", "the model name the server knows (e.g. 'gpt-4o'); '' = no "
                       "endpoint configured (offline)")
  base_url: str | None = setting(None, "API root, e.g. 'http://127.0.0.1:8000/v1'; '' = "
                                 "OPENAI_BASE_URL, else OpenAI")
  api_key_env: str = setting("OPENAI_API_KEY", "environment variable holding the API key",
                             kind=OPERATIONAL)
  max_concurrency: int = setting(8, "requests in flight at once", kind=OPERATIONAL)
  max_retries: int = setting(6, "retries of 429 / 5xx / timeouts, with exponential backoff",
                             kind=OPERATIONAL)
  timeout_s: float = setting(120.0, "seconds per request", kind=OPERATIONAL)
  temperature: float | None = setting(0.0, "sampling temperature (None = the server's)")
  top_p: float | None = setting(None, "nucleus sampling mass (None = the server's)")
  max_tokens: int | None = setting(1024, "completion tokens per answer at most")
  seed: int | None = setting(None, "the request's sampling seed (None = not sent)")
  stop: tuple[str, ...] = setting((), "stop sequences")
  cache_dir: str | None = setting(None, "response cache ('' = WORKDIR/llm_cache in a run)",
                                  kind=OPERATIONAL)
  backoff_initial_s: float = setting(1.0, "the first retry waits about this long; each "
                                     "retry doubles it", kind=OPERATIONAL)
  backoff_max_s: float = setting(60.0, "the most one wait between retries may last",
                                 kind=OPERATIONAL)
  parse_retries: int = setting(2, "answers a parser rejects are asked again this often",
                               kind=OPERATIONAL)
  model_identity: str = setting(
      "", "what identifies the answering model beyond its name (phi_jax's local teacher: "
      "its checkpoint's fingerprint, or the random model's shape and seed); part of the "
      "cache key, so another model behind the same name is asked afresh")

  mode: str = setting("online", "'online': one HTTP request per answer; 'batch': OpenAI's "
                      "Batch API (JSONL uploaded to /v1/files, /v1/batches polled; cheaper, "
                      "answered within 24h); the answers recorded are the same",
                      kind=OPERATIONAL)
  batch_max_requests: int = setting(50_000, "requests per batch at most (the Batch API "
                                    "takes 50,000)", kind=OPERATIONAL)
  batch_poll_s: float = setting(60.0, "seconds between two looks at the submitted batches",
                                kind=OPERATIONAL)
  batch_retry: str = setting("batch", "requests that failed or expired inside a batch are "
                             "asked again 'batch' (in a new batch) or 'online'",
                             kind=OPERATIONAL)
  rpm_limit: int = setting(0, "requests per minute at most (0 = only as the provider's "
                           "x-ratelimit-* headers say)", kind=OPERATIONAL)
  tpm_limit: int = setting(0, "tokens per minute at most, counted as OpenAI counts them "
                           "(prompt characters / 4 + max_tokens); 0 = only as the "
                           "provider's headers say", kind=OPERATIONAL)
  price_prompt_per_1m: float = setting(0.0, "USD per 1M prompt tokens answered online "
                                       "(0 = unknown)", kind=OPERATIONAL)
  price_completion_per_1m: float = setting(0.0, "USD per 1M completion tokens answered "
                                           "online (0 = unknown)", kind=OPERATIONAL)
  batch_price_prompt_per_1m: float = setting(0.0, "USD per 1M prompt tokens answered in a "
                                             "batch (OpenAI: half the online price; 0 = "
                                             "unknown)", kind=OPERATIONAL)
  batch_price_completion_per_1m: float = setting(0.0, "USD per 1M completion tokens "
                                                 "answered in a batch (0 = unknown)",
                                                 kind=OPERATIONAL)
  budget_usd: float = setting(0.0, "the accounted cost of a node's answers never exceeds "
                              "this many USD: each request's most cost (prompt + max_tokens) "
                              "is reserved before it is sent; once the next request does not "
                              "fit the node stops, left incomplete; raising it resumes "
                              "(0 = no budget; needs the prices, and max_tokens on every request)",
                              kind=OPERATIONAL)

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

    if not isinstance(self.model, str):
      fail("model", "must be the name of the model to call")
    if self.base_url is not None and (not isinstance(self.base_url, str) or
                                      not self.base_url.startswith(("http://", "https://"))):
      fail("base_url", "must be an http(s) URL such as 'http://127.0.0.1:8000/v1', or None")
    if not isinstance(self.api_key_env, str) or not self.api_key_env.strip():
      fail("api_key_env", "must name an environment variable")
    if self.api_key_env.startswith(("sk-", "Bearer ")) or len(self.api_key_env) > 64:
      fail("api_key_env", "looks like a key, not the name of the variable holding one; "
           "never put keys in configs")
    for field, low in (("max_concurrency", 1), ("max_retries", 0), ("parse_retries", 0),
                       ("batch_max_requests", 1), ("rpm_limit", 0), ("tpm_limit", 0)):
      value = getattr(self, field)
      if not isinstance(value, int) or isinstance(value, bool) or value < low:
        fail(field, f"must be an integer >= {low}")
    for field in ("timeout_s", "backoff_initial_s", "backoff_max_s", "batch_poll_s"):
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
    if self.mode not in ("online", "batch"):
      fail("mode", "must be 'online' or 'batch'")
    if self.batch_retry not in ("online", "batch"):
      fail("batch_retry", "must be 'online' or 'batch'")
    if self.batch_max_requests > 50_000:
      fail("batch_max_requests", "the Batch API takes at most 50,000 requests per batch")
    for field in ("price_prompt_per_1m", "price_completion_per_1m",
                  "batch_price_prompt_per_1m", "batch_price_completion_per_1m", "budget_usd"):
      value = getattr(self, field)
      if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        fail(field, "must be a number >= 0")
    if self.budget_usd:
      prices = ["price_prompt_per_1m", "price_completion_per_1m"]
      if self.mode == "batch":
        prices += ["batch_price_prompt_per_1m", "batch_price_completion_per_1m"]
      unset = [p for p in prices if not getattr(self, p)]
      if unset:
        fail("budget_usd", f"a budget needs the prices of what is sent: set {', '.join(unset)}")

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

