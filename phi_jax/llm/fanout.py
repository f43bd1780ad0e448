"""map_jsonl: many requests, concurrently, one JSON line each, resumable after a kill."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from phi_jax import atomic, jsonl
from phi_jax.llm import budget
from phi_jax.llm.client import LLMClient, LLMError
from phi_jax.progress import Progress

try:
  import fcntl
except ImportError:  # not POSIX: no lock against two runs on one output
  fcntl = None

# Statuses that concern one request (too long, invalid), not the whole run: map_jsonl
# records them as that request's error and goes on. Any other LLMError stops it.
REQUEST_ERROR_STATUSES = (400, 413, 422)


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

  def partial(size: int) -> None:
    if repair:
      print(f"map_jsonl: {path}: dropping a partial last line ({size} bytes) left by an "
            f"interrupted run", file=sys.stderr)

  ids: set = set()
  for lineno, record in jsonl.iter_appended(path, repair=repair, on_partial=partial,
                                            bad_line="not a JSON line"):
    if "id" not in record:
      raise ValueError(f"{path}:{lineno}: a record without 'id'; not a map_jsonl output?")
    ids.add(record["id"])
  return ids


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



def map_jsonl(client: LLMClient, requests: Iterable[Mapping[str, Any]], out_path: str, *,
              build: Callable[[Mapping[str, Any]], Mapping[str, Any]] = default_build,
              parse: Callable[[str, Mapping[str, Any]], Any] | None = None,
              keep: Sequence[str] = (), parse_retries: int | None = None,
              retry_errors: bool = False, record_exhausted: bool = False,
              progress: bool = True, desc: str = "llm",
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
       "finish_reason", "usage", "cached", "attempts", "spent"}
      {"id", <keep fields>, "error": why, "raw": last answer or null, "attempts"}
    build: request -> the call: {"messages": [...]} (chat) or {"prompt": str}
      (completions), plus optional call options (temperature, variant, ...).
    parse: (answer text, request) -> a JSON-serialisable result; raises ValueError
      for an unusable answer, which is then asked again `parse_retries` times
      (bypassing the cache) and finally recorded as an error, never guessed.
    keep: request fields copied into each output line (e.g. 'task_id').
    parse_retries: default: client.config.parse_retries.
    retry_errors: first drop the error records of `out_path`, so those ids are retried.
    record_exhausted: a request whose transient failures (429, 5xx, timeouts, dropped
      connections, malformed bodies) outlast the client's retries is recorded as that
      request's error line instead of stopping the run (retried with retry_errors).
    progress: print a progress line on stderr.
    desc: the progress line's label.
    total: the number of requests, for the progress line (default: len(requests)).

  With `client.config.mode == 'batch'` the requests go through OpenAI's Batch API
  (phi_jax/llm/batch.py) and end as the same lines. "spent" is what the answer was paid
  in tokens per mode (phi_jax/llm/budget.py); with `client.config.budget_usd` set, the
  cost accounted from `out_path` (and its batch journal) never exceeds the budget: a
  request is sent only when its most cost fits beside what was paid and the most cost
  of the requests in flight (each reservation is replaced by what its answer was paid);
  when the next request does not fit even with nothing in flight, BudgetReached is
  raised (a rerun with a higher budget goes on).

  Returns:
    {"total", "resumed", "done", "errors", "cache_hits", "seconds", "out_path",
    "spent_usd"} for this call ("done" and "errors" count lines written by this call;
    "spent_usd" is the accounted cost of the whole output).

  Raises:
    BudgetReached: the budget stopped sending (what was answered is kept).
    LLMError: a failure that is not one request's fault (auth, unknown model, retries
      exhausted unless record_exhausted); what finished before it is kept in
      `out_path`. Errors of one request (HTTP 400/413/422: too long, invalid) are
      recorded as its error line instead.
  """
  parse_retries = client.config.parse_retries if parse_retries is None else parse_retries
  if total is None and hasattr(requests, "__len__"):
    total = len(requests)  # type: ignore[arg-type]
  out_dir = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(out_dir, exist_ok=True)
  with _exclusive(out_path):
    if retry_errors and os.path.exists(out_path):
      read_done_ids(out_path)  # repair first
      atomic.filter_jsonl(out_path, lambda record: "error" not in record)
    done_ids = read_done_ids(out_path)
    meter = Progress(desc, total, enabled=progress, unit="requests")
    meter.counters.update(resumed=0, cache_hits=0, errors=0)  # their order on the line
    return _map_jsonl_locked(client, requests, out_path, build, parse, keep, parse_retries,
                             record_exhausted, done_ids, meter)


