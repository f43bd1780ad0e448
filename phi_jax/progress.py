"""The one progress line every long loop prints: `desc: done/total, rate, counters, eta`.

On a terminal the line is redrawn in place at most every `tty_interval_s`; elsewhere
(CI logs, files) one line is written every `log_interval_s` and at the end, so logs
stay short. Thread-safe: the sandbox's worker threads and the LLM fan-out update one
meter from many threads.

    meter = Progress("embed", total=len(texts), unit="texts")
    for ...:
      meter.update(done)                        # absolute count
    meter.update(len(texts), final=True)

    meter = Progress("sandbox", total=n)
    meter.advance(passed=int(ok))               # +1 done, and named counters
    meter.close()

    meter.skip(resumed=1)                       # done by an earlier run: not in the rate
    meter.finish()                              # the final line, always
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Progress:
  """A rate-limited progress line on stderr (or `stream`).

  Args:
    desc: the label the line starts with.
    total: the number of items expected, or None when unknown (no eta then).
    enabled: False makes every call a no-op (quiet runs, small jobs).
    unit: the word after the counts ('texts', 'requests'; '' = none).
    stream: where to write (default: sys.stderr at each write).
    tty_interval_s / log_interval_s: the least time between two lines.
  """

  def __init__(self, desc: str, total: int | None = None, *, enabled: bool = True,
               unit: str = "", stream: TextIO | None = None, tty_interval_s: float = 0.5,
               log_interval_s: float = 15.0):
    self.desc, self.total, self.enabled, self.unit = desc, total, enabled, unit
    self._stream = stream
    self.done = 0
    self.counters: dict[str, int] = {}
    self.start = time.monotonic()
    self._last = self.start
    self._lock = threading.Lock()
    self._tty_interval_s, self._log_interval_s = tty_interval_s, log_interval_s
    self.skipped = 0
    self._drawn = False
    self._finished = False

  @property
  def stream(self) -> TextIO:
    return self._stream if self._stream is not None else sys.stderr

  @property
  def tty(self) -> bool:
    return bool(getattr(self.stream, "isatty", lambda: False)())

  def update(self, done: int | None = None, *, final: bool = False, **counters: int) -> None:
    """Sets the done count (when given) and named counters (absolute values)."""
    with self._lock:
      if done is not None:
        self.done = done
      self.counters.update(counters)
      self._maybe_draw(final)

  def advance(self, n: int = 1, **increments: int) -> None:
    """Adds `n` to the done count and each increment to its named counter."""
    with self._lock:
      self.done += n
      for name, value in increments.items():
        self.counters[name] = self.counters.get(name, 0) + int(value)
      self._maybe_draw(final=self.total is not None and self.done >= self.total)

  def skip(self, n: int = 1, **increments: int) -> None:
    """Like `advance`, for items an earlier run finished: counted as done, but not in
    the rate or the eta (a resumed run skips them at once)."""
    with self._lock:
      self.skipped += n
    self.advance(n, **increments)

  def finish(self) -> None:
    """Writes the final line once, even when nothing was drawn before."""
    with self._lock:
      if not self._finished:
        self._maybe_draw(final=True)

  def close(self) -> None:
    """Writes the final line (once), unless the last update already did."""
    with self._lock:
      if self._drawn and not self._finished:
        self._maybe_draw(final=True)

  def line(self, final: bool = False) -> str:
    elapsed = max(time.monotonic() - self.start, 1e-9)
    rate = (self.done - self.skipped) / elapsed
    total = "" if self.total is None else f"/{self.total}"
    unit = f" {self.unit}" if self.unit else ""
    parts = [f"{self.desc}: {self.done}{total}{unit}", f"{rate:.1f}/s"]
    parts += [f"{name.replace('_', ' ')} {value}" for name, value in self.counters.items()]
    if final:
      parts.append(f"{elapsed:.1f}s")
    elif self.total is not None and rate > 0:
      parts.append(f"eta {max(self.total - self.done, 0) / rate:.0f}s")
    return ", ".join(parts)

  def _maybe_draw(self, final: bool) -> None:
    if not self.enabled:
      return
    now = time.monotonic()
    interval = self._tty_interval_s if self.tty else self._log_interval_s
    if not final and now - self._last < interval:
      return
    self._last = now
    self._drawn = True
    self._finished = final
    text = self.line(final)
    if self.tty:
      self.stream.write("\r" + text + ("\n" if final else ""))
    else:
      self.stream.write(text + "\n")
    self.stream.flush()
