"""The run report, rebuilt from the files a finished run leaves (written here by hand)."""

import base64
import json
import os
import shutil
import subprocess
import sys

import pytest

from recipe import graph, report
from recipe.reporting import blocks
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
         [{"task_id": f"HumanEval/{i}", "sample_index": 0, "passed": i == 0,
           "completion": f"    return {i}\n",
           "failure": None if i == 0 else ("timeout: 3 s" if i == 1 else "AssertionError: x")}
          for i in range(8)])
  _write(f"{workdir}/data/stats.json", {"steps": {
      "curate": {"documents": 80, "stats": [
          {"name": "source:files", "in": 100, "out": 100, "dropped": {}},
          {"name": "size", "in": 100, "out": 95, "dropped": {"too_long": 5}},
          {"name": "near_dedup", "in": 95, "out": 80, "dropped": {"near_duplicate": 15}}]},
      "classify": {"documents": 80, "kept": 50, "report": {
          "model": "random_forest", "train_size": 40, "test_size": 10,
          "held_out": {"accuracy": 0.81, "f1": 0.7},
          "majority_baseline": {"accuracy": 0.6, "f1": 0.75}},
          "histogram": {"bin_edges": [0.0, 0.5, 1.0], "threshold": 0.5,
                        "classifier": {"counts": [30, 50]}}},
      "exercises": {"exercises": 7, "stats": {"in": 20, "out": 7, "dropped": {
          "no_docstring": 10, "method": 3}, "extra": {"files": 50}}},
      "datasets": {"datasets": {"phi1_filtered_code": {
          "documents": {"train": 45, "validation": 5},
          "tokens": {"train": 12345, "validation": 321}}}, "empty": ["phi1_textbooks"]},
      "tokenizer": {"vocab_size": 1024, "out": f"{workdir}/data/tokenizer"}}})
  _write(f"{workdir}/synthesize/summary.json", {
      "teacher": "gpt-x", "sent": {"requests": 11, "prompt_tokens": 900, "completion_tokens": 300},
      "textbooks": {"requests": 11, "accepted": 9, "rejected": 2,
                    "rejected_by_gate": {"too_short": 2}}})
  _write(f"{workdir}/synthesize/diversity.json", {"generators": {"textbooks": {
      "near_duplicate_rate": 0.07,
      "topics": {"concept": {"covered": 5, "of": 10, "most": [["loops", 3]], "least": []}}}}})
  _write(f"{workdir}/synthesize/textbooks.jsonl", [{"id": "t0", "text": "# Loops\nA loop repeats."}])
  _write(f"{workdir}/synthesize/rejected.jsonl", [
      {"id": "t9", "generator": "textbooks", "gate": "too_short", "reason": "12 < 100 characters",
       "raw": "Hi\x00"}])
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
  # the data funnel: every drop by reason, the classifier, the dataset's documents
  assert "| size | too_long | 5 files | 95 files |" in md
  assert "| near_dedup | near_duplicate | 15 files | 80 files |" in md
  assert "| quality classifier | score below the keep threshold | 30 files | 50 files |" in md
  assert "| dataset phi1_filtered_code | documents tokenized | - | 50 files |" in md
  assert "| accuracy | 0.81 | 0.6 |" in md  # held out beside the majority baseline
  assert "| phi1_filtered_code | 45 documents | 12.3k tokens | 5 documents | 321 tokens |" in md
  assert "| check | no_docstring | 10 functions | 10 functions |" in md  # the miner's funnel
  assert "| out | data/tokenizer |" in md  # paths relative to the work directory
  # synthetic data: the gates as a funnel, topic coverage, a rejected record's reason
  assert "| too_short | 2 records | 9 records |" in md and "| concept | 5 | 10 | loops (3) | - |" in md
  assert "at gate `too_short`: 12 < 100 characters" in md and "Hi\\x00" in md
  # samples: a passing one first, then one per failure kind
  assert "`HumanEval/0` sample 0: **passed**" in md and "**timeout**" in md
  assert "**AssertionError**" in md
  for image in ("data_funnel.png", "quality_scores.png", "exercise_funnel.png",
                "synth_textbooks_funnel.png", "synth_textbooks_topics.png"):
    assert f"]({image})" in md and os.path.isfile(os.path.join(workdir, "report", image))
  assert not blocks.nested_cells(report.report_blocks(
      workdir, os.path.join(workdir, "report"), graph.build().nodes, {"seed": 0}))
  # decontamination as an analysis: flagged, not removed from the training data
  assert "nothing was removed from the training data" in md
  assert "| phi1_filtered_code | 50 records | 3 | 0 | ast 3 |" in md
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
  assert "| pretrain | complete | 12.5 s | T |" in md and "| sample | not run |" in md
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
  assert "| workdir | workdir/tiny |" in md  # no recorded config: the flags' config
  missing = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "run.py"),
                            f"--report={tmp_path}/none"], cwd=REPO_ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
  assert missing.returncode == 2 and "no such work directory" in missing.stderr


