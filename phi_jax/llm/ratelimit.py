"""Pacing requests to a provider's rate limits (requests and tokens per minute).

OpenAI (and servers that copy it) answer every request with its limits and what is
left of them:

    x-ratelimit-limit-requests: 500        x-ratelimit-limit-tokens: 30000
    x-ratelimit-remaining-requests: 499    x-ratelimit-remaining-tokens: 29000
    x-ratelimit-reset-requests: 120ms      x-ratelimit-reset-tokens: 2s

A limit is a bucket that holds `limit` and refills at `limit` per minute; a request
takes one request and its tokens, counted as OpenAI counts them before answering:
prompt characters / 4 plus max_tokens (`request_tokens`). `RateLimiter` keeps its own
copy of both buckets: `acquire` waits until the request fits, then takes it; `observe`
learns the limits from the headers (the smaller of those and the configured
`rpm_limit` / `tpm_limit`), lowers its levels to what the provider says is left (the
remaining count, and the reset time: a bucket full again in t seconds holds at most
limit - limit * t / 60 now), and
learns how the provider's token count compares with the estimate (a provider that
counts more tokens than the estimate would otherwise answer every few requests with a
429); a 429's Retry-After pauses every thread (`pause`), so a limit that is hit once is
not hit again by each request in flight, and counts future requests' tokens 5% higher. Without configured limits and before the first
headers nothing is paced.

Time comes from a `Clock` (`now`, `sleep`), so the tests run on a fake clock.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

CHARS_PER_TOKEN = 4.0  # OpenAI's rule of thumb for English text and code
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_NEGLIGIBLE_S = 1e-6
# A request starts when the tokens bucket holds 2% more than its estimate: the estimate
# is learnt, and a request that only just fits by our count may not by the provider's.
TOKEN_MARGIN = 0.02


class Clock(Protocol):
  def now(self) -> float: ...

  def sleep(self, seconds: float) -> None: ...


class RealClock:
  """time.monotonic and time.sleep."""

  def now(self) -> float:
    return time.monotonic()

  def sleep(self, seconds: float) -> None:
    if seconds > 0:
      time.sleep(seconds)


def request_tokens(inputs: Any, max_tokens: int | None) -> int:
  """The tokens a request counts against a TPM limit before it is answered: its
  prompt's characters / CHARS_PER_TOKEN plus its max_tokens (OpenAI's rule)."""
  if isinstance(inputs, str):
    chars = len(inputs)
  else:
    chars = sum(len(str(m.get("content", ""))) for m in inputs)
  return int(chars / CHARS_PER_TOKEN) + int(max_tokens or 0)


def parse_duration(text: str) -> float | None:
  """Seconds of an OpenAI reset header: '1s', '6m0s', '120ms', '1h2m3.5s', or a bare
  number of seconds; None when unreadable."""
  text = str(text).strip()
  try:
    return float(text)
  except ValueError:
    pass
  parts = _DURATION.findall(text)
  if not parts or "".join(n + u for n, u in parts) != text:
    return None
  return sum(float(n) * _UNITS[u] for n, u in parts)


class _Bucket:
  """One limit: `capacity` per minute, refilled continuously; `level` is what is left."""

  def __init__(self, capacity: float, now: float):
    self.capacity = capacity
    self.level = capacity
    self.updated = now

  def refill(self, now: float) -> None:
    if self.capacity:
      self.level = min(self.capacity,
                       self.level + self.capacity / 60.0 * (now - self.updated))
    self.updated = now

  def wait_s(self, amount: float) -> float:
    """Seconds until `amount` fits (0 now); an amount above the capacity waits for a
    full bucket."""
    if not self.capacity:
      return 0.0
    need = min(amount, self.capacity) - self.level
    return max(0.0, need / (self.capacity / 60.0))


def _header(headers: Mapping[str, str], name: str) -> float | None:
  value = headers.get(name)
  if value is None:
    return None
  try:
    return float(value)
  except ValueError:
    return None


class RateLimiter:
  """Paces requests to RPM and TPM limits (configured, or learnt from headers)."""

  def __init__(self, rpm_limit: int = 0, tpm_limit: int = 0, clock: Clock | None = None):
    self.clock = clock or RealClock()
    self.configured = {"requests": rpm_limit, "tokens": tpm_limit}
    now = self.clock.now()
    self._buckets = {kind: _Bucket(limit, now) for kind, limit in self.configured.items()}
    self._lock = threading.Lock()
    self._paused_until = 0.0
    self._scale = 1.0  # the provider's token count over the estimate, learnt
    self._in_step = False  # our copy equals the provider's buckets (set when alone)
    self._tickets = 0  # acquisitions so far (the last one's ticket)
    self._alone: dict[int, bool] = {}  # ticket -> none other was in flight at acquire
    self.waited_s = 0.0  # total time acquire() made callers wait

  @property
  def limits(self) -> dict[str, float]:
    return {kind: bucket.capacity for kind, bucket in self._buckets.items()}

  def acquire(self, tokens: int) -> tuple[int, int]:
    """Waits until one request of about `tokens` tokens fits both limits, then counts
    it; returns the token count it was charged and its ticket (to pass to `observe`,
    then to `done` once the request ended, however it ended)."""
    waited = 0.0
    while True:
      with self._lock:
        now = self.clock.now()
        charge = math.ceil(tokens * self._scale)
        for bucket in self._buckets.values():
          bucket.refill(now)
        wait = max(self._paused_until - now, self._buckets["requests"].wait_s(1),
                   self._buckets["tokens"].wait_s(charge * (1 + TOKEN_MARGIN)))
        if wait <= _NEGLIGIBLE_S:  # what float rounding leaves of a wait that was made
          self._buckets["requests"].level -= 1
          self._buckets["tokens"].level -= charge
          self.waited_s += waited
          alone = not self._alone  # no other acquired request is unfinished
          self._tickets += 1
          self._alone[self._tickets] = alone
          return charge, self._tickets
      self.clock.sleep(wait)
      waited += wait

  def observe(self, headers: Mapping[str, str], charged: float | None = None,
              ticket: int | None = None) -> None:
    """Learns from a response's x-ratelimit-* headers. `charged`, `ticket`: what
    acquire() gave this request. When no other request was in flight from its
    acquisition to now (none before it unfinished, none acquired after it), the
    provider's count includes every request our copy counted, so our copy of the
    buckets can be set to the provider's, and (when the copy was in step before) the
    difference is this request's miscount of tokens."""
    with self._lock:
      alone = (ticket is not None and self._alone.get(ticket, False) and
               ticket == self._tickets)
      now = self.clock.now()
      in_step = self._in_step and alone and charged is not None
      self._in_step = False
      for kind in ("requests", "tokens"):
        limit = _header(headers, f"x-ratelimit-limit-{kind}")
        remaining = _header(headers, f"x-ratelimit-remaining-{kind}")
        bucket = self._buckets[kind]
        bucket.refill(now)
        if limit is not None and limit > 0:
          configured = self.configured[kind]
          bucket.capacity = min(limit, configured) if configured else limit
        if remaining is None or not bucket.capacity:
          continue
        if kind == "tokens" and in_step and charged:
          actual = charged + bucket.level - remaining
          if actual > 0:
            ratio = min(4.0, max(0.25, actual / (charged / self._scale)))
            self._scale = 0.5 * self._scale + 0.5 * ratio
        bucket.level = remaining if alone else min(bucket.level, remaining)
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}", ""))
        if reset is not None:  # full again in `reset` seconds: at most this much left now
          bucket.level = min(bucket.level, bucket.capacity - bucket.capacity / 60.0 * reset)
      self._in_step = alone and charged is not None

  def done(self, ticket: int) -> None:
    """The request of `ticket` ended (answered or failed): it is no longer in flight."""
    with self._lock:
      self._alone.pop(ticket, None)

  def pause(self, seconds: float) -> None:
    """No request starts for `seconds` (a 429's Retry-After): for every thread."""
    with self._lock:
      self._paused_until = max(self._paused_until, self.clock.now() + seconds)
      # a 429 of a request that fitted our copy: the provider counts more than we do
      self._scale = min(4.0, self._scale * 1.05)
      self._in_step = False
      for bucket in self._buckets.values():
        bucket.level = min(bucket.level, 0.0)


__all__: Sequence[str] = ("CHARS_PER_TOKEN", "Clock", "RateLimiter", "RealClock",
                          "parse_duration", "request_tokens")
