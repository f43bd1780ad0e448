"""Writing benchmark files and samples, and scoring them through the evaluator."""

import json

from eval import run as eval_run
from eval.sandbox import SandboxLimits
from eval.settings import EvalSettings

LIMITS = SandboxLimits(timeout_s=10.0, cpu_s=10)


def write_jsonl(path, rows):
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return str(path)


def score(tmp_path, name, data, samples, tag, timeout_s=LIMITS.timeout_s):
  """(report, results by task_id) of `samples` on benchmark `name` with data file `data`."""
  report = eval_run.evaluate(name, str(tmp_path / tag), EvalSettings(k=(1,), timeout_s=timeout_s),
                             data_path=data,
                             samples_path=write_jsonl(tmp_path / f"{tag}.jsonl", samples))
  with open(tmp_path / tag / "results.jsonl") as f:
    results = [json.loads(line) for line in f]
  return report, {r["task_id"]: r for r in results}


def assert_right_pass_and_wrong_fail(tmp_path, name, data, right, wrong):
  """Every sample in `right` passes; every {task_id: completion} in `wrong` fails its
  tests (an assertion, not a crash of the checker)."""
  report, _ = score(tmp_path, name, data, right, "right")
  assert report["num_samples"] == len(right) and report["num_correct"] == len(right)
  wrong = [{"task_id": t, "completion": c} for t, c in wrong.items()]
  report, results = score(tmp_path, name, data, wrong, "wrong")
  assert report["num_correct"] == 0
  assert {r["failure"] for r in results.values()} == {"assertion"}
