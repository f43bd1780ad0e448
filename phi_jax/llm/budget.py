"""What requests cost: token prices per mode, the cost accounted from recorded answers,
estimates before sending, and the budget that stops sending.

Every answer map_jsonl records carries what was paid for it, `"spent": {mode:
{"prompt_tokens", "completion_tokens"}}` (mode 'online' or 'batch'; every paid attempt,
parse retries included; nothing for a cache hit), and a batch's journal keeps what its
failed attempts were paid. The accounted cost of an output is the sum of those at the
prices of LLMConfig (`price_*` online, `batch_price_*` in a batch), so it survives a kill
and a restart: a node's budget (`budget_usd`) is compared with everything its output
file has paid, not with one process's spending.

Estimates (`estimate_usd`) count prompt tokens as characters / CHARS_PER_TOKEN (4, the
rule of thumb OpenAI gives for English and code) and completion tokens at their
configured maxima, so they are an upper bound on completions.

The budget is never exceeded: before a request is sent, its most possible cost is
reserved beside what was paid (`max_prompt_tokens` + its max_tokens, at the prices of
the mode it is sent in, times the attempts a parser may ask for), and on its answer the
reservation is replaced by what was paid. A request that does not fit waits for those
in flight to release theirs; when none is in flight and it still does not fit, sending
stops.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from phi_jax.llm.config import LLMConfig
from phi_jax.llm.ratelimit import CHARS_PER_TOKEN

MODES = ("online", "batch")


class BudgetReached(RuntimeError):
  """The accounted cost reached the budget: nothing more was sent (the output so far is
  kept; raising the budget resumes). Attributes: spent_usd, budget_usd, unsent."""

  def __init__(self, message: str, spent_usd: float, budget_usd: float, unsent: int):
    super().__init__(message)
    self.spent_usd, self.budget_usd, self.unsent = spent_usd, budget_usd, unsent


def prices(config: LLMConfig, mode: str) -> tuple[float, float]:
  """(USD per 1M prompt tokens, per 1M completion tokens) of answers in `mode`."""
  if mode == "batch":
    return config.batch_price_prompt_per_1m, config.batch_price_completion_per_1m
  return config.price_prompt_per_1m, config.price_completion_per_1m


def add_spent(spent: dict, mode: str, usage: Mapping[str, int] | None) -> dict:
  """Adds one paid answer's usage to a `spent` dict (in place; returned)."""
  if not usage:
    return spent
  total = spent.setdefault(mode, {"prompt_tokens": 0, "completion_tokens": 0})
  for name in ("prompt_tokens", "completion_tokens"):
    total[name] += int(usage.get(name) or 0)
  return spent


def cost_usd(config: LLMConfig, spent: Mapping[str, Mapping[str, int]] | None) -> float:
  """USD of a `spent` dict at the config's prices."""
  total = 0.0
  for mode, usage in (spent or {}).items():
    prompt, completion = prices(config, mode)
    total += (usage.get("prompt_tokens", 0) * prompt +
              usage.get("completion_tokens", 0) * completion) / 1e6
  return total


def merge(spents: Iterable[Mapping[str, Mapping[str, int]] | None]) -> dict:
  total: dict = {}
  for spent in spents:
    for mode, usage in (spent or {}).items():
      add_spent(total, mode, usage)
  return total


def prompt_tokens(inputs: Any) -> int:
  """The estimated prompt tokens of messages or a prompt (characters / 4)."""
  if isinstance(inputs, str):
    chars = len(inputs)
  else:
    chars = sum(len(str(m.get("content", ""))) for m in inputs)
  return round(chars / CHARS_PER_TOKEN)


def max_prompt_tokens(inputs: Any) -> int:
  """The most prompt tokens a provider can count for messages or a prompt: the
  characters of their JSON, non-ASCII escaped. A token of a byte-level BPE tokenizer
  (OpenAI's, and most served models') covers at least one byte, an escaped character
  is at least as long as its UTF-8 bytes, and the quotes, keys and braces of a
  message's JSON (over 30 characters) outnumber the tokens a chat template adds to it."""
  return len(json.dumps(inputs))


def max_cost_usd(config: LLMConfig, mode: str, inputs: Any, max_tokens: int | None,
                 attempts: int = 1) -> float:
  """The most `attempts` answers to one request can cost in `mode` (what the budget
  reserves before sending it). Raises ValueError without max_tokens: a completion
  without a maximum has no most cost."""
  if not max_tokens:
    raise ValueError("budget_usd: a request without max_tokens has no most cost; set "
                     "max_tokens (LLMConfig.max_tokens or the call's)")
  return attempts * cost_usd(config, {mode: {"prompt_tokens": max_prompt_tokens(inputs),
                                              "completion_tokens": int(max_tokens)}})


def estimate_usd(config: LLMConfig, prompt: int, completion: int) -> float:
  """USD of `prompt` + `completion` tokens sent in the config's mode."""
  return cost_usd(config, {config.mode: {"prompt_tokens": prompt,
                                         "completion_tokens": completion}})


def describe(config: LLMConfig, requests: int, prompt: int, completion: int) -> str:
  """One line: requests, estimated tokens and cost (when the prices are known)."""
  text = (f"~{prompt:,} prompt + up to {completion:,} completion tokens in {requests:,} "
          f"request(s) ({config.mode})")
  if any(prices(config, config.mode)):
    text += f", ~${estimate_usd(config, prompt, completion):,.2f}"
  else:
    text += " (prices unset: no cost)"
  if config.budget_usd:
    text += f"; budget ${config.budget_usd:,.2f}"
  return text