def accounted_spent(out_path: str) -> dict:
  """What the answers recorded in a map_jsonl output (and its batches' failed attempts)
  were paid, per mode (budget.py). Lines without "spent" count their usage as online
  unless they were cache hits."""
  from phi_jax.llm import batch  # pylint: disable=g-import-not-at-top
  spents = []
  if os.path.exists(out_path):
    for _, line in jsonl.iter_appended(out_path, repair=False, bad_line="not a JSON line"):
      if "spent" in line:
        spents.append(line["spent"])
      elif not line.get("cached") and line.get("usage"):
        spents.append({"online": line["usage"]})
  if os.path.exists(batch.journal_path(out_path)):
    spents.append(batch.Journal(batch.journal_path(out_path)).spent())
  return budget.merge(spents)


class _Budget:
  """The accounted cost of one output against the client's budget, and the most cost of
  the requests in flight (reserved before they are sent: budget.py)."""

  def __init__(self, client: LLMClient, out_path: str):
    self.config = client.config
    self.spent = accounted_spent(out_path)
    self.reserved = 0.0  # USD reserved by the requests in flight (online mode)

  def add(self, spent: Mapping[str, Any] | None) -> None:
    if spent:
      self.spent = budget.merge([self.spent, spent])

  @property
  def usd(self) -> float:
    return budget.cost_usd(self.config, self.spent)

  def fits(self, cost: float, reserved: float | None = None) -> bool:
    """Whether a request of most cost `cost` may be sent beside what was paid and what
    is reserved (`reserved`, default the online reservations)."""
    reserved = self.reserved if reserved is None else reserved
    return not self.config.budget_usd or self.usd + reserved + cost <= self.config.budget_usd

  def allowance(self, items, reserved: float) -> tuple[int, float]:
    """How many of `items` (batch.Item) may be sent beside `reserved` USD in flight,
    counting each at its most cost, and their most cost."""
    if not self.config.budget_usd:
      return len(items), 0.0
    allowed, total = 0, 0.0
    for item in items:
      cost = self.most_cost([item])
      if not self.fits(total + cost, reserved):
        break
      total += cost
      allowed += 1
    return allowed, total

  def most_cost(self, items) -> float:
    """The most cost of `items` (batch.Item) answered once each in the config's mode."""
    if not self.config.budget_usd:
      return 0.0
    return sum(budget.max_cost_usd(self.config, self.config.mode, item.inputs,
                                   item.params.get("max_tokens")) for item in items)

  def stop(self, out_path: str, unsent: int) -> budget.BudgetReached:
    usd, limit = self.usd, self.config.budget_usd
    return budget.BudgetReached(
        f"budget reached: the answers in {out_path} cost ${usd:,.4f} (accounted from their "
        f"usage at the configured prices), the budget is ${limit:,.4f} (budget_usd), and "
        f"the next request could cost more than what is left; {unsent} request(s) were "
        f"not sent. Raise budget_usd and run again to go on", usd, limit, unsent)


