"""Pipeline steps (datatrove style): one small base class, statistics per step.

A `Step` turns a stream of records into a stream of records (`step(records)` is a
generator) and counts what it did in its `StepStats`: records in and out, records
dropped by reason, a bounded list of examples (origins, file:line of bad inputs) and
the seconds spent in the step itself (not waiting for the steps before it), so a
benchmark can report files/s per step. Sources count into a StepStats too: in = files or
rows seen, out = records yielded, dropped = skipped bad inputs by reason.

    steps = [SizeFilter(), ParseFilter(), ExactDedup()]
    for record in run_steps(read_source("stdlib", stats=source_stats), steps):
      ...
    collect_stats(source_stats, *steps)   # [{"name", "in", "out", "dropped", ...}, ...]

For a one-record-in, at-most-one-out step, in == out + sum(dropped).
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

MAX_EXAMPLES = 20


@dataclasses.dataclass
class StepStats:
  """What one step (or source) did.

  Attributes:
    name: the step's name.
    records_in: records (or files, rows, candidates: see the step) that came in.
    records_out: records that went out.
    dropped: count of dropped/skipped inputs by reason.
    extra: other counts the step keeps (e.g. files read by the exercise miner).
    examples: up to `max_examples` lines "reason: where (detail)".
    elapsed_s: seconds spent in the step itself.
  """
  name: str
  records_in: int = 0
  records_out: int = 0
  dropped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  extra: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: list[str] = dataclasses.field(default_factory=list)
  elapsed_s: float = 0.0
  max_examples: int = MAX_EXAMPLES

  def drop(self, reason: str, where: str = "") -> None:
    """Counts one dropped input; `where` (origin, file:line, detail) may become an example."""
    self.dropped[reason] += 1
    if where and len(self.examples) < self.max_examples:
      self.examples.append(f"{reason}: {where}")

  @property
  def dropped_total(self) -> int:
    return sum(self.dropped.values())

  @property
  def records_per_s(self) -> float:
    """Inputs handled per second of the step's own time (0 when nothing was timed)."""
    return self.records_in / self.elapsed_s if self.elapsed_s > 0 else 0.0

  def merge(self, other: StepStats) -> StepStats:
    """Adds `other`'s counts, examples (up to max_examples, after this one's) and time:
    the stats of a step run over shards are their merge in shard order."""
    self.records_in += other.records_in
    self.records_out += other.records_out
    self.dropped.update(other.dropped)
    self.extra.update(other.extra)
    self.examples.extend(other.examples[:max(0, self.max_examples - len(self.examples))])
    self.elapsed_s += other.elapsed_s
    return self

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> StepStats:
    """The StepStats of its `to_dict()`."""
    return cls(d["name"], records_in=d["in"], records_out=d["out"],
               dropped=collections.Counter(d["dropped"]),
               extra=collections.Counter(d["extra"]), examples=list(d["examples"]),
               elapsed_s=float(d["elapsed_s"]))

  def to_dict(self) -> dict[str, Any]:
    return {
        "name": self.name,
        "in": self.records_in,
        "out": self.records_out,
        "dropped": dict(sorted(self.dropped.items())),
        "dropped_total": self.dropped_total,
        "extra": dict(sorted(self.extra.items())),
        "examples": list(self.examples),
        "elapsed_s": round(self.elapsed_s, 4),
        "records_per_s": round(self.records_per_s, 1),
    }


class Step(abc.ABC):
  """A pipeline step: `step(records)` yields the records it keeps (or makes).

  Subclasses implement `process(records)`; the base class counts records in and out
  and the step's own time. A subclass whose input unit is not a record (the exercise
  miner counts candidate functions) sets `count_input = False` and counts
  `stats.records_in` itself.
  """
  name: str = "step"
  count_input: bool = True

  def __init__(self, name: str | None = None):
    if name is not None:
      self.name = name
    self.stats = StepStats(self.name)

  @abc.abstractmethod
  def process(self, records: Iterable[Any]) -> Iterator[Any]:
    """Yields the outputs for `records`, calling `self.stats.drop` for what it drops."""

  def __call__(self, records: Iterable[Any]) -> Iterator[Any]:
    stats = self.stats
    upstream_s = 0.0

    def inputs() -> Iterator[Any]:
      nonlocal upstream_s
      iterator = iter(records)
      while True:
        start = time.perf_counter()
        try:
          record = next(iterator)
        except StopIteration:
          upstream_s += time.perf_counter() - start
          return
        upstream_s += time.perf_counter() - start
        if self.count_input:
          stats.records_in += 1
        yield record

    outputs = iter(self.process(inputs()))
    while True:
      start, upstream_before = time.perf_counter(), upstream_s
      try:
        output = next(outputs)
      except StopIteration:
        stats.elapsed_s += time.perf_counter() - start - (upstream_s - upstream_before)
        return
      stats.elapsed_s += time.perf_counter() - start - (upstream_s - upstream_before)
      stats.records_out += 1
      yield output


class Filter(Step):
  """A step that keeps or drops each record: subclasses implement `drop_reason`."""

  @abc.abstractmethod
  def drop_reason(self, record: Any) -> str | None:
    """Why `record` is dropped, or None to keep it."""

  def process(self, records: Iterable[Any]) -> Iterator[Any]:
    for record in records:
      reason = self.drop_reason(record)
      if reason is None:
        yield record
      else:
        self.stats.drop(reason, getattr(record, "origin", ""))


def run_steps(records: Iterable[Any], steps: Iterable[Step], *, progress_every: int = 0,
              stream: TextIO | None = None, label: str = "data") -> Iterator[Any]:
  """Chains `steps` over `records`; with progress_every > 0, prints a line to stderr
  (or `stream`) every that many records out of the last step, and at the end."""
  steps = list(steps)
  stream = stream if stream is not None else sys.stderr
  chained: Iterable[Any] = records
  for step in steps:
    chained = step(chained)
  if progress_every <= 0:
    yield from chained
    return
  start, count = time.perf_counter(), 0

  def report(final: bool) -> None:
    elapsed = time.perf_counter() - start
    per_step = ", ".join(f"{s.name} {s.stats.records_in}->{s.stats.records_out}"
                         for s in steps)
    print(f"{label}: {count} records out{' (done)' if final else ''} in {elapsed:.1f}s "
          f"({count / max(elapsed, 1e-9):.1f}/s) | {per_step}", file=stream, flush=True)

  for record in chained:
    count += 1
    yield record
    if count % progress_every == 0:
      report(final=False)
  report(final=True)


def collect_stats(*items: Step | StepStats) -> list[dict[str, Any]]:
  """`to_dict()` of each step's (or source's) stats, in order."""
  return [(item.stats if isinstance(item, Step) else item).to_dict() for item in items]
