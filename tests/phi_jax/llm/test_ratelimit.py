"""The client's pacing against a fake teacher that enforces rate limits on a fake clock.

The teacher (tests/fake_ratelimit.py) keeps OpenAI's kind of limits (buckets of
requests and tokens per minute, refilled continuously), answers with x-ratelimit-*
headers, and answers 429 with Retry-After when a request does not fit; it counts a
request's tokens its own way (words of the prompt, not characters). Time is a fake
clock both sides read; the client's waits advance it. The real-time figure is
bench/pacing.py's.
"""

import threading

import pytest

from phi_jax.llm import LLMClient, map_jsonl
from phi_jax.llm.ratelimit import RateLimiter, parse_duration
from tests.fake_openai import FakeOpenAI, Status
from tests.fake_ratelimit import LimitedTeacher
from tests.phi_jax.llm.helpers import make_client

pytestmark = pytest.mark.usefixtures("api_key")


class FakeClock:
  def __init__(self):
    self.t = 1000.0
    self._lock = threading.Lock()

  def now(self) -> float:
    with self._lock:
      return self.t

  def sleep(self, seconds: float) -> None:
    with self._lock:
      self.t += max(0.0, seconds)


def run(tmp_path, clock, teacher, n, words=40, max_tokens=100, **fields):
  with FakeOpenAI(teacher) as server:
    config = make_client(server, None, max_concurrency=1, max_retries=8,
                         backoff_initial_s=0.001, backoff_max_s=120.0, **fields).config
    client = LLMClient(config, clock=clock)
    text = " ".join(["word"] * words)
    requests = [{"id": i, "prompt": f"{i} {text}"} for i in range(n)]
    map_jsonl(client, requests, str(tmp_path / "out.jsonl"), progress=False,
              build=lambda r: {"prompt": r["prompt"], "max_tokens": max_tokens})
    return client


def steady_rate(accepted, capacity, per):
  """Accepted units per minute after the first full bucket (the burst) was spent."""
  spent, start = 0.0, None
  for t, amount in accepted:
    spent += amount
    if start is None and spent >= capacity:
      start, spent = t, 0.0
  return spent / (accepted[-1][0] - start) * 60


def test_pacing_reaches_the_request_limit_without_429(tmp_path):
  clock = FakeClock()
  teacher = LimitedTeacher(clock, rpm=20, tpm=1_000_000)
  client = run(tmp_path, clock, teacher, n=60)
  assert len(teacher.accepted) == 60 and teacher.rejected == 0
  assert client.stats.rate_limited == 0
  rate = steady_rate([(t, 1) for t, _ in teacher.accepted], 20, 60)
  assert 0.9 * 20 <= rate <= 20 * 1.001, rate


def test_pacing_reaches_the_token_limit_though_the_teacher_counts_tokens_otherwise(tmp_path):
  clock = FakeClock()
  # 40 words of 'word ' are 200 characters: the client estimates 50 prompt tokens, the
  # teacher counts 80 (+ 100 max_tokens each); about 16 requests a minute fit 3000 TPM
  teacher = LimitedTeacher(clock, rpm=10_000, tpm=3000)
  client = run(tmp_path, clock, teacher, n=70)
  assert len(teacher.accepted) == 70
  # the first answers teach the limiter the teacher's count: a 429 or two at most
  assert teacher.rejected <= 2, teacher.rejected
  assert client.stats.rate_limited == teacher.rejected
  rate = steady_rate(teacher.accepted, 3000, 60)
  assert 0.9 * 3000 <= rate <= 3000 * 1.001, rate


@pytest.mark.slow  # a third pacing run: the fast suite has two
def test_configured_limits_pace_a_teacher_that_sends_no_headers(tmp_path):
  clock = FakeClock()
  teacher = LimitedTeacher(clock, rpm=20, tpm=1_000_000, headers=False)
  run(tmp_path, clock, teacher, n=50, rpm_limit=20)
  assert teacher.rejected == 0
  rate = steady_rate([(t, 1) for t, _ in teacher.accepted], 20, 60)
  assert 0.9 * 20 <= rate <= 20 * 1.001, rate


def test_a_429_without_limits_is_honoured_by_every_request(tmp_path):
  clock = FakeClock()
  with FakeOpenAI() as server:
    server.script(Status(429, headers={"retry-after": "7"}))
    client = LLMClient(make_client(server, None, max_concurrency=1,
                                   backoff_initial_s=0.001).config, clock=clock)
    start = clock.now()
    client.complete("x")
    assert clock.now() - start >= 7 and client.stats.rate_limited == 1


def test_headers_never_lift_our_copy_above_a_request_acquired_since():
  # A is acquired alone; B is acquired while A is in flight and reaches the provider
  # after it, so A's headers do not count B: they must not give B's place back
  clock = FakeClock()
  limiter = RateLimiter(rpm_limit=2, clock=clock)
  _, a = limiter.acquire(1)
  _, b = limiter.acquire(1)
  limiter.observe({"x-ratelimit-limit-requests": "2",
                   "x-ratelimit-remaining-requests": "1"}, 1, a)
  limiter.done(a)
  start = clock.now()
  _, c = limiter.acquire(1)
  assert clock.now() - start >= 29.9  # the bucket was empty: one request per 30 s
  # a request alone from acquisition to answer takes the provider's count as it is
  limiter.done(b)
  limiter.done(c)
  charged, d = limiter.acquire(1)
  limiter.observe({"x-ratelimit-limit-requests": "2",
                   "x-ratelimit-remaining-requests": "1"}, charged, d)
  start = clock.now()
  limiter.acquire(1)
  assert clock.now() - start < 1e-6


def test_reset_durations():
  assert parse_duration("1s") == 1 and parse_duration("6m0s") == 360
  assert parse_duration("120ms") == pytest.approx(0.12)
  assert parse_duration("1h2m3.5s") == pytest.approx(3723.5)
  assert parse_duration("2.5") == 2.5 and parse_duration("soon") is None
