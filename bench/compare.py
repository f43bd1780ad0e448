"""One way to compare two sides in a benchmark, and to record the result as a row.

Every comparison in `bench/` (phi_jax against the reference a user would pick) runs
through `compare()`:

- both sides are warmed up (compiled, caches filled) untimed, then timed in turns
  within one invocation, ABBA order (A B, B A, A B, ...) so that a drift in the
  machine's load falls on both sides alike;
- each side runs `repeats` times (at least `MIN_REPEATS` unless the caller says the
  row is reduced, which the row then states);
- the result keeps every run's seconds; the row gives median [min, max] of each side's
  rate and of the ratio, computed per round (the two runs of one round are neighbours
  in time, so their ratio is the least disturbed by load);
- the row records the threads each side used, the machine, the 1-minute load average
  before and after, and the commit.

Rows are appended only by scripts (`append()`; `bench/record.py` does the file
writing, atomically). `supersede()` marks the rows of a section that a new measurement
replaces: their date cell gets "superseded by ..." and they stay as history.

    python -m bench.compare supersede --section "## bench/..." --by "bench/x.py 2026-12-07"
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence

from bench import record

MIN_REPEATS = 5
SUPERSEDED = "superseded by"


@dataclasses.dataclass(frozen=True)
class Spread:
  """Median, min and max of a list of values."""
  median: float
  min: float
  max: float

  @classmethod
  def of(cls, values: Sequence[float]) -> Spread:
    if not values:
      raise ValueError("a spread needs at least one value")
    return cls(statistics.median(values), min(values), max(values))

  def format(self, digits: int = 2) -> str:
    return f"{self.median:,.{digits}f} [{self.min:,.{digits}f}, {self.max:,.{digits}f}]"


def round_orders(names: Sequence[str], repeats: int) -> list[list[str]]:
  """The order the sides run in each round: forwards, then backwards, in turn (ABBA)."""
  return [list(names) if r % 2 == 0 else list(reversed(names)) for r in range(repeats)]


@dataclasses.dataclass
class Timings:
  """Seconds of every timed run, per side, and the order they ran in."""
  seconds: dict[str, list[float]]
  order: list[str]  # side names in the order they were timed


def alternate(sides: Sequence[tuple[str, Callable[[], object]]], repeats: int,
              warmups: int = 1, clock: Callable[[], float] = time.perf_counter,
              progress: bool = False) -> Timings:
  """Warms every side up `warmups` times, then times `repeats` rounds of all sides
  (printing each run's seconds when `progress`)."""
  if repeats < 1 or warmups < 0:
    raise ValueError(f"repeats must be >= 1 and warmups >= 0, got {repeats}, {warmups}")
  names = [name for name, _ in sides]
  if len(set(names)) != len(names):
    raise ValueError(f"side names must differ, got {names}")
  functions = dict(sides)
  for _ in range(warmups):
    for name in names:
      functions[name]()
  seconds = {name: [] for name in names}
  order = []
  for names_this_round in round_orders(names, repeats):
    for name in names_this_round:
      start = clock()
      functions[name]()
      seconds[name].append(clock() - start)
      order.append(name)
      if progress:
        print(f"  {name}: {seconds[name][-1]:.2f} s (run {len(seconds[name])}/{repeats})",
              flush=True)
  return Timings(seconds, order)


@dataclasses.dataclass
class Side:
  """One side of a comparison: its name, what it runs, and the threads it uses."""
  name: str
  run: Callable[[], object]
  threads: str  # e.g. "XLA 2 cores", "torch 2"


@dataclasses.dataclass
class Result:
  """The comparison of side `a` with side `b`; rates are `work` units per second."""
  a: str
  b: str
  work: float
  timings: Timings
  threads: dict[str, str]
  repeats: int
  reduced: bool  # repeats < MIN_REPEATS, at the caller's request
  load_before: float
  load_after: float

  def rates(self, name: str) -> list[float]:
    return [self.work / s for s in self.timings.seconds[name]]

  def rate(self, name: str) -> Spread:
    return Spread.of(self.rates(name))

  def ratios(self) -> list[float]:
    """a's rate over b's, per round (b's seconds / a's seconds)."""
    return [sb / sa for sa, sb in zip(self.timings.seconds[self.a],
                                       self.timings.seconds[self.b])]

  def ratio(self) -> Spread:
    return Spread.of(self.ratios())

  def meets(self, goal: float) -> bool:
    """Whether the median ratio reaches `goal` (a's rate >= goal x b's)."""
    return self.ratio().median >= goal


def load_average() -> float:
  return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def compare(a: Side, b: Side, *, work: float, repeats: int = MIN_REPEATS, warmups: int = 1,
            reduced: bool = False, clock: Callable[[], float] = time.perf_counter,
            load: Callable[[], float] = load_average) -> Result:
  """Times a and b alternately (`alternate`), recording the load before and after.

  work: units one run does (tokens, files, samples), for the rates. repeats below
  MIN_REPEATS are refused unless `reduced` (the row then says so).
  """
  if repeats < MIN_REPEATS and not reduced:
    raise ValueError(f"repeats={repeats} is below {MIN_REPEATS}: pass reduced=True (the row "
                     f"will say the measurement is reduced)")
  load_before = load()
  timings = alternate([(a.name, a.run), (b.name, b.run)], repeats, warmups, clock,
                      progress=clock is time.perf_counter)
  return Result(a=a.name, b=b.name, work=work, timings=timings,
                threads={a.name: a.threads, b.name: b.threads}, repeats=repeats,
                reduced=repeats < MIN_REPEATS, load_before=load_before, load_after=load())


# ---------------------------------------------------------------------- threads
ONE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def limit_to_one_thread() -> str:
  """Puts this process on one core and XLA's CPU client and OpenMP/MKL on one thread.

  Call before jax and torch are imported (XLA reads its flags when its CPU client
  starts); torch's own pool is set with torch.set_num_threads(1) by the caller. Returns
  the description the row records."""
  flags = os.environ.get("XLA_FLAGS", "")
  os.environ["XLA_FLAGS"] = (flags + " " + ONE_THREAD_XLA_FLAGS).strip()
  for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[variable] = "1"
  core = min(os.sched_getaffinity(0))
  os.sched_setaffinity(0, {core})
  return f"pinned to core {core}"


# ------------------------------------------------------------------------- rows
def commit() -> str:
  """The short commit of the checkout, '+dirty' when tracked files differ from it.

  BENCHMARKS.md does not count: it is where the rows go, so the second of several
  benchmarks run in a row would otherwise call the same code dirty.
  """
  root = record.REPO_ROOT
  try:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                            ".", ":(exclude)BENCHMARKS.md"],
                           cwd=root, check=True, capture_output=True, text=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return "-"
  return head + ("+dirty" if dirty.strip() else "")


