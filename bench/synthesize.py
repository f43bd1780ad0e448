"""What synthetic data costs: teacher throughput, client overhead, verification gate.

Measures, on this machine:

  1. requests/s and completion tokens/s of the synthesis fan-out (`map_jsonl` through
     `LLMClient`, no cache) against phi_jax's own OpenAI-compatible server on loopback
     serving a small random model with the byte-level tokenizer, at each
     `--concurrency` (after one warm-up round that compiles the server's programs).
     This is a local stand-in for a teacher: its numbers bound the client and server
     plumbing, not a real teacher's speed;
  2. the client's overhead per request on the cache-hit path (a rerun: answer read
     from the on-disk cache, no HTTP);
  3. the time the gates add per exercise: the static gates (parse, function rules)
     and the sandboxed run of its doctests and asserts, one at a time (latency) and
     with one worker per core (throughput);

and projects the wall time of the paper's sizes (`--textbook_tokens_total` = 1B
textbook tokens, `--exercise_tokens_total` = 180M exercise tokens) at a stated teacher
throughput (`--teacher_tokens_per_s`, completion tokens per second over all
concurrent requests), adding the verification of the projected number of exercises
at the measured sandbox throughput. Prints a table and appends a dated row to
BENCHMARKS.md.

    .venv/bin/python bench/synthesize.py
    .venv/bin/python bench/synthesize.py --concurrency=1,8,64 --teacher_tokens_per_s=5000
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

import logging as std_logging  # noqa: E402  pylint: disable=g-import-not-at-top

from absl import flags  # noqa: E402  pylint: disable=g-import-not-at-top
from absl import logging  # noqa: E402  pylint: disable=g-import-not-at-top

from bench import record  # noqa: E402  pylint: disable=g-import-not-at-top
from phi_jax import cli  # noqa: E402  pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
flags.DEFINE_list("concurrency", ["1", "8", "64"], "client concurrency levels to time")
flags.DEFINE_integer("requests", 64, "requests timed per concurrency level")
flags.DEFINE_integer("max_tokens", 16, "completion tokens per request (the local teacher)")
flags.DEFINE_integer("cache_hits", 500, "cache-hit calls timed")
flags.DEFINE_integer("exercises", 32, "exercises put through the gates")
flags.DEFINE_float("teacher_tokens_per_s", 2000.0,
                   "stated teacher throughput for the projection: completion tokens/s over "
                   "all concurrent requests")
flags.DEFINE_float("textbook_tokens_total", 1e9, "textbook tokens to project (paper: <1B)")
flags.DEFINE_float("exercise_tokens_total", 180e6, "exercise tokens to project (paper: ~180M)")
flags.DEFINE_integer("tokens_per_exercise", 300, "completion tokens of one exercise")
flags.DEFINE_bool("record", True, "append a row to BENCHMARKS.md")

SECTION = "## bench/synthesize.py: synthetic data throughput, client overhead, gate cost"
SECTION_INTRO = """
Fan-out (`map_jsonl` + `LLMClient`, no cache) against phi_jax's own server on loopback
serving a random 2-layer d=64 model with the byte-level tokenizer (a stand-in teacher:
its speed is the plumbing's, not a real teacher's), `max_tokens` completion tokens per
request, after a warm-up round at each level: req/s and tok/s at each concurrency.
`hit us` = client overhead per request on the cache-hit path (microseconds).
`static ms` = parse +
function gates per exercise; `sandbox ms` = one exercise's doctests + asserts in the
sandbox alone, `sandbox/s` = exercises verified per second with one worker per core.
`projected h` = hours for 1B textbook + 180M exercise completion tokens at the stated
teacher tok/s, plus verifying 180M/`tokens_per_exercise` exercises at `sandbox/s`.

"""
COLUMNS = ("date", "machine", "isolation", "max_tokens", "req/s @c", "tok/s @c", "hit us",
           "static ms", "sandbox ms", "sandbox/s", "teacher tok/s", "projected h")

GOOD_EXERCISE = '''```python
def clamp_scores_{i}(values: list[int], low: int, high: int) -> list[int]:
    """Clamp every score into [low, high], keeping the order.

    >>> clamp_scores_{i}([5, -2, 12], 0, 10)
    [5, 0, 10]
    >>> clamp_scores_{i}([], 0, 1)
    []
    """
    return [min(max(v, low), high) for v in values]

assert clamp_scores_{i}([1], 2, 3) == [2]
assert clamp_scores_{i}([4, 9], 0, 5) == [4, 5]
```'''


def start_teacher():
  """phi_jax's server on a free loopback port, serving a small random model."""
  from phi_jax import serve  # pylint: disable=g-import-not-at-top
  from phi_jax.config import PhiConfig  # pylint: disable=g-import-not-at-top
  from phi_jax.pretrained import init_model  # pylint: disable=g-import-not-at-top
  from phi_jax.tokenizer import byte_level  # pylint: disable=g-import-not-at-top
  config = PhiConfig(vocab_size=257, d_model=64, num_layers=2, num_heads=4, mlp_dim=128,
                     rotary_dim=8, max_seq_len=512, dtype="float32")
  model = init_model(config, seed=0)
  model.tokenizer = byte_level()
  return serve.Server(model, port=0, model_name="bench-teacher", max_batch=64,
                      chunk_size=16).start()


