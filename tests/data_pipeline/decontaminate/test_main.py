"""The decontamination command builds the benchmarks as the evaluator's flags of the
same names do: long-context files of the given lengths, depths, count and seed."""

import ast
import json
import os
import subprocess
import sys

from eval.benchmarks.long_context import LongContext
from tests.conftest import REPO_ROOT

FLAGS = ("--long_context_lengths=1500", "--long_context_depths=0.5",
         "--long_context_per_cell=1", "--long_context_seed=3")


def _command(*args):
  return subprocess.run([sys.executable, "-m", "data_pipeline.decontaminate", "--quiet",
                         "--benchmarks=long-context", "--checks=ast", *args],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_long_context_flags_give_the_files_checked_against(tmp_path):
  """A record holding (renamed) the function of the file the flags generate is removed,
  nearest to that file (an id no default file has); flags outside the evaluator's
  ranges are a usage error before anything is written."""
  problem = LongContext(lengths=(1500,), depths=(0.5,), per_cell=1, seed=3).load()[0]
  module = ast.parse(problem.prompt + "None")
  function = next(node for node in module.body if isinstance(node, ast.FunctionDef)
                  and node.name == problem.entry_point)
  text = ast.get_source_segment(problem.prompt + "None", function)
  records = tmp_path / "records.jsonl"
  records.write_text(json.dumps({"id": "copy", "text": text.replace(problem.entry_point,
                                                                    "helper")}) + "\n")
  out = tmp_path / "out"
  result = _command(f"--input={records}", f"--out={out}", *FLAGS)
  assert result.returncode == 0, result.stderr[-2000:]
  [removed] = [json.loads(line) for line in open(out / "removed.jsonl")]
  assert removed["nearest"] == {"benchmark": "long-context", "task_id": problem.task_id,
                                "by": "ast"}
  bad = _command(f"--input={records}", f"--out={tmp_path / 'bad'}",
                 "--long_context_depths=2")
  assert bad.returncode == 2 and "--long_context_depths" in bad.stderr, bad.stderr[-2000:]
  assert not os.path.exists(tmp_path / "bad")
