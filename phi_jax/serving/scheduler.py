"""The scheduler: one thread owns the model and decodes every request's rows on it.

Request handlers `submit` work items (one per prompt x choice) and read their results
from each item's event queue; a handler whose client went away `cancel`s its items.
The scheduler thread runs a `sampling.Generator` (a KV cache of `max_batch` rows) one
decode chunk at a time, and posts to each item:

  ("tokens", index, new_token_ids)   after each decode chunk (streaming items only)
  ("done", index, Completion)        as soon as the row finishes
  ("error", index, message)          when generation failed or the server shut down

An item with `score_prompt` has its prompt scored (`Generator.score`: each prompt
token's logprob and top alternatives) when it is admitted, into the Completion's
`prompt_logprobs`; one with max_new_tokens 0 is done then, without taking a row.

Batching policies (`batching`):

  continuous  before every chunk, queued items take the rows that are free (rows
              leave the moment they finish or are cancelled), so a short request
              never waits for a long one beside it;
  static      queued items are admitted only when every row is free: a batch runs
              until its longest row finishes (the baseline that bench/serve.py
              compares against).

The generator has as many rows as the load needs (a power of two up to `max_batch`):
it grows when more rows decode and shrinks when it is idle, so one request alone
decodes one row, not `max_batch`.

The queue of items waiting for a row is bounded (`max_queue`): `submit` raises
`QueueFull`, with an estimate of when to retry, instead of queueing more.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import queue
import threading
import time
from collections.abc import Sequence

from absl import logging

from phi_jax import sampling
from phi_jax.model import PhiForCausalLM
from phi_jax.sampling import SamplingParams
from phi_jax.tokenizer import Tokenizer

BATCHING = ("continuous", "static")


@dataclasses.dataclass(eq=False)
class WorkItem:
  """One row to generate; its results go to `events` tagged with `index`."""
  prompt: list[int]
  params: SamplingParams
  max_new_tokens: int
  stop: tuple[str, ...]
  seed: int
  index: int  # the choice index within its request
  events: queue.Queue
  stream: bool = False  # post ("tokens", ...) events after each chunk
  logprobs: int | None = None  # None: none; k: each token's logprob and the top k
  score_prompt: bool = False  # also the prompt's logprobs (with `logprobs` top-k)
  prompt_logprobs: sampling.TokenLogprobs | None = None  # set by the scheduler thread


class QueueFull(RuntimeError):
  """The queue holds `max_queue` rows; `retry_after_s` estimates when there is room."""

  def __init__(self, message: str, retry_after_s: int):
    super().__init__(message)
    self.retry_after_s = retry_after_s


@dataclasses.dataclass
class Stats:
  """Counters since the scheduler started (written by its thread only)."""
  rows_submitted: int = 0  # work items queued
  rows_admitted: int = 0  # work items given a row
  rows_finished: int = 0  # rows that ended with a Completion
  rows_cancelled: int = 0  # rows dropped (queued or decoding) because the client left
  rows_failed: int = 0  # rows that ended with an error
  admissions: int = 0  # steps that admitted rows (one prefill each)
  steps: int = 0  # decode chunks run
  rows_decoded: int = 0  # sum over decode chunks of the rows they decoded
  prompt_tokens: int = 0  # prompt tokens of admitted rows (prefilled)
  generated_tokens: int = 0  # tokens generated, cancelled rows' included


class Scheduler:
  """Batches work items from many threads onto one model (`batching`, module doc)."""

  def __init__(self, model: PhiForCausalLM, tokenizer: Tokenizer, *, max_batch: int = 32,
               chunk_size: int = 16, eos_token_ids: Sequence[int] = (),
               max_queue: int = 1024, batching: str = "continuous"):
    if max_batch < 1 or chunk_size < 1 or max_queue < 1:
      raise ValueError(f"max_batch, chunk_size and max_queue must be >= 1, got {max_batch}, "
                       f"{chunk_size}, {max_queue}")
    if batching not in BATCHING:
      raise ValueError(f"batching must be one of {BATCHING}, got {batching!r}")
    self._model = model
    self._tokenizer = tokenizer
    self.max_batch = max_batch
    self.max_queue = max_queue
    self.batching = batching
    self._chunk_size = chunk_size
    self._eos_token_ids = tuple(eos_token_ids)
    self._generator = self._new_generator()
    self._queue: collections.deque[WorkItem] = collections.deque()
    self._running: set[WorkItem] = set()  # items in the generator (owned by the thread)
    self._cancelled: set[WorkItem] = set()  # to drop from the generator before a step
    self._finish_times: collections.deque[float] = collections.deque(maxlen=64)
    self._cond = threading.Condition()
    self._closing = False
    self._thread = threading.Thread(target=self._loop, name="phi_jax-scheduler", daemon=True)
    self.stats = Stats()

  def _new_generator(self) -> sampling.Generator:
    return sampling.Generator(self._model, rows=1, chunk_size=self._chunk_size,
                              eos_token_ids=self._eos_token_ids, tokenizer=self._tokenizer)

  def _size_for(self, rows: int) -> None:
    """Sizes the generator for `rows` decoding rows: the next power of two (at most
    max_batch), so a decode chunk costs what the load needs. It grows while rows decode
    and shrinks only when none do (a decoding row never moves)."""
    target = min(self.max_batch, 1 << (rows - 1).bit_length())
    if target > self._generator.rows or (target < self._generator.rows and not self._running):
      self._generator.resize(target)

  def batch_sizes(self) -> list[int]:
    """The generator sizes the load can ask for (`_size_for`): powers of two, then
    max_batch."""
    sizes = [1]
    while sizes[-1] < self.max_batch:
      sizes.append(min(2 * sizes[-1], self.max_batch))
    return sizes

  def warm_up(self, prompt_tokens: int, new_tokens: int) -> list[int]:
    """Compiles, before `start`, what batches of every size run (`batch_sizes`) on
    prompts of `prompt_tokens` tokens generating `new_tokens` (`Generator.warm_up`), so
    the first requests of that shape do not wait for compilation. Prompts of another
    length compile their prefill when first seen (they are padded to a multiple of 8
    tokens); a persistent compilation cache (`phi_jax.compilation_cache`) keeps every
    compiled shape for the next start. Returns the batch sizes compiled."""
    if self._thread.is_alive():
      raise RuntimeError("warm_up runs before start()")
    sizes = self.batch_sizes()
    for rows in sizes:
      self._generator.resize(rows)
      self._generator.warm_up(prompt_tokens, new_tokens)
    self._generator.resize(1)
    return sizes

  # ----------------------------------------------------------------------------- state
  @property
  def rows_submitted(self) -> int:
    return self.stats.rows_submitted

  @property
  def batches_run(self) -> int:
    """Steps that admitted rows (each one prefill of the rows it admitted)."""
    return self.stats.admissions

  @property
  def queued(self) -> int:
    """Rows waiting for a free row."""
    return len(self._queue)

  @property
  def active(self) -> int:
    """Rows decoding now."""
    return len(self._running)

  # ----------------------------------------------------------------------------- control
  def start(self) -> None:
    if not self._thread.is_alive():
      self._thread.start()

  def submit(self, items: Sequence[WorkItem]) -> None:
    """Queues items for the next free rows.

    Raises:
      ValueError: more items than the queue can ever hold.
      QueueFull: the queue has no room for them now.
      RuntimeError: the scheduler is closing.
    """
    if len(items) > self.max_queue:
      raise ValueError(f"this request needs {len(items)} rows (prompts x n), and the server "
                       f"queues at most {self.max_queue}: send fewer prompts or a smaller n")
    with self._cond:
      if self._closing:
        raise RuntimeError("the server is shutting down")
      if len(self._queue) + len(items) > self.max_queue:
        raise QueueFull(f"the server's queue is full ({len(self._queue)} rows waiting, at "
                        f"most {self.max_queue}): retry later",
                        self._retry_after_s(len(self._queue) + len(items) - self.max_queue))
      self._queue.extend(items)
      self.stats.rows_submitted += len(items)
      self._cond.notify()

  def cancel(self, items: Sequence[WorkItem]) -> None:
    """Drops items whose client went away: queued ones now, decoding ones before the
    next chunk (their rows are free for the next admission). Finished ones are ignored."""
    with self._cond:
      for item in items:
        try:
          self._queue.remove(item)
          self.stats.rows_cancelled += 1
        except ValueError:  # not queued: decoding, or done
          self._cancelled.add(item)
      self._cond.notify()

  def close(self, timeout: float | None = None) -> None:
    """Finishes queued work (waiting up to `timeout` s), then stops; fails what is left."""
    with self._cond:
      self._closing = True
      self._cond.notify()
    if self._thread.is_alive():
      self._thread.join(timeout)
    with self._cond:
      left, self._queue = list(self._queue), collections.deque()
    for item in left:
      item.events.put(("error", item.index, "the server shut down before this request ran"))

  def _retry_after_s(self, excess_rows: int) -> int:
    """Seconds until `excess_rows` rows have likely finished, at the recent rate (1-60)."""
    times = self._finish_times
    if len(times) < 2 or times[-1] <= times[0]:
      return 1
    rate = (len(times) - 1) / (times[-1] - times[0])
    return max(1, min(60, math.ceil(excess_rows / rate)))

  # ----------------------------------------------------------------------------- thread
  def _next(self) -> tuple[list[WorkItem], list[WorkItem]] | None:
    """(items to admit, items to cancel) for the next step; None when it is time to stop."""
    with self._cond:
      while not self._queue and not self._running and not self._closing:
        self._cond.wait()
      if not self._queue and not self._running:
        return None  # closing, and nothing left to do
      cancelled, self._cancelled = [i for i in self._cancelled if i in self._running], set()
      self.stats.rows_cancelled += len(cancelled)
      if self.batching == "static":
        free = self.max_batch if not self._running else 0
      else:
        free = self.max_batch - len(self._running) + len(cancelled)
      admit = [self._queue.popleft() for _ in range(min(free, len(self._queue)))]
      return admit, cancelled

  def _loop(self) -> None:
    while (work := self._next()) is not None:
      admit, cancelled = work
      for item in cancelled:
        self._generator.cancel(item)
        self._running.discard(item)
      if admit:
        self._size_for(len(self._running) + len(admit))
      for item in admit:
        try:
          if item.score_prompt:
            item.prompt_logprobs = self._generator.score(item.prompt, item.logprobs or 0)
          if item.max_new_tokens == 0:  # the prompt alone (echo with max_tokens 0)
            self.stats.prompt_tokens += len(item.prompt) if item.score_prompt else 0
            self.stats.rows_finished += 1
            item.events.put(("done", item.index, sampling.Completion(
                text="", tokens=[], finish_reason="length", prompt_tokens=len(item.prompt),
                logprobs=None if item.logprobs is None else sampling.TokenLogprobs([], []),
                prompt_logprobs=item.prompt_logprobs)))
            continue
          self._generator.add(sampling.Request(
              prompt=item.prompt, params=item.params, max_new_tokens=item.max_new_tokens,
              key=sampling.row_key(item.seed), tag=item, stop=item.stop,
              logprobs=item.logprobs))
        except Exception as e:  # pylint: disable=broad-except
          # The protocol validates requests first: a bug (or a failed scoring) if it happens.
          logging.exception("refused a row")
          item.events.put(("error", item.index, f"generation failed: {e}"))
          self.stats.rows_failed += 1
          continue
        self._running.add(item)
        self.stats.prompt_tokens += len(item.prompt)
      if admit:
        self.stats.admissions += 1
        self.stats.rows_admitted += len(admit)
      if self._running:
        self._step()

  def _step(self) -> None:
    def on_chunk(item: WorkItem, tokens: list[int]) -> None:
      self.stats.generated_tokens += len(tokens)
      if item.stream:
        item.events.put(("tokens", item.index, tokens))

    def on_finish(item: WorkItem, completion: sampling.Completion) -> None:
      completion.prompt_logprobs = item.prompt_logprobs
      self._running.discard(item)
      self.stats.rows_finished += 1
      self._finish_times.append(time.monotonic())
      item.events.put(("done", item.index, completion))

    self.stats.steps += 1
    self.stats.rows_decoded += len(self._running)
    try:
      self._generator.step(on_chunk=on_chunk, on_finish=on_finish)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("generation failed for %d rows", len(self._running))
      message = f"generation failed: {type(e).__name__}: {e}"
      for item in self._running:
        item.events.put(("error", item.index, message))
      self.stats.rows_failed += len(self._running)
      self._running.clear()
      # The failed step may have consumed the generator's donated cache: start afresh.
      self._generator = self._new_generator()
