"""Shared by the benchmarks: describe the machine, append a dated row to BENCHMARKS.md."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence

from phi_jax import atomic

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# PHI_JAX_BENCHMARKS_FILE redirects the rows, e.g. to a file that comes back from a
# lent machine (bench/device_check.sh) instead of that machine's copy of the repo.
BENCHMARKS_FILE = (os.environ.get("PHI_JAX_BENCHMARKS_FILE")
                   or os.path.join(REPO_ROOT, "BENCHMARKS.md"))
HEADER = """# Benchmarks

Measured results of the scripts in `bench/`, one dated row per run, appended by the
scripts themselves (never edited by hand). Numbers are only comparable between rows
of the same machine, versions and configuration; the rows record all three. A row
whose date cell says "superseded by ..." was replaced by a later measurement (marked by
`bench/compare.py`'s `supersede`, called by the scripts) and stays as history.
Comparisons (`bench/compare.py`) give median [min, max] over alternated runs and the
1-minute load average before/after: a load well above the cores means the sides
waited for the CPU.
"""


def now() -> str:
  return datetime.datetime.now().strftime("%Y-%m-%d %H:%M")


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), else what the platform module knows."""
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    if names:
      model = names[0]
  except OSError:
    pass
  return model


def cpu_description() -> str:
  """The CPU model, core count and current load average."""
  load = f", load {os.getloadavg()[0]:.1f} at start" if hasattr(os, "getloadavg") else ""
  return f"{cpu_model()} ({os.cpu_count()} cores{load})"


def markdown_row(cells: Sequence) -> str:
  return "| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |"


def table_header(columns: Sequence[str]) -> str:
  return markdown_row(columns) + "\n" + "|" + "---|" * len(columns) + "\n"


def append_row(section: str, intro: str, row: str, path: str | None = None) -> None:
  """Appends the row to the table of `section` in path, atomically (temp + rename).

  section: the '## ...' heading line; intro: the text and table header written under
  it when the section is new; path: default BENCHMARKS_FILE (read at call time).
  """
  path = path or BENCHMARKS_FILE
  text = ""
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
  if not text.strip():
    text = HEADER
  if section not in text:
    text = text.rstrip("\n") + "\n\n" + section + "\n" + intro
  start = text.index(section)
  following = text.find("\n## ", start + len(section))
  end = len(text) if following < 0 else following + 1
  body = text[start:end].rstrip("\n") + "\n" + row + "\n"
  text = text[:start] + body + ("\n" + text[end:] if end < len(text) else "")
  atomic.write_text(path, text)
