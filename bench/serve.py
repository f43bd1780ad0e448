"""The OpenAI-compatible server under load: continuous vs static batching, alternated.

Starts `phi_jax.serve.Server` in this process on a random phi_jax model with the
byte-level tokenizer, once per batching policy (`--batching static|continuous` of the
server), and measures, at each number of concurrent clients (`--clients`, default
16), the same workload: every client sends `--requests_per_client` non-streamed
completions one after another (more when few clients would send under
`--min_requests` in all), with random prompts and a mix of lengths (`--max_tokens`,
drawn per request; greedy, so both policies generate the same tokens). Each policy
first runs the whole schedule up to `--warmups` times untimed (compiling the shapes it
meets; the two servers share compiled programs), then the two policies are timed in
alternating rounds through `bench/compare.py` (`--repeats` per policy, 5 or more):
requests/s median [min, max] of each and of continuous / static per round, p50 / p95
request latency over all timed requests, and generated tokens/s. Goal: continuous >=
1.5x static in median at 16 clients.

The result is printed and appended as dated rows (one per client count) to
BENCHMARKS.md.

    .venv/bin/python bench/serve.py                         # tiny model, CPU, 16 clients
    .venv/bin/python bench/serve.py --clients=1,8,16,32 --max_tokens=8,32,128
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import http.client
import json
import os
import random
import statistics
import sys
import threading
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from bench import compare  # noqa: E402  pylint: disable=g-import-not-at-top

GOAL = 1.5
SECTION = "## bench/serve.py: continuous vs static batching (alternated, median [min, max])"
SECTION_INTRO = f"""
`clients` threads each send non-streamed greedy completions in turn (`requests` per run)
to an in-process `phi_jax.serve.Server` (random model of `size`, byte-level tokenizer,
`max_batch` rows, `chunk` decode steps per chunk); each request's max_tokens is drawn
from `max_tokens`, its prompt is 8-64 random characters. The two policies are timed in
alternating rounds (bench/compare.py) after warm-up. req/s = requests / wall seconds,
median [min, max]; speedup = continuous / static req/s per round; p50/p95: latency (s)
over every timed request; tok/s: generated tokens / wall seconds (median). static: a
batch runs until its longest row finishes; continuous: rows join and leave at every
decode chunk. timed compiles: XLA compilations during the timed runs (each costs
seconds on a CPU). Goal: speedup median >= {GOAL:g} at 16 clients.
"""
COLUMNS = compare.COMMON_COLUMNS + (
    "jax", "size", "max_batch", "chunk", "max_tokens", "clients", "requests",
    "static req/s", "continuous req/s", "speedup", "static p50/p95 s",
    "continuous p50/p95 s", "static tok/s", "continuous tok/s", "timed compiles", "goal")
OLD_SECTION = ("## bench/serve.py: the server under concurrent clients, static vs "
               "continuous batching")

# phi_jax PhiConfig fields of each size (vocabulary: the 257 byte-level ids, padded).
SIZES = {
    "tiny": dict(d_model=256, num_layers=4, num_heads=8, mlp_dim=1024, rotary_dim=16),
    "small": dict(d_model=768, num_layers=12, num_heads=12, mlp_dim=3072, rotary_dim=32),
}
POLICIES = ("static", "continuous")


@dataclasses.dataclass
class Result:
  seconds: float  # wall time of the whole workload
  latencies: list[float]  # per request
  generated_tokens: int

  @property
  def requests_per_s(self) -> float:
    return len(self.latencies) / self.seconds

  @property
  def tokens_per_s(self) -> float:
    return self.generated_tokens / self.seconds

  def percentile(self, q: float) -> float:
    ordered = sorted(self.latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
  parser.add_argument("--clients", default="16",
                      help="comma-separated numbers of concurrent clients")
  parser.add_argument("--requests_per_client", type=int, default=2)
  parser.add_argument("--min_requests", type=int, default=8,
                      help="at least this many requests per client count (few clients "
                      "send more each)")
  parser.add_argument("--warmups", type=int, default=4,
                      help="at most this many untimed runs of the schedule first, until "
                      "one compiles nothing: which shapes (rows, admitted count, cache "
                      "prefix) a run meets depends on timing")
  parser.add_argument("--max_tokens", default="8,32,128",
                      help="comma-separated max_tokens values, drawn per request")
  parser.add_argument("--max_batch", type=int, default=32, help="the server's --max_batch")
  parser.add_argument("--chunk_size", type=int, default=16, help="the server's --chunk_size")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  parser.add_argument("--repeats", type=int, default=compare.MIN_REPEATS,
                      help="timed runs per policy and client count")
  parser.add_argument("--reduced", action="store_true",
                      help=f"allow --repeats below {compare.MIN_REPEATS} (the row says so)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--no_record", action="store_true",
                      help="print the table but do not append rows to BENCHMARKS.md")
  args = parser.parse_args(argv)
  try:
    args.clients = [int(c) for c in args.clients.split(",")]
    args.max_tokens = [int(m) for m in args.max_tokens.split(",")]
  except ValueError:
    parser.error("--clients and --max_tokens must be comma-separated integers")
  if min(args.clients) < 1 or min(args.max_tokens) < 1 or max(args.max_tokens) > 400:
    parser.error("--clients must be >= 1 and --max_tokens in [1, 400] (the context is 512)")
  if args.repeats < compare.MIN_REPEATS and not args.reduced:
    parser.error(f"--repeats below {compare.MIN_REPEATS} needs --reduced")
  for name in ("requests_per_client", "min_requests", "max_batch", "chunk_size", "repeats"):
    if getattr(args, name) < 1:
      parser.error(f"--{name} must be >= 1")
  return args


def build_model(size: str, dtype: str, seed: int):
  """A random phi_jax model of a size preset, with the byte-level tokenizer."""
  from flax import nnx

  from phi_jax.config import PhiConfig
  from phi_jax.model import PhiForCausalLM
  from phi_jax.tokenizer import byte_level

  config = PhiConfig(vocab_size=320, max_seq_len=512, dtype=dtype, **SIZES[size])
  model = PhiForCausalLM(config, rngs=nnx.Rngs(seed))
  model.tokenizer = byte_level()
  return model


def workload(args: argparse.Namespace, clients: int) -> list[list[dict]]:
  """Per client, its request bodies in order (the same for both policies)."""
  rng = random.Random(f"{args.seed}/{clients}")
  alphabet = "abcdefghijklmnopqrstuvwxyz _():=\n"
  per_client = max(args.requests_per_client, -(-args.min_requests // clients))
  return [[{"model": "bench", "temperature": 0, "max_tokens": rng.choice(args.max_tokens),
            "prompt": "".join(rng.choice(alphabet) for _ in range(rng.randint(8, 64)))}
           for _ in range(per_client)] for _ in range(clients)]


def run_clients(server, bodies: list[list[dict]]) -> Result:
  """Every client sends its requests in turn on one keep-alive connection."""
  start_together = threading.Barrier(len(bodies) + 1)

  def client(requests: list[dict]) -> tuple[list[float], int]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=600)
    latencies, tokens = [], 0
    start_together.wait()
    for body in requests:
      start = time.perf_counter()
      connection.request("POST", "/v1/completions", body=json.dumps(body),
                         headers={"Content-Type": "application/json"})
      response = connection.getresponse()
      payload = json.loads(response.read())
      if response.status != 200:
        raise RuntimeError(f"the server answered {response.status}: {payload}")
      latencies.append(time.perf_counter() - start)
      tokens += payload["usage"]["completion_tokens"]
    connection.close()
    return latencies, tokens

  with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
    futures = [pool.submit(client, requests) for requests in bodies]
    start_together.wait()
    start = time.perf_counter()
    results = [f.result() for f in futures]
    seconds = time.perf_counter() - start
  return Result(seconds=seconds, latencies=[t for lat, _ in results for t in lat],
                generated_tokens=sum(tokens for _, tokens in results))


class CompileCounter:
  """Counts XLA compilations in this process (jax's backend-compile events)."""

  def __init__(self):
    import jax.monitoring

    self.count = 0
    jax.monitoring.register_event_duration_secs_listener(self._on_event)

  def _on_event(self, event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    if event == "/jax/core/compile/backend_compile_duration":
      self.count += 1


def run(args: argparse.Namespace):
  """(per clients: the compare.Result and {policy: [Result per timed run]}), and the
  compilations during the timed runs."""
  from phi_jax import serve

  compiles = CompileCounter()

  model = build_model(args.size, args.dtype, args.seed)
  servers = {policy: serve.Server(model, port=0, model_name="bench", max_batch=args.max_batch,
                                  chunk_size=args.chunk_size, batching=policy).start()
             for policy in POLICIES}
  try:
    for warmup in range(args.warmups):  # compiles the shapes the schedule meets
      before = compiles.count
      for policy in POLICIES:
        for clients in args.clients:
          run_clients(servers[policy], workload(args, clients))
      print(f"warm-up {warmup + 1}: {compiles.count - before} compilations", flush=True)
      if compiles.count == before:
        break
    before = compiles.count
    results = {}
    for clients in args.clients:
      bodies = workload(args, clients)
      runs = {policy: [] for policy in POLICIES}

      def side(policy, bodies=bodies, runs=runs):
        return compare.Side(policy, lambda: runs[policy].append(
            run_clients(servers[policy], bodies)), "one scheduler thread; XLA CPU all cores")

      result = compare.compare(side("continuous"), side("static"),
                               work=sum(len(b) for b in bodies), repeats=args.repeats,
                               warmups=0, reduced=args.reduced)
      results[clients] = (result, runs)
      print(f"{clients:3d} clients: continuous/static req/s {result.ratio().format(2)}",
            flush=True)
  finally:
    for server in servers.values():
      server.close()
  return results, compiles.count - before


def pooled(runs: list[Result]) -> Result:
  return Result(seconds=sum(r.seconds for r in runs),
                latencies=[t for r in runs for t in r.latencies],
                generated_tokens=sum(r.generated_tokens for r in runs))


def table_cells(args, clients: int, result: compare.Result, runs, compiles: int) -> list:
  import jax

  static, continuous = pooled(runs["static"]), pooled(runs["continuous"])
  tok_s = {p: compare.Spread.of([r.tokens_per_s for r in runs[p]]).median for p in POLICIES}
  return compare.common_cells(result) + [
      jax.__version__, args.size, args.max_batch, args.chunk_size,
      "/".join(map(str, args.max_tokens)), clients, len(runs["static"][0].latencies),
      result.rate("static").format(2), result.rate("continuous").format(2),
      result.ratio().format(2),
      f"{static.percentile(0.5):.2f}/{static.percentile(0.95):.2f}",
      f"{continuous.percentile(0.5):.2f}/{continuous.percentile(0.95):.2f}",
      f"{tok_s['static']:.0f}", f"{tok_s['continuous']:.0f}", compiles,
      compare.goal_cell(result, GOAL) if clients == 16 else "-"]


def main(argv=None) -> None:
  args = parse_args(argv)
  results, compiles = run(args)
  print(f"compilations during the timed runs: {compiles}")
  for clients, (result, runs) in results.items():
    print(f"{clients} clients, load before/after {result.load_before:.1f} / "
          f"{result.load_after:.1f}")
    for policy in POLICIES:
      print(f"  {policy:>10} req/s {result.rate(policy).format(2)}")
    print(f"  continuous / static req/s: {result.ratio().format(2)}")
  if args.no_record:
    return
  for clients, (result, runs) in results.items():
    row = compare.append(SECTION, SECTION_INTRO, COLUMNS,
                         table_cells(args, clients, result, runs, compiles))
    print(f"appended to {compare.record.BENCHMARKS_FILE}:\n{row}")
  try:
    compare.supersede(OLD_SECTION, f"bench/serve.py {compare.now()}")
  except ValueError:
    pass


if __name__ == "__main__":
  main()
