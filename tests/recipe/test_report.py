"""The run report, rebuilt from the files a finished run leaves (written here by hand)."""

import base64
import json
import os
import shutil
import subprocess
import sys

import pytest

from recipe import graph, report
from tests.conftest import REPO_ROOT


def _write(path, value):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    if path.endswith(".jsonl"):
      f.write("".join(json.dumps(row) + "\n" for row in value))
    else:
      json.dump(value, f)


def _finished_run(workdir):
  """The files of a small finished run: metrics, evaluation, sweep, data, synthetic
  data and decontamination outputs, markers."""
  pretrain = []
  for step in range(1, 21):
    pretrain.append({"step": step, "kind": "train", "loss": 6.0 - 0.1 * step})
  pretrain[-1].update(tokens_per_s=1234.0, step_time_s=0.5)
  for step, bpb in ((10, 3.2), (20, 2.7)):
    pretrain.append({"step": step, "kind": "eval", "loss": 5.0 - step / 20,
                     "bpb_humaneval": bpb, "bpb_mbpp": bpb + 0.1})
  _write(f"{workdir}/pretrain/metrics.jsonl", pretrain)
  _write(f"{workdir}/finetune/metrics.jsonl",
         [{"step": 1, "kind": "train", "loss": 2.0},
          {"step": 2, "kind": "train", "loss": 1.8, "tokens_per_s": 99.0, "mfu": 0.25},
          {"step": 2, "kind": "eval", "loss": 1.9, "bpb_humaneval": 2.5}])
  _write(f"{workdir}/eval/summary.json",
         {"humaneval": {"overall": {"pass@1": 0.125}, "num_problems": 8,
                        "isolation": "rlimits", "bpb": 2.4567}})
  _write(f"{workdir}/eval/checkpoints.json", [
      {"model": "finetune:1", "path": "x", "benchmarks": {"humaneval": {
          "overall": {"pass@1": 0.0}, "bpb": 2.61}}},
      {"model": "finetune:2", "path": "y", "benchmarks": {"humaneval": {
          "overall": {"pass@1": 0.125}, "bpb": 2.4567}}}])
  _write(f"{workdir}/eval/humaneval/results.jsonl",
         [{"task_id": f"HumanEval/{i}", "passed": i == 0} for i in range(8)])
  _write(f"{workdir}/data/stats.json", {"steps": {
      "curate": {"read": 100, "kept": 80, "dropped": {"too_long": 5, "near_duplicate": 15}},
      "classify": {"metrics": {"accuracy": 0.81, "f1": 0.7}},
      "datasets": {"datasets": {"phi1_filtered_code": {"tokens": {"train": 12345,
                                                                  "validation": 321}}}}}})
  _write(f"{workdir}/synthesize/summary.json", {"textbooks": {"accepted": 9, "rejected": {
      "too_short": 2}}})
  _write(f"{workdir}/synthesize/diversity.json", {"distinct_5gram_ratio": 0.93})
  _write(f"{workdir}/decontaminate/summary.json", {"benchmarks": ["humaneval"], "corpora": {
      "phi1_filtered_code": {"records": 50, "kept": 47, "removed": 3,
                             "flagged_by": {"ast": 3}, "out_dir": "/elsewhere"}}})
  _write(f"{workdir}/decontaminate/phi1_filtered_code/report.json", {
      "summary": {"records": 50, "kept": 47, "removed": 3, "out_dir": "/elsewhere"},
      "similar": {"humaneval": {"0.9": ["HumanEval/0"], "0.8": ["HumanEval/0", "HumanEval/1"]}}})
  _write(f"{workdir}/decontaminate/phi1_filtered_code/matches.jsonl", [
      {"id": "lib/copy.py", "where": "filtered_code.jsonl:7", "removed": True,
       "flags": ["ast"], "ast_similar": {"HumanEval/0": 0.93}},
      {"id": "lib/near.py", "where": "filtered_code.jsonl:9", "removed": False, "flags": [],
       "ast_similar": {"HumanEval/1": 0.81}}])
  _write(f"{workdir}/init/COMPLETE.json", {"summary": {"params": 3_700_000}})
  _write(f"{workdir}/pretrain/COMPLETE.json", {"seconds": 12.5, "finished_at": "T"})