def _map_jsonl_locked(client, requests, out_path, build, parse, keep, parse_retries,
                      record_exhausted, done_ids, meter) -> dict[str, Any]:
  """map_jsonl's work, with the output locked and the finished ids known."""
  workers = client.config.max_concurrency
  counts = {"resumed": 0, "done": 0, "errors": 0, "cache_hits": 0}
  seen: set = set()
  start = time.monotonic()
  guard = _Budget(client, out_path)

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
        meter.skip(resumed=1)
        continue
      yield request

  def run_one(request: Mapping[str, Any], first_attempt: int = 0) -> dict:
    return _map_one(client, request, build, parse, keep, parse_retries, record_exhausted,
                    first_attempt)

  def max_cost(request: Mapping[str, Any]) -> float:
    """The most an online request can cost: every answer its parser may ask for, at
    most; a cached answer is free, the asking again after it is not."""
    if not client.config.budget_usd:
      return 0.0
    _, spec = _record_and_spec(request, build, keep)
    endpoint, inputs = _endpoint_of(spec)
    overrides = {k: v for k, v in spec.items() if k not in ("messages", "prompt")}
    key, _, params, _ = client.prepare(endpoint, inputs, overrides)
    attempts = parse_retries + 1 if parse is not None else 1
    if client.cache is not None and client.cache.get(key) is not None:
      attempts -= 1
    if not attempts:
      return 0.0
    return budget.max_cost_usd(client.config, "online", inputs, params.get("max_tokens"),
                               attempts)

  pending_requests = next_request(iter(requests))
  with open(out_path, "a", encoding="utf-8", newline="\n") as out:

    def write(record: dict) -> None:
      out.write(json.dumps(record, ensure_ascii=False) + "\n")
      out.flush()
      counts["errors" if "error" in record else "done"] += 1
      counts["cache_hits"] += bool(record.get("cached"))
      guard.add(record.get("spent"))
      meter.advance(cache_hits=bool(record.get("cached")), errors="error" in record)

    try:
      if client.config.mode == "batch":
        unsent = _map_batch(client, pending_requests, out_path, build, parse, keep,
                            parse_retries, record_exhausted, write, guard, run_one)
      else:
        unsent = _map_online(pending_requests, workers, run_one, max_cost, write, guard)
    finally:
      meter.finish()
  if unsent:
    raise guard.stop(out_path, unsent)
  return {"total": len(seen), "out_path": out_path, "spent_usd": round(guard.usd, 6),
          "seconds": round(time.monotonic() - start, 3), **counts}


