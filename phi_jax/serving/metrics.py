"""Server metrics in the Prometheus text exposition format (version 0.0.4).

Counters and histograms are recorded by request handlers (thread-safe); values the
scheduler already counts are read from it when `/metrics` is rendered, as gauges or
counters built on the spot. Names follow Prometheus conventions: `_total` counters,
`_seconds` units, one `# HELP` and `# TYPE` line per family.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Mapping, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Request latency buckets (seconds): a few milliseconds (errors) to minutes (long generations).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   60.0, 120.0, 300.0)


def _escape(value: str) -> str:
  return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
  if not labels:
    return ""
  return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
  if math.isinf(value):
    return "+Inf" if value > 0 else "-Inf"
  return repr(float(value)) if isinstance(value, float) else str(value)


def family(name: str, kind: str, help_text: str,
           samples: Iterable[tuple[str, Mapping[str, str], float]]) -> str:
  """One metric family: HELP, TYPE, then `name{labels} value` per (suffix, labels, value)."""
  lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
  lines += [f"{name}{suffix}{_labels(labels)} {_number(value)}"
            for suffix, labels, value in samples]
  return "\n".join(lines) + "\n"


class LabelledCounter:
  """A counter per label set (e.g. requests by route and status)."""

  def __init__(self, name: str, help_text: str, label_names: Sequence[str]):
    self.name, self.help, self.label_names = name, help_text, tuple(label_names)
    self._values: dict[tuple[str, ...], float] = {}
    self._lock = threading.Lock()

  def inc(self, *label_values: str, amount: float = 1) -> None:
    with self._lock:
      self._values[label_values] = self._values.get(label_values, 0) + amount

  def render(self) -> str:
    with self._lock:
      items = sorted(self._values.items())
    return family(self.name, "counter", self.help,
                  [("", dict(zip(self.label_names, key)), value) for key, value in items])


class Histogram:
  """A histogram with fixed buckets per label set."""

  def __init__(self, name: str, help_text: str, label_names: Sequence[str],
               buckets: Sequence[float] = LATENCY_BUCKETS):
    self.name, self.help, self.label_names = name, help_text, tuple(label_names)
    self.buckets = tuple(sorted(buckets))
    self._counts: dict[tuple[str, ...], list[int]] = {}  # per bucket, not cumulative; +Inf last
    self._sums: dict[tuple[str, ...], float] = {}
    self._lock = threading.Lock()

  def observe(self, value: float, *label_values: str) -> None:
    with self._lock:
      counts = self._counts.setdefault(label_values, [0] * (len(self.buckets) + 1))
      counts[bisect.bisect_left(self.buckets, value)] += 1
      self._sums[label_values] = self._sums.get(label_values, 0.0) + value

  def render(self) -> str:
    with self._lock:
      items = sorted((key, list(counts), self._sums[key]) for key, counts in self._counts.items())
    samples = []
    for key, counts, total in items:
      labels = dict(zip(self.label_names, key))
      cumulative = 0
      for bound, count in zip((*self.buckets, math.inf), counts):
        cumulative += count
        samples.append(("_bucket", {**labels, "le": _number(float(bound))}, cumulative))
      samples.append(("_sum", labels, total))
      samples.append(("_count", labels, cumulative))
    return family(self.name, "histogram", self.help, samples)
