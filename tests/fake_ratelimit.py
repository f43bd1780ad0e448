"""A fake teacher that enforces OpenAI's kind of rate limits, on any clock.

    teacher = LimitedTeacher(clock, rpm=600, tpm=100_000)
    with FakeOpenAI(teacher) as server: ...   # tests/fake_openai.py

It keeps a bucket of requests and one of tokens, each holding its per-minute limit and
refilled continuously (as OpenAI's are), answers with x-ratelimit-* headers (limit,
remaining, reset), and answers 429 with Retry-After when a request does not fit. It
counts a request's tokens its own way (two per word of the prompt, plus max_tokens),
not the client's characters / 4, as a provider's tokenizer differs from the client's
estimate. Thread-safe (the server answers on many threads). The tests run it on a fake
clock; bench/pacing.py on the real one (phi_jax.llm.ratelimit.RealClock).
"""

from __future__ import annotations

import threading

from tests.fake_openai import Reply, Status


class LimitedTeacher:
  """A FakeOpenAI responder enforcing RPM and TPM buckets on `clock`.

  Attributes:
    accepted: (time, tokens) of every request answered, in order.
    rejected: how many requests were answered 429.
  """

  def __init__(self, clock, rpm: int, tpm: int, headers: bool = True):
    self.clock, self.headers = clock, headers
    self.limits = {"requests": rpm, "tokens": tpm}
    self._level = dict(self.limits)
    self._updated = clock.now()
    self._lock = threading.Lock()
    self.accepted: list[tuple[float, int]] = []
    self.rejected = 0

  @staticmethod
  def tokens(body) -> int:
    words = sum(len(m["content"].split()) for m in body.get("messages", ())) or \
        len(str(body.get("prompt", "")).split())
    return 2 * words + body.get("max_tokens", 0)

  def levels(self) -> dict[str, float]:
    """What each bucket holds now: what may be sent at once."""
    with self._lock:
      self._refill(self.clock.now())
      return dict(self._level)

  def _refill(self, now: float) -> None:
    for kind, limit in self.limits.items():
      self._level[kind] = min(limit, self._level[kind] + limit / 60 * (now - self._updated))
    self._updated = now

  def _headers(self) -> dict[str, str]:
    out = {}
    for kind, limit in self.limits.items():
      out[f"x-ratelimit-limit-{kind}"] = str(limit)
      out[f"x-ratelimit-remaining-{kind}"] = str(int(self._level[kind]))
      out[f"x-ratelimit-reset-{kind}"] = f"{(limit - self._level[kind]) / limit * 60:.3f}s"
    return out if self.headers else {}

  def __call__(self, request):
    tokens = self.tokens(request.body)
    with self._lock:
      now = self.clock.now()
      self._refill(now)
      if self._level["requests"] < 1 or self._level["tokens"] < tokens:
        self.rejected += 1
        wait = max((1 - self._level["requests"]) / (self.limits["requests"] / 60),
                   (tokens - self._level["tokens"]) / (self.limits["tokens"] / 60))
        return Status(429, "rate limited", {**self._headers(),
                                            "retry-after-ms": str(int(wait * 1000) + 1)})
      self._level["requests"] -= 1
      self._level["tokens"] -= tokens
      self.accepted.append((now, tokens))
      return Reply("ok", headers=self._headers())