def _map_online(pending_requests, workers, run_one, max_cost, write, guard) -> int:
  """Sends the requests concurrently, each once its most cost fits the budget beside
  those in flight; returns how many the budget left unsent."""
  done = object()
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                             thread_name_prefix="llm") as pool:
    in_flight: dict = {}  # future -> USD reserved for it
    waiting = done  # a request that did not fit beside those in flight
    try:
      while True:
        while len(in_flight) < 2 * workers:
          request = next(pending_requests, done) if waiting is done else waiting
          if request is done:
            break
          cost = max_cost(request)
          if not guard.fits(cost):
            if not in_flight:  # nothing will release a reservation: stop here
              return 1 + sum(1 for _ in pending_requests)
            waiting = request  # until those in flight release theirs
            break
          waiting = done
          guard.reserved += cost
          in_flight[pool.submit(run_one, request)] = cost
        if not in_flight:
          return 0
        finished, _ = concurrent.futures.wait(
            in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in finished:
          guard.reserved -= in_flight.pop(future)
          write(future.result())
    except BaseException:
      for future in in_flight:
        future.cancel()
      raise


def _map_batch(client, pending_requests, out_path, build, parse, keep, parse_retries,
               record_exhausted, write, guard, run_one) -> int:
  """The batch mode: cache hits are recorded at once, the rest go through the Batch API
  (batch.py); returns how many the budget left unsent."""
  from phi_jax.llm import batch  # pylint: disable=g-import-not-at-top
  items = []
  for request in pending_requests:
    record, spec = _record_and_spec(request, build, keep)
    endpoint, inputs = _endpoint_of(spec)
    overrides = {k: v for k, v in spec.items() if k not in ("messages", "prompt")}
    key, model, params, variant = client.prepare(endpoint, inputs, overrides)
    response = client.cached(key)
    if response is not None:
      line = _answer_line(record, response, parse, request, 1)
      if line is not None:
        write(line)
        continue
    items.append(batch.Item(request, record, endpoint, inputs, key, model, params, variant))

  def online(request, first_attempt):
    return run_one(request, first_attempt)

  def online_fits(item, rejected, reserved):
    """Whether an online retry's most cost (the attempts its parser has left) fits."""
    if not client.config.budget_usd:
      return True
    attempts = parse_retries + 1 - rejected if parse is not None else 1
    return guard.fits(budget.max_cost_usd(client.config, "online", item.inputs,
                                          item.params.get("max_tokens"), attempts), reserved)

  batcher = batch.Batcher(client, out_path, write, parse=parse, parse_retries=parse_retries,
                          record_exhausted=record_exhausted, online=online,
                          allowance=guard.allowance, most_cost=guard.most_cost,
                          online_fits=online_fits, paid=guard.add)
  return len(batcher.run(items))


def _record_and_spec(request, build, keep) -> tuple[dict, dict]:
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
  return record, spec


def _endpoint_of(spec: Mapping[str, Any]) -> tuple[str, Any]:
  if "messages" in spec:
    from phi_jax.llm.client import _check_messages  # pylint: disable=g-import-not-at-top
    return "chat", _check_messages(spec["messages"])
  return "completions", spec["prompt"]


def _answer_line(record, response, parse, request, attempt) -> dict | None:
  """The output line of an answer; None when `parse` rejects it."""
  meta = {"finish_reason": response.finish_reason, "usage": response.usage,
          "cached": response.cached, "attempts": attempt}
  if parse is None:
    return {**record, "raw": response.text, **meta}
  try:
    result = parse(response.text, request)
  except ValueError:
    return None
  return {**record, "result": result, "raw": response.text, **meta}


def _map_one(client: LLMClient, request: Mapping[str, Any], build, parse,
             keep: Sequence[str], parse_retries: int, record_exhausted: bool,
             first_attempt: int = 0) -> dict:
  """One request of map_jsonl: its output record (a result or an error). A request
  whose answers were rejected before (in a batch) starts at `first_attempt`, skipping
  the cache."""
  record, spec = _record_and_spec(request, build, keep)
  raw, problem = None, ""
  spent: dict = {}
  for attempt in range(first_attempt, parse_retries + 1):
    refresh = attempt > 0
    try:
      if "messages" in spec:
        response = client.chat(spec["messages"], refresh=refresh,
                               **{k: v for k, v in spec.items() if k != "messages"})
      else:
        response = client.complete(spec["prompt"], refresh=refresh,
                                   **{k: v for k, v in spec.items() if k != "prompt"})
    except LLMError as e:
      if e.status in REQUEST_ERROR_STATUSES or (record_exhausted and e.retryable):
        return {**record, "error": str(e), "raw": raw, "attempts": attempt + 1,
                "spent": spent}
      raise
    raw = response.text
    if not response.cached:
      budget.add_spent(spent, "online", response.usage)
    meta = {"finish_reason": response.finish_reason, "usage": response.usage,
            "cached": response.cached, "attempts": attempt + 1, "spent": spent}
    if parse is None:
      return {**record, "raw": raw, **meta}
    try:
      result = parse(raw, request)
    except ValueError as e:
      problem = f"{type(e).__name__}: {e}"
      continue
    return {**record, "result": result, "raw": raw, **meta}
  return {**record, "error": f"unusable answer after {parse_retries + 1} attempt(s): {problem}",
          "raw": raw, "attempts": parse_retries + 1, "spent": spent}