def test_report_has_pass_at_1_bpb_per_checkpoint_and_plots(tmp_path):
  workdir = str(tmp_path / "work")
  _finished_run(workdir)
  paths = report.build_report(workdir, graph.build().nodes, {"seed": 0, "workdir": workdir})
  md = open(paths["markdown"]).read()
  assert "| humaneval | 8 | 12.50% | 2.457 |" in md  # pass@1 and bits per byte
  assert "| finetune:1 | 0.00% | 2.61 |" in md and "| finetune:2 | 12.50% | 2.457 |" in md
  assert "selection on the test set" in md
  assert "| 20 | 4 | 2.7 | 2.8 |" in md  # pretraining's evaluation at step 20
  assert "![pretrain loss](pretrain_loss.png)" in md and "pretrain_bpb.png" in md
  assert "| phi1_filtered_code | 12,345 | 321 |" in md  # tokens per dataset
  assert "| dropped.near_duplicate | 15 |" in md and "| metrics.accuracy | 0.81 |" in md
  assert "| textbooks.rejected.too_short | 2 |" in md and "distinct_5gram_ratio" in md
  # decontamination as an analysis: flagged, not removed from the training data
  assert "nothing was removed from the training data" in md
  assert "| phi1_filtered_code | 50 | 3 | 0 | ast 3 |" in md
  assert "| lib/copy.py | filtered_code.jsonl:7 | ast | HumanEval/0 (0.93) | no |" in md
  assert "lib/near.py" not in md  # within the lowest tau, flagged by no check
  # Table 3's layout with the paper's rows beside this run's
  assert "| 0.9 | similar | 1 | 100.0% | 93 | 63.4% | 51.6% |" in md
  assert "|  | non-similar | 7 | 0.0% | 71 | 33.8% | 36.6% |" in md
  assert "|  | total | 8 | 12.5% | 164 | 50.6% | 45.1% |" in md
  # the paper's numbers, labelled, with the scale stated
  assert "## Paper reference" in md and "not the paper's 1.3B" in md and "3.7M" in md
  assert "| phi-1 (1.3B) | Table 1 | 50.6% | 55.5% | 12.5% | - |" in md
  assert "| phi-1-base (1.3B) | Table 1 (phi-1 before finetuning) | 29.0% | - | - | - |" in md
  assert "| phi-1-small (350M) | Table 1 | 45.0% | - | 12.5% | - |" in md
  assert "| 1234 | 0.5 | n/a" in md and "25.0%" in md  # throughput; finetune's MFU
  assert "| pretrain | complete | 12.5 | T |" in md and "| sample | not run |" in md
  png = open(os.path.join(workdir, "report", "pretrain_loss.png"), "rb").read()
  assert png.startswith(b"\x89PNG")
  page = open(paths["html"]).read()
  assert base64.b64encode(png).decode() in page  # embedded, self-contained
  assert "<strong>Warning.</strong>" in page
  # rebuilt from the same files: the same bytes (deterministic)
  report.build_report(workdir, graph.build().nodes, {"seed": 0, "workdir": workdir})
  assert open(paths["markdown"]).read() == md and open(paths["html"]).read() == page


def test_run_py_report_rebuilds_without_running_stages(tmp_path):
  workdir = str(tmp_path / "work")
  _finished_run(workdir)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "run.py"),
                           f"--report={workdir}"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert os.path.isfile(os.path.join(workdir, "report", "report.html"))
  assert sorted(os.listdir(workdir)) == ["data", "decontaminate", "eval", "finetune", "init",
                                         "pretrain", "report", "synthesize"]  # nothing ran
  md = open(os.path.join(workdir, "report", "report.md")).read()
  assert '"workdir": "workdir/tiny"' in md  # no recorded config: the flags' config
  missing = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "run.py"),
                            f"--report={tmp_path}/none"], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
  assert missing.returncode == 2 and "no such work directory" in missing.stderr