def test_report_lists_multipl_e_languages_without_bits_per_byte(tmp_path):
  workdir = str(tmp_path / "work")
  _write(f"{workdir}/eval/summary.json", {
      "humaneval": {"overall": {"pass@1": 0.125}, "num_problems": 8, "bpb": 2.4567},
      "multipl-e-js": {"overall": {"pass@1": 0.5}, "num_problems": 2, "isolation": "bwrap"},
      "multipl-e-rs": {"overall": {"pass@1": 0.0}, "num_problems": 2, "isolation": "bwrap"}})
  paths = report.build_report(workdir, graph.build().nodes, {"seed": 0, "workdir": workdir})
  md = open(paths["markdown"]).read()
  assert "| multipl-e-js | 2 | 50.00% | - |" in md and "| multipl-e-rs | 2 | 0.00% | - |" in md
  assert "| humaneval | 8 | 12.50% | 2.457 |" in md


def _sweep_entry(workdir, model, passed):
  """A sweep entry whose per-problem results (pass_at_k.json) are `passed` (bools)."""
  from eval import passk
  out = f"eval/checkpoints/{model.replace(':', '_')}"
  result = passk.pass_at_k_report({f"P/{i}": (1, int(p)) for i, p in enumerate(passed)}, [1])
  _write(f"{workdir}/{out}/humaneval/pass_at_k.json", result)
  return {"model": model, "path": model, "dir": out, "benchmarks": {"humaneval": {
      key: result[key] for key in ("overall", "intervals", "bootstrap", "num_problems")}}}


def test_report_gives_intervals_and_paired_comparisons_of_the_sweep(tmp_path):
  workdir = str(tmp_path / "work")
  _finished_run(workdir)
  # 40 problems: none solved, then 30 (a real change), then the same 30 and one more
  first = _sweep_entry(workdir, "finetune:1", [False] * 40)
  second = _sweep_entry(workdir, "finetune:2", [True] * 30 + [False] * 10)
  third = _sweep_entry(workdir, "finetune:3", [True] * 31 + [False] * 9)
  _write(f"{workdir}/eval/checkpoints.json", [first, second, third])
  checked = dict(third["benchmarks"]["humaneval"], verdicts={"rechecked": 3, "unstable": 1},
                 machine={"scale": 1.5, "probe_s": 0.195},
                 determinism={"problems": 8, "batch_size": 32, "device": "cpu",
                              "dtype": "float32", "variants": {
                                  "batch_1": {"diverged": 0, "pass@1_change": 0.0},
                                  "shuffled": {"diverged": 2, "pass@1_change": -0.125}}})
  _write(f"{workdir}/eval/summary.json", {"humaneval": checked})
  md = open(report.build_report(workdir, graph.build().nodes)["markdown"]).read()
  low, high = third["benchmarks"]["humaneval"]["intervals"]["pass@1"]
  assert 0.5 < low < 0.775 < high < 0.95
  row = f"| humaneval | pass@1 | 77.50% | {100 * low:.2f}-{100 * high:.2f}% | 95% | 10,000 |"
  assert f"| evaluated model {row}" in md and f"| finetune:3 {row}" in md
  assert "95% level, 10,000 resamples" in md
  lines = {line.split(" | ")[2]: line for line in md.splitlines()
           if line.startswith("| humaneval | pass@1 | finetune:")}
  cells = lines["finetune:1 -> finetune:2"].split(" | ")
  assert cells[3] == "+75.00" and float(cells[5]) < 0.001 and cells[6] == "yes |"
  assert lines["finetune:2 -> finetune:3"].split(" | ")[3] == "+2.50"
  assert lines["finetune:2 -> finetune:3"].endswith("| no (within noise) |")
  assert lines["finetune:1 -> finetune:3"].endswith("| yes |")
  assert ("| evaluated model | humaneval | x1.5 (probe 0.195 s) | 1 of 3 | 8 problems vs "
          "batch 32 (cpu, float32): batch 1: 0 diverged, pass@1 +0.00; shuffled: 2 diverged, "
          "pass@1 -12.50 |") in md


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