def machine() -> str:
  """The CPU model and the cores this process may use."""
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return f"{record.cpu_model()} ({os.cpu_count()} cores, {cores} usable)"


# The columns every comparison row starts with; the script's own columns follow.
COMMON_COLUMNS = ("date", "commit", "machine", "load before/after", "repeats", "threads")


def common_cells(result: Result, *, date: str | None = None, commit_id: str | None = None,
                 machine_name: str | None = None) -> list[str]:
  """The COMMON_COLUMNS cells of a result."""
  repeats = f"{result.repeats} per side"
  if result.reduced:
    repeats += f" (reduced: below {MIN_REPEATS})"
  threads = "; ".join(f"{name}: {t}" for name, t in result.threads.items())
  return [date or now(), commit_id or commit(), machine_name or machine(),
          f"{result.load_before:.1f} / {result.load_after:.1f}", repeats, threads]


def now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def goal_cell(result: Result, goal: float) -> str:
  median = result.ratio().median
  return f"met (>= {goal:g}x)" if median >= goal else f"MISSED ({median:.2f}x < {goal:g}x)"


def append(section: str, intro: str, columns: Sequence[str], cells: Sequence,
           path: str | None = None) -> str:
  """Appends one row (cells in `columns` order) under `section`; returns the row."""
  if len(cells) != len(columns):
    raise ValueError(f"{len(cells)} cells for {len(columns)} columns under {section!r}")
  row = record.markdown_row(cells)
  record.append_row(section, intro + "\n" + record.table_header(columns), row, path)
  return row


# --------------------------------------------------------------- reading rows
def split_row(line: str) -> list[str]:
  return [c.strip() for c in line.strip().strip("|").split("|")]


def section_rows(text: str, section: str) -> list[dict[str, str]]:
  """The rows of the table under heading `section` as {column: cell} ([] if absent)."""
  start = text.find(section + "\n")
  if start < 0:
    return []
  end = text.find("\n## ", start + len(section))
  lines = text[start:end if end >= 0 else len(text)].splitlines()
  table = [line for line in lines if line.startswith("|")]
  if len(table) < 2:
    return []
  columns = split_row(table[0])
  return [dict(zip(columns, split_row(line))) for line in table[2:]]


def is_superseded(row: dict[str, str]) -> bool:
  return SUPERSEDED in row.get("date", "")


def supersede(section: str, by: str, path: str | None = None,
              where: Callable[[dict[str, str]], bool] = lambda row: True) -> int:
  """Marks the rows of `section` that `where` selects and that are not yet marked:
  their date cell becomes 'DATE (superseded by BY)'. Returns how many were marked."""
  path = path or record.BENCHMARKS_FILE
  with open(path) as f:
    text = f.read()
  start = text.find(section + "\n")
  if start < 0:
    raise ValueError(f"{path}: no section {section!r}")
  end = text.find("\n## ", start + len(section))
  end = len(text) if end < 0 else end
  lines = text[start:end].split("\n")
  table = [i for i, line in enumerate(lines) if line.startswith("|")]
  if len(table) < 2:
    return 0
  columns = split_row(lines[table[0]])
  if "date" not in columns:
    raise ValueError(f"{path}: the table under {section!r} has no date column")
  date_index = columns.index("date")
  marked = 0
  for i in table[2:]:
    cells = split_row(lines[i])
    row = dict(zip(columns, cells))
    if is_superseded(row) or not where(row):
      continue
    cells[date_index] = f"{cells[date_index]} ({SUPERSEDED} {by})"
    lines[i] = record.markdown_row(cells)
    marked += 1
  if marked:
    from phi_jax import atomic  # pylint: disable=g-import-not-at-top
    atomic.write_text(path, text[:start] + "\n".join(lines) + text[end:])
  return marked


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="Mark BENCHMARKS.md rows superseded.")
  sub = parser.add_subparsers(dest="command", required=True)
  mark = sub.add_parser("supersede", help="mark every unmarked row of a section")
  mark.add_argument("--section", required=True, help="the '## ...' heading line")
  mark.add_argument("--by", required=True,
                    help="what replaces the rows, e.g. 'bench/generate.py 2026-12-07 17:30'")
  mark.add_argument("--path", default=None, help="default: BENCHMARKS.md")
  args = parser.parse_args(argv)
  print(f"marked {supersede(args.section, args.by, args.path)} rows superseded")


if __name__ == "__main__":
  main()
