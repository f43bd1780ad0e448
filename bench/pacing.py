"""The client's pacing to a teacher's rate limits, in real time.

The online client (`map_jsonl` + `LLMClient`, no cache) sends to the fake
OpenAI-compatible server (tests/fake_openai.py) answering as a rate-limited teacher
(tests/fake_ratelimit.py: buckets of requests and tokens per minute refilled
continuously, x-ratelimit-* headers on every answer, 429 + Retry-After for a request
that does not fit; it counts tokens its own way, two per prompt word + max_tokens,
where the client estimates characters / 4 + max_tokens), each answer after
`--latency_s`, with `--concurrency` requests in flight at most. The client is given the
same limits (`rpm_limit`, `tpm_limit`).

Two phases, each with its own teacher and client: `requests` (the request limit binds:
`--rpm`, tokens unlimited in practice) and `tokens` (the token limit binds: `--tpm`).
Each phase first spends the teacher's initial full buckets (the burst a fresh limit
allows; untimed, the warm-up), then times `--repeats` runs of `--requests` requests back
to back (bench/compare.py's `alternate`, one side). A run's achieved rate is what the
teacher accepted in it beyond what its bucket held when the run began, over the run's
time (first send to last acceptance): (accepted - level at start) / seconds x 60, so
achieved/limit is at most 1 when the teacher's limit holds, and near 1 when the client
uses all of it. Staying under the limit is the 429 count: the teacher answers 429 to
any request beyond it. The rows give median [min, max] of achieved/limit over the runs.

    .venv/bin/python bench/pacing.py
    .venv/bin/python bench/pacing.py --rpm=1200 --requests=80 --concurrency=16
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from bench import compare  # noqa: E402  pylint: disable=g-import-not-at-top

SECTION = ("## bench/pacing.py: online pacing to rate limits in real time "
           "(achieved/limit, median [min, max])")
SECTION_INTRO = """
`map_jsonl` (online, no cache) against the fake rate-limited teacher (tests/fake_ratelimit.py
on tests/fake_openai.py: OpenAI-style request and token buckets, x-ratelimit-* headers,
429 + Retry-After; it counts 2 tokens per prompt word + max_tokens, the client estimates
characters / 4 + max_tokens), each answer after `latency`, `concurrency` in flight; the
client is configured with the same limits. Phase `requests`: the request limit binds;
`tokens`: the token limit binds. After the initial burst is spent (warm-up), `runs`
runs of `requests/run` back to back: achieved = (accepted - bucket at the run's start) /
seconds x 60 (first send to last acceptance); achieved/limit <= 1 when the limit holds.
429s: the teacher's refusals over all timed runs (0 = the client stayed under the limit).
"""
COLUMNS = ("date", "commit", "machine", "load before/after", "runs", "phase", "limits",
           "concurrency", "latency s", "requests/run", "req achieved/limit",
           "tok achieved/limit", "429s", "s/run")
PHASES = ("requests", "tokens")
WORDS = 40  # words of filler per prompt
MAX_TOKENS = 100
UNLIMITED = 10_000_000


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--rpm", type=int, default=600, help="requests per minute (phase "
                      "'requests')")
  parser.add_argument("--tpm", type=int, default=100_000, help="tokens per minute, as the "
                      "teacher counts them (phase 'tokens'; a request is 182 of them)")
  parser.add_argument("--requests", type=int, default=40, help="requests per timed run")
  parser.add_argument("--concurrency", type=int, default=8, help="max_concurrency")
  parser.add_argument("--latency_s", type=float, default=0.05,
                      help="seconds the teacher takes per answer")
  parser.add_argument("--repeats", type=int, default=compare.MIN_REPEATS,
                      help="timed runs per phase")
  parser.add_argument("--reduced", action="store_true",
                      help=f"allow --repeats below {compare.MIN_REPEATS} (the row says so)")
  parser.add_argument("--no_record", action="store_true",
                      help="print the results but do not append rows to BENCHMARKS.md")
  args = parser.parse_args(argv)
  for name in ("rpm", "tpm", "requests", "concurrency", "repeats"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1")
  if args.latency_s < 0:
    parser.error("--latency_s must be >= 0")
  if args.repeats < compare.MIN_REPEATS and not args.reduced:
    parser.error(f"--repeats below {compare.MIN_REPEATS} needs --reduced")
  return args


class Phase:
  """One teacher (on the fake server) and one client, kept across the phase's runs (the
  client's copy of the buckets must follow the teacher's)."""

  def __init__(self, name: str, args: argparse.Namespace, workdir: str):
    from phi_jax.llm import LLMClient, LLMConfig  # pylint: disable=g-import-not-at-top
    from phi_jax.llm.ratelimit import RealClock  # pylint: disable=g-import-not-at-top
    from tests.fake_openai import FakeOpenAI  # pylint: disable=g-import-not-at-top
    from tests.fake_ratelimit import LimitedTeacher  # pylint: disable=g-import-not-at-top
    self.name, self.args, self.workdir = name, args, workdir
    rpm, tpm = (args.rpm, UNLIMITED) if name == "requests" else (UNLIMITED, args.tpm)
    self.teacher = LimitedTeacher(RealClock(), rpm=rpm, tpm=tpm)
    self.server = FakeOpenAI(self.teacher, delay_s=args.latency_s).__enter__()
    self.client = LLMClient(LLMConfig(
        model="bench-teacher", base_url=self.server.url, api_key_env="UNSET_BENCH_KEY",
        max_concurrency=args.concurrency, max_tokens=MAX_TOKENS, max_retries=20,
        backoff_initial_s=0.05, backoff_max_s=5.0, rpm_limit=rpm, tpm_limit=tpm))
    self.runs: list[dict] = []
    self._sent = 0

  def close(self) -> None:
    self.client.close()
    self.server.close()

  def send(self, n: int) -> None:
    from phi_jax.llm import map_jsonl  # pylint: disable=g-import-not-at-top
    filler = " ".join(["word"] * WORDS)
    requests = [{"id": self._sent + i, "prompt": f"{self._sent + i} {filler}"}
                for i in range(n)]
    self._sent += n
    map_jsonl(self.client, requests, os.path.join(self.workdir, f"{self.name}.jsonl"),
              progress=False)

  def spend_the_burst(self) -> None:
    """Sends until the binding bucket is empty (a fresh limit's burst is no pace)."""
    kind = "requests" if self.name == "requests" else "tokens"
    per_request = 1 if kind == "requests" else 2 * (WORDS + 1) + MAX_TOKENS
    while self.teacher.levels()[kind] >= 2 * per_request:
      self.send(max(self.args.concurrency, int(self.teacher.levels()[kind] / per_request)))

  def timed_run(self) -> None:
    levels = self.teacher.levels()
    rejected, accepted = self.teacher.rejected, len(self.teacher.accepted)
    start = time.monotonic()
    self.send(self.args.requests)
    new = self.teacher.accepted[accepted:]
    seconds = new[-1][0] - start
    self.runs.append({
        "requests": (len(new) - levels["requests"]) / seconds * 60,
        "tokens": (sum(t for _, t in new) - levels["tokens"]) / seconds * 60,
        "rejected": self.teacher.rejected - rejected, "seconds": seconds})


def measure(name: str, args: argparse.Namespace, workdir: str) -> tuple[Phase, compare.Timings,
                                                                          float, float]:
  phase = Phase(name, args, workdir)
  try:
    load_before = compare.load_average()
    phase.spend_the_burst()
    timings = compare.alternate([(name, phase.timed_run)], args.repeats, warmups=0,
                                progress=True)
    return phase, timings, load_before, compare.load_average()
  finally:
    phase.close()


def cells(args, phase: Phase, load_before: float, load_after: float) -> list:
  limits = phase.teacher.limits
  ratios = {kind: compare.Spread.of([run[kind] / limits[kind] for run in phase.runs])
            for kind in ("requests", "tokens")}
  runs = f"{len(phase.runs)}"
  if len(phase.runs) < compare.MIN_REPEATS:
    runs += f" (reduced: below {compare.MIN_REPEATS})"
  shown = {"requests": f"rpm {limits['requests']:,}", "tokens": f"tpm {limits['tokens']:,}"}
  return [compare.now(), compare.commit(), compare.machine(),
          f"{load_before:.1f} / {load_after:.1f}", runs, phase.name, shown[phase.name],
          args.concurrency, args.latency_s, args.requests,
          ratios["requests"].format(3) if phase.name == "requests" else "(unbound)",
          ratios["tokens"].format(3) if phase.name == "tokens" else "(unbound)",
          sum(run["rejected"] for run in phase.runs),
          compare.Spread.of([run["seconds"] for run in phase.runs]).format(2)]


def main(argv=None) -> None:
  args = parse_args(argv)
  logging.getLogger("httpx").setLevel(logging.WARNING)
  rows = []
  with tempfile.TemporaryDirectory() as workdir:
    for name in PHASES:
      print(f"phase {name}: spending the initial burst, then {args.repeats} timed runs",
            flush=True)
      phase, _, load_before, load_after = measure(name, args, workdir)
      row = cells(args, phase, load_before, load_after)
      rows.append(row)
      print("  " + "; ".join(f"{c}: {v}" for c, v in zip(COLUMNS[4:], row[4:])), flush=True)
  if not args.no_record:
    for row in rows:
      compare.append(SECTION, SECTION_INTRO, COLUMNS, row)


if __name__ == "__main__":
  main()