def test_long_context_pass_rate_by_length_and_depth(tmp_path):
  """A benchmark with a (length, depth) breakdown gets a table and a heat map whose
  cells are the breakdown's, missing cells shown as '-'."""
  workdir = str(tmp_path / "work")
  cells = [{"length": 1000, "depth": 0.0, "samples": 4, "passed": 3, "pass_rate": 0.75},
           {"length": 1000, "depth": 1.0, "samples": 4, "passed": 0, "pass_rate": 0.0},
           {"length": 8000, "depth": 0.0, "samples": 4, "passed": 1, "pass_rate": 0.25}]
  _write(os.path.join(workdir, "eval", "summary.json"), {"long-context": {
      "overall": {"pass@1": 4 / 12}, "num_problems": 12, "isolation": "bwrap",
      "breakdown": {"kind": "length_depth", "unit": "characters", "lengths": [1000, 8000],
                    "depths": [0.0, 1.0], "cells": cells}}})
  paths = report.build_report(workdir, [], {"seed": 0})
  md = open(paths["markdown"]).read()
  assert "| length / depth | 0 | 1 |" in md
  assert "| 1000 | 75% (3/4) | 0% (0/4) |" in md and "| 8000 | 25% (1/4) | - |" in md
  png = os.path.join(workdir, "report", "long-context_heatmap.png")
  assert open(png, "rb").read().startswith(b"\x89PNG")
  assert "![long-context pass rate by length and depth](long-context_heatmap.png)" in md


@pytest.mark.slow
def test_the_tiny_models_long_context_and_cruxeval_results_are_reported(tiny_run, tmp_path):
  """The eval stage on a copy of the finished tiny run with long-context (the longest
  files past the model's 512-token context) and CRUXEval-O added: pass@1, bits per
  byte, and the pass rate by length and depth in the report."""
  from tests import conftest  # pylint: disable=g-import-not-at-top
  from tests.eval.benchmarks.test_cruxeval import CRUXEVAL_PATH  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "work")
  shutil.copytree(tiny_run[0], workdir, symlinks=True)
  benchmarks, crux = "humaneval,long-context", []
  if os.path.isfile(CRUXEVAL_PATH):
    benchmarks += ",cruxeval-o"
    crux = [f"--config.eval.data_paths=('cruxeval-o={CRUXEVAL_PATH}',)"]
  result = conftest.run_py(
      *conftest.TINY_RUN_ARGS, f"--workdir={workdir}", "--stages=eval,report",
      f"--config.eval.benchmarks={benchmarks}", f"--config.eval.bpb_benchmarks={benchmarks}",
      "--config.eval.checkpoints=()", *crux,
      "--config.eval.long_context_lengths=(300,3000)",
      "--config.eval.long_context_depths=(0.0,0.5,1.0)", "--config.eval.long_context_per_cell=1",
      "--config.eval.max_new_tokens=16")
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, "eval", "summary.json")) as f:
    summary = json.load(f)
  for name in benchmarks.split(","):
    assert 0.0 <= summary[name]["overall"]["pass@1"] <= 1.0 and summary[name]["bpb"] > 0
  cells = summary["long-context"]["breakdown"]["cells"]
  assert {(c["length"], c["depth"]) for c in cells} == {
      (n, d) for n in (300, 3000) for d in (0.0, 0.5, 1.0)}
  md = open(os.path.join(workdir, "report", "report.md")).read()
  assert "### long-context: pass rate by length and depth" in md
  assert "| length / depth | 0 | 0.5 | 1 |" in md
  for c in cells:
    assert f"({c['passed']}/1)" in md
  assert os.path.isfile(os.path.join(workdir, "report", "long-context_heatmap.png"))
  # the longest files are longer than the context the model was trained for
  from data_pipeline import catalog  # pylint: disable=g-import-not-at-top
  from eval.benchmarks import long_context  # pylint: disable=g-import-not-at-top
  from phi_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  tokenizer = Tokenizer.from_dir(catalog.tokenizer_dir(workdir))
  longest = long_context.generate(0, 3000, 0.5).prompt
  assert len(tokenizer.encode(longest)) > 512
