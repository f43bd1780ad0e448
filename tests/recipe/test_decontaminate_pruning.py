"""Decontamination is an analysis by default (configs/phi1.py, the paper's phi-1): the
similar records are reported and the training data keeps them; pruning is an option."""

import json
import os
import shutil

from configs import phi1
from recipe import graph as graph_lib
from recipe import runner
from tests import conftest
from tests.recipe.test_plan_fields import changed_nodes, set_field, tiny_run_config

FILTERED = "phi1_filtered_code"


def _lines(path: str) -> int:
  with open(path, encoding="utf-8") as f:
    return sum(1 for line in f if line.strip())


def _documents(workdir: str, dataset: str) -> int:
  with open(os.path.join(workdir, "data", "steps", "datasets.json")) as f:
    built = json.load(f)["summary"]["datasets"]
  return sum(built[dataset]["documents"].values())


def test_phi1_settings_keep_the_similar_records_in_training_and_report_them(tiny_run):
  workdir, _ = tiny_run
  config = tiny_run_config()
  # the tiny run prunes as configs/phi1.py does: not at all (its other checks stay
  # offline: HumanEval only, no pretrained embedder)
  for field in ("prune", "prune_datasets", "prune_tau", "taus"):
    assert config.decontaminate[field] == phi1.get_config().decontaminate[field], field
  assert phi1.get_config().decontaminate.prune is False
  with open(os.path.join(workdir, "decontaminate", "summary.json")) as f:
    flagged = json.load(f)["corpora"][FILTERED]["removed"]
  assert flagged > 0  # the tiny data has records close to HumanEval
  source = os.path.join(workdir, "data", "curated", "filtered_code.jsonl")
  assert _documents(workdir, FILTERED) == _lines(source)  # nothing removed from training
  ctx = runner.Context(config, workdir, graph_lib.build())
  for name in ("tokenizer", "datasets", "pretrain"):
    assert "decontaminate" not in ctx.graph[name].upstream(ctx), name
  with open(os.path.join(workdir, "report", "report.md")) as f:
    md = f.read()
  assert "nothing was removed from the training data" in md
  assert f"| {FILTERED} | " in md and f"### Similar records: {FILTERED}" in md
  with open(os.path.join(workdir, "decontaminate", FILTERED, "matches.jsonl")) as f:
    first = next(json.loads(line) for line in f if json.loads(line)["flags"])
  assert f"| {first['id']} | " in md
  # its settings never make training rerun or refuse
  changed = tiny_run_config()
  set_field(changed, "decontaminate.prune_tau", 0.9)
  rerun, refused = changed_nodes(workdir, changed)
  # (and the attribution of passing samples, which takes its near-copy threshold)
  assert rerun == {"decontaminate", "attribute", "report"} and not refused


def test_the_pruning_option_removes_the_flagged_records(tiny_run, tmp_path):
  workdir, _ = tiny_run
  config = tiny_run_config()
  set_field(config, "decontaminate.prune", True)
  rerun, refused = changed_nodes(workdir, config)
  assert {"tokenizer", "datasets", "data"} <= rerun and "decontaminate" not in rerun
  assert {"pretrain", "finetune"} <= refused  # their data changed
  # the data stage rerun on a copy of the run (training left out)
  copy = str(tmp_path / "work")
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns(
      "pretrain", "finetune", "curves", "eval", "sample", "export_hf", "report"))
  result = conftest.run_py(*conftest.TINY_RUN_ARGS, f"--workdir={copy}",
                           "--config.decontaminate.prune=True", "--stages=data")
  assert result.returncode == 0, result.stderr[-3000:]
  kept = os.path.join(copy, "decontaminate", FILTERED, "kept.jsonl")
  source = os.path.join(copy, "data", "curated", "filtered_code.jsonl")
  assert _documents(copy, FILTERED) == _lines(kept) < _lines(source)


def test_a_tiny_report_lists_the_papers_numbers(tiny_run):
  workdir, _ = tiny_run
  with open(os.path.join(workdir, "report", "report.md")) as f:
    md = f.read()
  section = md[md.index("## Paper reference"):]
  section = section[:section.index("\n## ", 1)]
  assert "The paper's numbers (Gunasekar et al. 2023, arXiv 2306.11644)" in section
  assert "not the paper's 1.3B (phi-1) or 350M (phi-1-small)" in section
  assert "| phi-1 (1.3B) | Table 1 | 50.6% | 55.5% |" in section
  assert "| phi-1-base (1.3B) | Table 1 (phi-1 before finetuning) | 29.0% |" in section
  assert "| phi-1-small (350M) | Table 1 | 45.0% |" in section
