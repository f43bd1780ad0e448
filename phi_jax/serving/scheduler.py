"""The scheduler: one thread owns the model and runs queued work in batches.

Request handlers `submit` work items (one per prompt x choice) and read their results
from each item's event queue. The scheduler thread takes everything queued, up to
`max_batch` rows, runs one `sampling.generate_tokens` batch with every row's own
sampling parameters, max_tokens, stop strings and seed, and posts to each item:

  ("tokens", index, new_token_ids)   after each decode chunk (streaming items only)
  ("done", index, Completion)        as soon as the row finishes
  ("error", index, message)          when the batch failed or the server shut down

Items queued while a batch runs go into the next batch.
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading
import time
from collections.abc import Sequence

from absl import logging

from phi_jax import sampling
from phi_jax.model import PhiForCausalLM
from phi_jax.sampling import SamplingParams
from phi_jax.tokenizer import Tokenizer


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


class Scheduler:
  """Batches work items from many threads onto one model, one batch at a time."""

  def __init__(self, model: PhiForCausalLM, tokenizer: Tokenizer, *, max_batch: int = 32,
               chunk_size: int = 16, eos_token_ids: Sequence[int] = ()):
    if max_batch < 1 or chunk_size < 1:
      raise ValueError(f"max_batch and chunk_size must be >= 1, got {max_batch}, {chunk_size}")
    self._model = model
    self._tokenizer = tokenizer
    self._max_batch = max_batch
    self._chunk_size = chunk_size
    self._eos_token_ids = tuple(eos_token_ids)
    self._queue: collections.deque[WorkItem] = collections.deque()
    self._cond = threading.Condition()
    self._closing = False
    self._thread = threading.Thread(target=self._loop, name="phi_jax-scheduler", daemon=True)
    self.rows_submitted = 0  # work items queued so far
    self.batches_run = 0  # batches started so far
    self.rows_run = 0  # work items taken into batches so far

  def start(self) -> None:
    if not self._thread.is_alive():
      self._thread.start()

  def submit(self, items: Sequence[WorkItem]) -> None:
    """Queues items for the next batch; raises RuntimeError once closing."""
    with self._cond:
      if self._closing:
        raise RuntimeError("the server is shutting down")
      self._queue.extend(items)
      self.rows_submitted += len(items)
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

  def _next_batch(self) -> list[WorkItem] | None:
    with self._cond:
      while not self._queue and not self._closing:
        self._cond.wait()
      if not self._queue:
        return None  # closing, and nothing left to do
      n = min(self._max_batch, len(self._queue))
      return [self._queue.popleft() for _ in range(n)]

  def _loop(self) -> None:
    while (batch := self._next_batch()) is not None:
      self._run(batch)

  def _run(self, batch: list[WorkItem]) -> None:
    finished: set[int] = set()

    def on_chunk(row: int, tokens: list[int]) -> None:
      if batch[row].stream:
        batch[row].events.put(("tokens", batch[row].index, tokens))

    def on_finish(row: int, completion: sampling.Completion) -> None:
      finished.add(row)
      batch[row].events.put(("done", batch[row].index, completion))

    self.batches_run += 1  # counted before results go out, so a caller sees its batch
    self.rows_run += len(batch)
    number = self.batches_run
    start = time.perf_counter()
    try:
      sampling.generate_tokens(
          self._model, [item.prompt for item in batch], [item.params for item in batch],
          max_new_tokens=[item.max_new_tokens for item in batch],
          stop=[item.stop for item in batch], eos_token_ids=self._eos_token_ids,
          tokenizer=self._tokenizer, seed=[item.seed for item in batch],
          batch_size=len(batch), chunk_size=self._chunk_size, on_chunk=on_chunk,
          on_finish=on_finish)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("generation failed for a batch of %d rows", len(batch))
      message = f"generation failed: {type(e).__name__}: {e}"
      for row, item in enumerate(batch):
        if row not in finished:
          item.events.put(("error", item.index, message))
    logging.info("batch %d: %d rows in %.2f s", number, len(batch),
                 time.perf_counter() - start)
