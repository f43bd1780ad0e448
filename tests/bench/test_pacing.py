"""bench/pacing.py end to end with small limits: both phases, and the dated rows it
appends (to a temporary BENCHMARKS file)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


def spread(cell: str) -> tuple[float, float, float]:
  median, low, high = (float(x) for x in cell.replace("[", "").replace("]", "")
                       .replace(",", " ").split())
  return median, low, high


@pytest.mark.slow
def test_pacing_benchmark_records_achieved_over_limit_of_both_phases(tmp_path):
  benchmarks = tmp_path / "BENCHMARKS.md"
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, "bench", "pacing.py"), "--rpm=120",
       "--tpm=18200", "--requests=4", "--repeats=2", "--reduced", "--latency_s=0.01"],
      capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
      env={**os.environ, "PHI_JAX_BENCHMARKS_FILE": str(benchmarks)})
  assert result.returncode == 0, result.stderr
  from bench import compare, pacing  # pylint: disable=g-import-not-at-top
  rows = [dict(zip(pacing.COLUMNS, compare.split_row(line)))
          for line in benchmarks.read_text().splitlines() if line.startswith("| 20")]
  assert [row["phase"] for row in rows] == ["requests", "tokens"]
  assert rows[0]["limits"] == "rpm 120" and rows[1]["limits"] == "tpm 18,200"
  assert all(row["runs"] == "2 (reduced: below 5)" for row in rows)
  for row, column in zip(rows, ("req achieved/limit", "tok achieved/limit")):
    median, low, high = spread(row[column])
    # the teacher enforces its limit, so at most 1; paced, the client gets most of it
    assert 0.5 < low <= median <= high <= 1.0, row
  # the request limit is the client's own count: nothing beyond it is sent
  assert rows[0]["429s"] == "0" and int(rows[1]["429s"]) >= 0
