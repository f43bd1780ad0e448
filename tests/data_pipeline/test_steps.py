"""Tests of data_pipeline.steps: stats of chained steps, own-time accounting, progress."""

import io
import time

from data_pipeline.records import Record
from data_pipeline.steps import Filter, Step, StepStats, collect_stats, run_steps


class DropOdd(Filter):
  name = "drop_odd"

  def drop_reason(self, record):
    return "odd" if int(record.id) % 2 else None


class DropMultiplesOfThree(Filter):
  name = "drop_three"

  def drop_reason(self, record):
    return "three" if int(record.id) % 3 == 0 else None


class Duplicate(Step):
  """A one-to-many step: yields each record twice."""
  name = "duplicate"

  def process(self, records):
    for record in records:
      yield record
      yield record


class Sleepy(Step):
  name = "sleepy"

  def __init__(self, seconds):
    super().__init__()
    self.seconds = seconds

  def process(self, records):
    for record in records:
      time.sleep(self.seconds)
      yield record


def records(n):
  return [Record(id=str(i), text="", origin=f"f{i}.py") for i in range(n)]


def test_chained_filters_count_in_out_and_reasons():
  steps = [DropOdd(), DropMultiplesOfThree(), Duplicate()]
  out = list(run_steps(records(30), steps))
  expected = [r for r in records(30) if int(r.id) % 2 == 0 and int(r.id) % 3 != 0]
  assert out == [r for r in expected for _ in range(2)]
  odd, three, dup = collect_stats(*steps)
  assert (odd["in"], odd["out"], odd["dropped"]) == (30, 15, {"odd": 15})
  assert (three["in"], three["out"], three["dropped"]) == (15, 10, {"three": 5})
  assert (dup["in"], dup["out"]) == (10, 20)
  for stats in (odd, three):
    assert stats["in"] == stats["out"] + stats["dropped_total"]
  assert odd["examples"][:2] == ["odd: f1.py", "odd: f3.py"]


def test_examples_are_bounded():
  stats = StepStats("s", max_examples=3)
  for i in range(10):
    stats.drop("bad", f"file:{i}")
  assert stats.dropped["bad"] == 10
  assert stats.examples == ["bad: file:0", "bad: file:1", "bad: file:2"]


def test_elapsed_counts_only_the_steps_own_time():
  slow, fast = Sleepy(0.03), DropOdd()
  list(run_steps(records(10), [slow, fast]))
  # The filter after the sleeper waits >= 0.3 s for its inputs, but that is not its time:
  # counted, it would be at least the sleeper's. The margin (half the sleeper's time)
  # leaves room for a loaded machine descheduling the filter's own few microseconds.
  assert slow.stats.elapsed_s >= 0.3
  assert fast.stats.elapsed_s < 0.5 * slow.stats.elapsed_s
  assert slow.stats.records_per_s == slow.stats.records_in / slow.stats.elapsed_s


def test_progress_lines_on_the_stream():
  stream = io.StringIO()
  out = list(run_steps(records(10), [DropOdd()], progress_every=2, stream=stream,
                       label="test"))
  lines = stream.getvalue().splitlines()
  assert len(out) == 5
  assert len(lines) == 2 + 1  # after 2 and 4 records out, then the final line
  assert lines[-1].startswith("test: 5 records out (done)")
  assert "drop_odd 10->5" in lines[-1]
