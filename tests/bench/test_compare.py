"""bench/compare.py: the alternation order, the statistics, the rows and superseding,
on fake clocks and temporary files (no timing of real work)."""

from __future__ import annotations

import statistics

import pytest

from bench import compare, record


class FakeClock:
  """A clock that advances by the seconds the running side is scripted to take."""

  def __init__(self):
    self.t = 0.0

  def __call__(self) -> float:
    return self.t


def scripted_side(clock: FakeClock, log: list, name: str, seconds: list[float]):
  durations = iter(seconds)

  def run():
    log.append(name)
    clock.t += next(durations)
  return run


def test_sides_warm_up_then_take_turns_in_abba_order():
  clock, log = FakeClock(), []
  a = scripted_side(clock, log, "a", [9.0] + [1.0] * 4)  # the warm-up is slow and untimed
  b = scripted_side(clock, log, "b", [9.0] + [2.0] * 4)
  timings = compare.alternate([("a", a), ("b", b)], repeats=4, warmups=1, clock=clock)
  assert log == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
  assert timings.order == log[2:]
  assert timings.seconds == {"a": [1.0] * 4, "b": [2.0] * 4}


def test_ratio_is_per_round_and_spreads_are_median_min_max():
  clock, log = FakeClock(), []
  a_seconds = [1.0, 2.0, 1.0, 4.0, 1.0]
  b_seconds = [2.0, 2.0, 3.0, 4.0, 1.5]
  result = compare.compare(
      compare.Side("a", scripted_side(clock, log, "a", [0.0] + a_seconds), "XLA 2 cores"),
      compare.Side("b", scripted_side(clock, log, "b", [0.0] + b_seconds), "torch 2"),
      work=8, repeats=5, clock=clock, load=iter([3.0, 5.0]).__next__)
  rates = [8 / s for s in a_seconds]
  assert result.rate("a") == compare.Spread(statistics.median(rates), min(rates), max(rates))
  ratios = [sb / sa for sa, sb in zip(a_seconds, b_seconds)]  # 2, 1, 3, 1, 1.5
  assert result.ratio() == compare.Spread(1.5, 1.0, 3.0)
  assert result.ratios() == ratios
  assert (result.load_before, result.load_after) == (3.0, 5.0)
  assert result.meets(1.5) and not result.meets(1.6)
  assert compare.goal_cell(result, 2) == "MISSED (1.50x < 2x)"
  assert compare.goal_cell(result, 1.5) == "met (>= 1.5x)"


def test_fewer_than_five_repeats_only_when_the_row_says_reduced():
  side = compare.Side("a", lambda: None, "1")
  other = compare.Side("b", lambda: None, "1")
  with pytest.raises(ValueError, match="reduced"):
    compare.compare(side, other, work=1, repeats=3)
  result = compare.compare(side, other, work=1, repeats=3, reduced=True, warmups=0)
  cells = compare.common_cells(result, date="D", commit_id="C", machine_name="M")
  assert cells[4] == "3 per side (reduced: below 5)"
  assert cells[5] == "a: 1; b: 1"
  with pytest.raises(ValueError, match="differ"):
    compare.alternate([("a", lambda: None), ("a", lambda: None)], repeats=1)


def test_rows_are_appended_under_their_section_and_read_back(tmp_path):
  path = str(tmp_path / "BENCHMARKS.md")
  columns = ("date", "x", "ratio")
  compare.append("## s1", "Intro one.\n", columns, ["2026-01-01", "1", "1.5 [1.0, 2.0]"], path)
  compare.append("## s2", "Intro two.\n", ("date", "y"), ["2026-01-02", "7"], path)
  compare.append("## s1", "Intro one.\n", columns, ["2026-01-03", "2", "2.0 [2.0, 2.0]"], path)
  text = open(path).read()
  assert text.startswith(record.HEADER)
  assert compare.section_rows(text, "## s1") == [
      {"date": "2026-01-01", "x": "1", "ratio": "1.5 [1.0, 2.0]"},
      {"date": "2026-01-03", "x": "2", "ratio": "2.0 [2.0, 2.0]"}]
  assert compare.section_rows(text, "## s2") == [{"date": "2026-01-02", "y": "7"}]
  with pytest.raises(ValueError, match="3 cells for 2 columns"):
    compare.append("## s2", "", ("date", "y"), ["a", "b", "c"], path)


def test_supersede_marks_selected_unmarked_rows_of_one_section_only(tmp_path):
  path = str(tmp_path / "BENCHMARKS.md")
  for date, x in (("d1", "1"), ("d2", "2"), ("d3", "3")):
    compare.append("## s1", "", ("date", "x"), [date, x], path)
  compare.append("## s2", "", ("date", "x"), ["d4", "1"], path)
  assert compare.supersede("## s1", "new 1", path, where=lambda row: row["x"] != "3") == 2
  assert compare.supersede("## s1", "new 2", path) == 1  # the marked two stay as they were
  text = open(path).read()
  assert [r["date"] for r in compare.section_rows(text, "## s1")] == [
      "d1 (superseded by new 1)", "d2 (superseded by new 1)", "d3 (superseded by new 2)"]
  assert compare.section_rows(text, "## s2") == [{"date": "d4", "x": "1"}]
  with pytest.raises(ValueError, match="no section"):
    compare.supersede("## s3", "x", path)


def test_spread_format_and_round_orders():
  assert compare.Spread.of([3.0, 1.0, 2.0]).format(1) == "2.0 [1.0, 3.0]"
  assert compare.round_orders(["a", "b"], 3) == [["a", "b"], ["b", "a"], ["a", "b"]]


def test_commit_is_dirty_for_changed_code_but_not_for_new_rows(tmp_path, monkeypatch):
  """A row's commit names the code measured: rows appended to BENCHMARKS.md by an
  earlier benchmark of the same run do not make it '+dirty'; a changed file does."""
  import subprocess  # pylint: disable=g-import-not-at-top
  git = lambda *args: subprocess.run(["git", *args], cwd=tmp_path, check=True,
                                     capture_output=True, text=True).stdout.strip()
  git("init", "-q")
  for name in ("BENCHMARKS.md", "code.py"):
    (tmp_path / name).write_text("x\n")
  git("add", ".")
  git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
  monkeypatch.setattr(record, "REPO_ROOT", str(tmp_path))
  head = git("rev-parse", "--short", "HEAD")
  (tmp_path / "BENCHMARKS.md").write_text("x\n| a row |\n")
  assert compare.commit() == head
  (tmp_path / "code.py").write_text("y\n")
  assert compare.commit() == head + "+dirty"
