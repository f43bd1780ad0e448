"""bench/readme_table.py: README.md's performance table is what BENCHMARKS.md's rows
render to, and a claim shows its latest row that is not superseded."""

from __future__ import annotations

import os

from bench import compare, readme_table
from tests.conftest import REPO_ROOT


def test_the_readme_block_is_the_rendering_of_the_benchmarks_rows():
  with open(os.path.join(REPO_ROOT, "BENCHMARKS.md")) as f:
    rendered = readme_table.render(f.read())
  with open(os.path.join(REPO_ROOT, "README.md")) as f:
    current = readme_table.block(f.read())
  assert current == rendered, "run .venv/bin/python bench/readme_table.py"


def test_a_claim_shows_its_latest_current_row_or_says_none_measures_it(tmp_path):
  path = str(tmp_path / "BENCHMARKS.md")
  columns = ("date", "load before/after", "clients", "static req/s", "continuous req/s",
             "speedup", "timed compiles", "goal")
  for date, clients, speedup in (("d1", "16", "1.2"), ("d2", "16", "1.7"), ("d3", "8", "9")):
    compare.append(readme_table.SERVE, "", columns,
                   [date, "1.0 / 2.0", clients, "1", "2", speedup, "0", "g"], path)
  text = open(path).read()
  serve = next(c for c in readme_table.CLAIMS if c.section == readme_table.SERVE)
  assert readme_table.latest(text, serve)["date"] == "d2"  # d3 is at 8 clients
  compare.supersede(readme_table.SERVE, "later", path, where=lambda row: row["date"] == "d2")
  text = open(path).read()
  assert readme_table.latest(text, serve)["date"] == "d1"
  table = readme_table.render(text)
  assert ("| 1.2x req/s (2 vs 1 req/s; XLA compilations during the timed runs: 0) | g | "
          "1.0 / 2.0 | bench/serve.py, d1 |") in table
  assert "d2" not in table
  sandbox = next(c.what for c in readme_table.CLAIMS if c.section == readme_table.EVAL)
  assert f"| {sandbox} | not measured by a current row |" in table
