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

  - Pacing to the provider's rate limits (x-ratelimit-* headers, or the configured
    rpm_limit / tpm_limit), on an injectable clock.
  - A batch mode (`mode='batch'`): map_jsonl sends through OpenAI's Batch API and
    records the same lines; resumable after a kill without submitting twice.
  - Cost accounting per mode (online and batch prices) and a budget (`budget_usd`)
    that stops map_jsonl with BudgetReached.

The modules, one job each: `config` (LLMConfig), `cache` (the on-disk cache),
`client` (LLMClient: retries, concurrency cap), `ratelimit` (pacing), `parse` (strict
answer parsing), `fanout` (map_jsonl), `batch` (its Batch API path), `budget` (prices,
accounting, estimates). Everything public is re-exported here.
"""

import importlib

from phi_jax.llm.budget import BudgetReached
from phi_jax.llm.cache import CACHE_FORMAT, ResponseCache, request_key
from phi_jax.llm.config import CALL_OPTIONS, SAMPLING_PARAMS, LLMConfig
from phi_jax.llm.parse import parse_scored_answer

# The client and the fan-out need the `openai` package; they are imported on first use,
# so the settings (LLMConfig) load where it is not installed (a config file, the device
# image).
_LAZY = {name: "client" for name in ("NO_KEY", "LLMClient", "LLMError", "LLMResponse",
                                     "LLMStats")}
_LAZY.update({name: "fanout" for name in ("REQUEST_ERROR_STATUSES", "default_build",
                                          "map_jsonl", "read_done_ids")})


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(f"phi_jax.llm.{_LAZY[name]}"), name)
  raise AttributeError(f"module 'phi_jax.llm' has no attribute {name!r}")

__all__ = [
    "BudgetReached", "CACHE_FORMAT", "CALL_OPTIONS", "LLMClient", "LLMConfig", "LLMError", "LLMResponse",
    "LLMStats", "NO_KEY", "REQUEST_ERROR_STATUSES", "ResponseCache", "SAMPLING_PARAMS",
    "default_build", "map_jsonl", "parse_scored_answer", "read_done_ids", "request_key",
]
