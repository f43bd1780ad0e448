"""bench/serve.py end to end with the smallest workload: both policies, the table, and
the dated rows it appends (to a temporary BENCHMARKS file)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_serve_benchmark_runs_both_policies_and_records_a_row_per_client_count(tmp_path):
  benchmarks = tmp_path / "BENCHMARKS.md"
  result = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, "bench", "serve.py"), "--clients=1,2",
       "--max_tokens=2,5", "--requests_per_client=1", "--min_requests=2", "--warmups=0",
       "--repeats=2", "--reduced"],
      capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
      env={**os.environ, "JAX_PLATFORMS": "cpu", "PHI_JAX_BENCHMARKS_FILE": str(benchmarks)})
  assert result.returncode == 0, result.stderr
  assert "continuous / static req/s" in result.stdout
  from bench import compare, serve  # pylint: disable=g-import-not-at-top
  rows = [line for line in benchmarks.read_text().splitlines()
          if line.startswith("| 20")]  # dated rows
  assert len(rows) == 2
  cells = [dict(zip(serve.COLUMNS, compare.split_row(row))) for row in rows]
  assert [c["clients"] for c in cells] == ["1", "2"]
  assert [c["requests"] for c in cells] == ["2", "2"]
  assert all(c["repeats"] == "2 per side (reduced: below 5)" for c in cells)
  for c in cells:  # median [min, max] of both policies' req/s
    for policy in ("static", "continuous"):
      median, low, high = (float(x) for x in c[f"{policy} req/s"].replace("[", "").replace(
          "]", "").replace(",", "").split())
      assert 0 < low <= median <= high
