"""phi_jax.progress.Progress: skipped items count as done but not in the rate; finish()."""

import io

from phi_jax.progress import Progress


def test_skipped_items_are_done_but_not_in_the_rate_and_finish_draws_once():
  stream = io.StringIO()
  meter = Progress("job", total=4, unit="requests", stream=stream, log_interval_s=3600)
  meter.counters.update(resumed=0, errors=0)
  meter.skip(resumed=1)
  meter.skip(resumed=1)
  assert meter.done == 2 and meter.skipped == 2 and stream.getvalue() == ""
  assert meter.line().startswith("job: 2/4 requests, 0.0/s, resumed 2, errors 0")
  meter.advance(errors=1)
  meter.finish()
  meter.finish()
  (line,) = stream.getvalue().splitlines()
  assert line.startswith("job: 3/4 requests, ") and "resumed 2, errors 1" in line
  assert line.endswith("s") and "eta" not in line


def test_a_quiet_meter_writes_nothing():
  stream = io.StringIO()
  meter = Progress("job", total=1, enabled=False, stream=stream)
  meter.advance()
  meter.finish()
  assert stream.getvalue() == ""
