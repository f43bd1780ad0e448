"""The runner's promise on the cases that broke it: a measurement setting re-measures
without retraining, the random local teacher is reproducible, and two teachers at once
are refused. (Every leaf field's plan: tests/recipe/test_plan_fields.py.)"""

import json
import os
import shutil

import pytest

from recipe import runner
from recipe import graph as graph_lib
from tests import conftest
from tests.recipe.test_plan_fields import tiny_run_config


@pytest.fixture
def workdir(tiny_run, tmp_path):
  """A copy of the finished tiny run, to change."""
  copy = str(tmp_path / "work")
  shutil.copytree(tiny_run[0], copy, symlinks=True)
  return copy


def run(workdir, *args):
  result = conftest.run_py(*conftest.TINY_RUN_ARGS, f"--workdir={workdir}", *args)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout + result.stderr


def test_a_bits_per_byte_setting_redraws_the_curves_without_retraining(workdir):
  before = json.load(open(os.path.join(workdir, "curves", "pretrain.json")))
  assert before["bpb_source"] == "measured during training"
  during = [p for p in before["points"] if "bpb_humaneval" in p]
  assert [p["step"] for p in during] == [0, 3, 6]
  out = run(workdir, "--config.eval.bpb_max_len=64", "--config.eval.bpb_limit=5")
  assert "[pretrain] complete, skipped" in out and "[finetune] complete, skipped" in out
  assert "[curves] rerun" in out and "[eval] rerun" in out
  after = json.load(open(os.path.join(workdir, "curves", "pretrain.json")))
  assert after["bpb_source"].startswith("re-measured at the kept checkpoints (steps 3, 6)")
  remeasured = {p["step"]: p["bpb_humaneval"] for p in after["points"] if "bpb_humaneval" in p}
  assert set(remeasured) == {3, 6}
  # the last checkpoint, re-measured, is what the eval stage measures with these settings
  finetune = json.load(open(os.path.join(workdir, "curves", "finetune.json")))
  last = max(p["step"] for p in finetune["points"] if "bpb_humaneval" in p)
  summary = json.load(open(os.path.join(workdir, "eval", "summary.json")))
  assert [p["bpb_humaneval"] for p in finetune["points"] if p["step"] == last][0] == \
      pytest.approx(summary["humaneval"]["bpb"], rel=1e-5)
  # the held-out loss points measured during training are kept
  assert [p["step"] for p in after["points"] if "loss" in p] == [0, 3, 6]


def _synthesized(workdir):
  names = ("textbooks.jsonl", "exercises.jsonl", "rejected.jsonl")
  return {n: open(os.path.join(workdir, "synthesize", n), "rb").read() for n in names}


def test_the_random_local_teacher_gives_the_same_files_with_the_cache_cleared(workdir):
  first = _synthesized(workdir)
  for attempt in range(2):
    shutil.rmtree(os.path.join(workdir, "llm_cache"), ignore_errors=True)
    out = run(workdir, "--stages=synthesize", "--force=synthesize")
    assert "this run sent 8 request(s)" in out, out  # answered by the teacher, not a cache
    assert _synthesized(workdir) == first, f"attempt {attempt}"


def test_a_checkpoint_as_local_teacher_is_asked_afresh(workdir):
  """Another model served under the local teacher's name: not answered from the cache of
  the random one (the cache key holds the served model's fingerprint)."""
  teacher = os.path.join(workdir, "init", "checkpoints")
  out = run(workdir, "--stages=synthesize", f"--config.synth.local_teacher={teacher}")
  assert "[synthesize] rerun: " in out
  assert "this run sent 8 request(s)" in out, out


def test_two_teachers_are_refused_with_both_fields(tiny_run):
  config = tiny_run_config()
  config.synth.teacher.base_url = "http://127.0.0.1:8000/v1"
  with pytest.raises(runner.UsageError) as error:
    runner.Context(config, tiny_run[0], graph_lib.build())
  assert "config.synth.local_teacher" in str(error.value)
  assert "config.synth.teacher.base_url" in str(error.value)
  result = conftest.run_py(*conftest.TINY_RUN_ARGS, f"--workdir={tiny_run[0]}",
                           "--config.synth.teacher.model=gpt-4o-mini", "--plan")
  assert result.returncode == 2 and "name two teachers" in result.stderr


def _records(tfds_dir):
  """{(dataset, split): the decoded records} of the built token datasets."""
  from data_pipeline import catalog  # pylint: disable=g-import-not-at-top
  from tests.data_pipeline.test_fim import read_split  # pylint: disable=g-import-not-at-top
  out = {}
  for name in catalog.DATASETS:
    directory = catalog.built_version_dir(tfds_dir, name)
    if directory is None:
      continue
    for split in ("train", "validation"):
      out[name, split] = [(r.id, r.tokens.tolist(), r.prompt_length, r.origin)
                          for r in read_split(directory, split)]
  assert out, f"no dataset under {tfds_dir}"
  return out


def test_the_table_holds_when_the_nodes_run(workdir):
  """A sample of the table's rows (tests/recipe/test_plan_fields.py), checked by running
  the node with the field changed: an inert field leaves its output as it was, an
  output-determining one changes it."""
  tfds = os.path.join(workdir, "data", "tfds")
  before = _records(tfds)
  # inert: the FIM split rate without FIM (the table: no node)
  run(workdir, "--stages=datasets", "--force=datasets", "--config.data.fim_spm_rate=0.9")
  assert _records(tfds) == before
  # output-determining: the classifier's keep threshold (the table: classify, ...)
  kept = os.path.join(workdir, "data", "curated", "filtered_code.jsonl")
  with open(kept, "rb") as f:
    kept_before = f.read()
  run(workdir, "--stages=classify", "--config.data.quality.keep_threshold=0.7")
  with open(kept, "rb") as f:
    assert f.read() != kept_before


@pytest.mark.slow
def test_an_operational_training_field_leaves_the_model_as_it_was(workdir):
  """train.log_every and loader_workers (the table: no node): pretraining forced with
  other values ends at the same parameters."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import phi_jax  # pylint: disable=g-import-not-at-top
  from phi_jax.pretrained import params_of  # pylint: disable=g-import-not-at-top
  root = os.path.join(workdir, "pretrain", "checkpoints")
  before = params_of(phi_jax.from_pretrained(root))
  run(workdir, "--stages=pretrain", "--force=pretrain", "--config.train.log_every=1",
      "--config.train.loader_workers=1")
  after = params_of(phi_jax.from_pretrained(root))
  import jax  # pylint: disable=g-import-not-at-top
  for a, b in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(after)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


@pytest.mark.slow
def test_the_synthesize_stage_grounds_textbooks_in_the_filtered_code_and_checks_proximity(
    workdir):
  out = run(workdir, "--stages=synthesize", "--config.synth.textbooks.grounding_chars=300",
            "--config.synth.proximity.checks=('ngram', 'ast')")
  assert "[synthesize] rerun: " in out
  filtered = [json.loads(line)["text"] for line in
              open(os.path.join(workdir, "data", "curated", "filtered_code.jsonl"))]
  rows = [json.loads(line) for name in ("textbooks.jsonl", "rejected.jsonl")
          for line in open(os.path.join(workdir, "synthesize", name))]
  books = [row for row in rows if row["meta"]["generator"] == "textbooks"]
  assert books and all(any(row["meta"]["grounding"]["text"] in text for text in filtered)
                       for row in books)
  assert all("grounding" not in row["meta"] for row in rows if row not in books)