def time_fanout(url: str, concurrency: int, n: int, max_tokens: int, tag: str,
                workdir: str) -> tuple[float, float]:
  """(requests/s, completion tokens/s) of n distinct requests at `concurrency`."""
  from phi_jax.llm import LLMClient, LLMConfig, map_jsonl  # pylint: disable=g-import-not-at-top
  client = LLMClient(LLMConfig(model="bench-teacher", base_url=url, api_key_env="UNSET_KEY",
                               max_concurrency=concurrency, temperature=1.0,
                               max_tokens=max_tokens, timeout_s=600.0))
  requests = [{"id": i, "messages": [{"role": "user", "content": f"{tag} {i}: write a function"}]}
              for i in range(n)]
  start = time.perf_counter()
  map_jsonl(client, requests, os.path.join(workdir, f"{tag}.jsonl"), progress=False)
  seconds = time.perf_counter() - start
  return n / seconds, client.stats.completion_tokens / seconds


def time_cache_hits(url: str, n: int, workdir: str) -> float:
  """Microseconds per client call answered from the cache."""
  from phi_jax.llm import LLMClient, LLMConfig  # pylint: disable=g-import-not-at-top
  client = LLMClient(LLMConfig(model="bench-teacher", base_url=url, api_key_env="UNSET_KEY",
                               max_tokens=4, cache_dir=os.path.join(workdir, "cache")))
  messages = [[{"role": "user", "content": f"cached {i}"}] for i in range(min(n, 50))]
  for m in messages:  # fill the cache
    client.chat(m)
  start = time.perf_counter()
  for i in range(n):
    assert client.chat(messages[i % len(messages)]).cached
  return (time.perf_counter() - start) / n * 1e6


def time_gates(n: int) -> tuple[float, float, float, str]:
  """(static ms, sandbox ms alone, sandbox exercises/s with one worker per core, level)."""
  # pylint: disable-next=g-import-not-at-top
  from data_pipeline.synth import ExerciseOptions, gates, sandbox_for
  answers = [GOOD_EXERCISE.format(i=i) for i in range(n)]
  start = time.perf_counter()
  checked = [gates.check_exercise(a, "stop") for a in answers]
  static_ms = (time.perf_counter() - start) / n * 1e3
  sandbox = sandbox_for(ExerciseOptions(timeout_s=10.0))
  gates.verify_exercises(sandbox, checked[:1], workers=1)  # warm the isolation probe
  latencies = []
  for exercise in checked[:min(n, 8)]:
    start = time.perf_counter()
    assert gates.verify_exercises(sandbox, [exercise], workers=1) == [None]
    latencies.append(time.perf_counter() - start)
  start = time.perf_counter()
  assert gates.verify_exercises(sandbox, checked) == [None] * n
  throughput = n / (time.perf_counter() - start)
  return static_ms, statistics.median(latencies) * 1e3, throughput, sandbox.isolation


def main(argv) -> None:
  del argv
  logging.set_verbosity(logging.WARNING)  # the server logs every request at INFO
  std_logging.getLogger("httpx").setLevel(std_logging.WARNING)
  levels = [int(c) for c in FLAGS.concurrency]
  if any(c < 1 for c in levels) or FLAGS.requests < 1:
    raise cli.UsageError("--concurrency levels and --requests must be positive")
  machine = record.cpu_description()
  with tempfile.TemporaryDirectory() as workdir, start_teacher() as server:
    url = server.url + "/v1"
    rates = {}
    for c in levels:  # a warm-up round at each level compiles its batch shapes
      time_fanout(url, c, 2 * c, FLAGS.max_tokens, f"warmup{c}", workdir)
      rates[c] = time_fanout(url, c, FLAGS.requests, FLAGS.max_tokens, f"c{c}", workdir)
    hit_us = time_cache_hits(url, FLAGS.cache_hits, workdir)
  static_ms, sandbox_ms, sandbox_per_s, isolation = time_gates(FLAGS.exercises)
  total_tokens = FLAGS.textbook_tokens_total + FLAGS.exercise_tokens_total
  teacher_s = total_tokens / FLAGS.teacher_tokens_per_s
  exercises = FLAGS.exercise_tokens_total / FLAGS.tokens_per_exercise
  verify_s = exercises / sandbox_per_s
  projected_h = (teacher_s + verify_s) / 3600

  print(f"{'concurrency':>12} {'req/s':>10} {'tok/s':>10}")
  for c, (rps, tps) in rates.items():
    print(f"{c:>12} {rps:>10.2f} {tps:>10.1f}")
  print(f"cache hit: {hit_us:.0f} us/request; static gates: {static_ms:.2f} ms/exercise; "
        f"sandbox ({isolation}): {sandbox_ms:.0f} ms alone, {sandbox_per_s:.1f} exercises/s")
  print(f"projection at {FLAGS.teacher_tokens_per_s:,.0f} teacher tok/s: teacher "
        f"{teacher_s / 3600:,.1f} h + verifying {exercises:,.0f} exercises {verify_s / 3600:,.1f} h"
        f" = {projected_h:,.1f} h")
  if FLAGS.record:
    row = record.markdown_row([
        record.now(), machine, isolation, FLAGS.max_tokens,
        " ".join(f"{rps:.1f}@{c}" for c, (rps, _) in rates.items()),
        " ".join(f"{tps:.0f}@{c}" for c, (_, tps) in rates.items()),
        f"{hit_us:.0f}", f"{static_ms:.2f}", f"{sandbox_ms:.0f}", f"{sandbox_per_s:.1f}",
        f"{FLAGS.teacher_tokens_per_s:,.0f}", f"{projected_h:,.1f}"])
    record.append_row(SECTION, SECTION_INTRO + record.table_header(COLUMNS), row)


if __name__ == "__main__":
  cli.run(main)
