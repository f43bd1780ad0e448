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
       "finish_reason", "usage", "cached", "attempts"}
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

  Returns:
    {"total", "resumed", "done", "errors", "cache_hits", "seconds", "out_path"} for
    this call ("done" and "errors" count lines written by this call).

  Raises:
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


def _map_jsonl_locked(client, requests, out_path, build, parse, keep, parse_retries,
                      record_exhausted, done_ids, meter) -> dict[str, Any]:
  """map_jsonl's work, with the output locked and the finished ids known."""
  workers = client.config.max_concurrency
  counts = {"resumed": 0, "done": 0, "errors": 0, "cache_hits": 0}
  seen: set = set()
  start = time.monotonic()

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

  def run_one(request: Mapping[str, Any]) -> dict:
    return _map_one(client, request, build, parse, keep, parse_retries, record_exhausted)

  pending_requests = next_request(iter(requests))
  with open(out_path, "a", encoding="utf-8", newline="\n") as out, \
      concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                            thread_name_prefix="llm") as pool:
    in_flight: set = set()
    try:
      while True:
        for request in pending_requests:
          in_flight.add(pool.submit(run_one, request))
          if len(in_flight) >= 2 * workers:
            break
        if not in_flight:
          break
        finished, in_flight = concurrent.futures.wait(
            in_flight, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in finished:
          record = future.result()
          out.write(json.dumps(record, ensure_ascii=False) + "\n")
          out.flush()
          counts["errors" if "error" in record else "done"] += 1
          counts["cache_hits"] += bool(record.get("cached"))
          meter.advance(cache_hits=bool(record.get("cached")), errors="error" in record)
    except BaseException:
      for future in in_flight:
        future.cancel()
      raise
    finally:
      meter.finish()
  return {"total": len(seen), "out_path": out_path,
          "seconds": round(time.monotonic() - start, 3), **counts}


def _map_one(client: LLMClient, request: Mapping[str, Any], build, parse,
             keep: Sequence[str], parse_retries: int, record_exhausted: bool) -> dict:
  """One request of map_jsonl: its output record (a result or an error)."""
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
  raw, problem = None, ""
  for attempt in range(parse_retries + 1):
    try:
      if "messages" in spec:
        response = client.chat(spec["messages"], refresh=attempt > 0,
                               **{k: v for k, v in spec.items() if k != "messages"})
      else:
        response = client.complete(spec["prompt"], refresh=attempt > 0,
                                   **{k: v for k, v in spec.items() if k != "prompt"})
    except LLMError as e:
      if e.status in REQUEST_ERROR_STATUSES or (record_exhausted and e.retryable):
        return {**record, "error": str(e), "raw": raw, "attempts": attempt + 1}
      raise
    raw = response.text
    meta = {"finish_reason": response.finish_reason, "usage": response.usage,
            "cached": response.cached, "attempts": attempt + 1}
    if parse is None:
      return {**record, "raw": raw, **meta}
    try:
      result = parse(raw, request)
    except ValueError as e:
      problem = f"{type(e).__name__}: {e}"
      continue
    return {**record, "result": result, "raw": raw, **meta}
  return {**record, "error": f"unusable answer after {parse_retries + 1} attempt(s): {problem}",
          "raw": raw, "attempts": parse_retries + 1}
