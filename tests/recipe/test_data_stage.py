"""The `data` stage end to end on a small sample of this machine's Python source."""

import dataclasses
import json
import os
import re

import numpy as np
import pytest

from configs import tiny
from data_pipeline import catalog
from phi_jax.cli import UsageError
from phi_jax.train.settings import TrainSettings
from recipe import graph, runner


def small_config():
  config = tiny.get_config()
  config.model.update(dict(vocab_size=512, d_model=32, num_layers=1, num_heads=2, mlp_dim=64,
                           rotary_dim=8, max_seq_len=128))
  config.data.update(dict(max_files=120, validation_fraction=0.1))
  config.data.quality.update(dict(annotate=80, embed_max_len=64, n_estimators=20))
  config.data.tokenizer.vocab_size = 512
  return config


def context(config, workdir):
  return runner.Context(config, str(workdir), graph.build())


def run_data(ctx):
  return runner.execute(ctx, runner.make_plan(ctx, ["data"]))[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  ctx = context(small_config(), tmp_path_factory.mktemp("work"))
  marker = run_data(ctx)
  return ctx, marker


def _step_runs(ctx):
  """{step: inputs fingerprint} of the data stage's steps as recorded on disk."""
  steps = os.path.join(ctx.node_dir("data"), "steps")
  return {name[:-5]: json.load(open(os.path.join(steps, name)))["fingerprint"]
          for name in os.listdir(steps)}


def test_data_stage_writes_every_artifact_with_stats(built):
  ctx, marker = built
  root = ctx.node_dir("data")
  stats = json.load(open(os.path.join(root, "stats.json")))["steps"]
  curate = stats["curate"]["stats"]
  assert curate[0]["name"] == "source:installed" and curate[0]["in"] == 120
  for step in curate[1:]:  # each filter/dedup step: in = out + dropped, chained
    assert step["in"] == step["out"] + step["dropped_total"], step
  for before, after in zip(curate, curate[1:]):
    assert after["in"] == before["out"]
  assert stats["curate"]["documents"] == curate[-1]["out"]
  with open(os.path.join(root, "curated", "code.jsonl")) as f:
    assert sum(1 for _ in f) == curate[-1]["out"]
  labels = stats["annotate"]
  assert labels["annotator"] == "heuristic-proxy" and labels["labelled"] == 80
  report = stats["classify"]["report"]
  assert report["model"] == "random_forest" and report["held_out"]["f1"] is not None
  assert 0 < stats["classify"]["kept"] <= stats["classify"]["documents"]
  with open(os.path.join(root, "quality", "scores.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert stats["tokenizer"]["vocab_size"] == 512 and stats["exercises"]["exercises"] > 0
  datasets = marker["summary"]["datasets"]
  # no textbooks or exercises given, and no synthesize stage in the run
  assert set(datasets) == {catalog.FILTERED_CODE, catalog.MINED_EXERCISES}
  for name in datasets:
    assert catalog.built_version_dir(catalog.tfds_dir(ctx.workdir), name) == datasets[name]["dir"]
    assert datasets[name]["tokens"]["train"] > 0


def test_training_reads_what_the_data_stage_built(built):
  from data_pipeline import batches as data
  from recipe.stages.init import load_tokenizer
  ctx, _ = built
  tokenizer = load_tokenizer("data", None, ctx.workdir)
  cfg = dataclasses.replace(TrainSettings(), data=("phi1_filtered_code",), seq_len=64,
                            batch_size=2)
  batch = next(data.make_batches(cfg, ctx.workdir, tokenizer, split="train", seed=0,
                                 where="train"))
  assert batch["tokens"].shape == (2, 64) and batch["tokens"].max() < 512


def test_rerun_redoes_only_the_steps_whose_inputs_changed(built, capsys):
  ctx, marker = built
  before = _step_runs(ctx)
  assert run_data(ctx)["fingerprint"] == marker["fingerprint"]
  assert capsys.readouterr().out.count("complete, skipped") == 8
  ctx.config.data.quality.keep_threshold = 0.6
  try:
    run_data(ctx)
    out = capsys.readouterr().out
    for step in ("curate", "annotate", "embed", "exercises"):
      assert f"[{step}] complete, skipped" in out
    after = _step_runs(ctx)
    assert {s for s in before if before[s] != after[s]} == {"classify", "tokenizer", "datasets"}
  finally:
    ctx.config.data.quality.keep_threshold = 0.5


def test_embed_and_classify_with_a_saved_codegen_model(tmp_path):
  """The paper's quality filter embeds with CodeGen-350M-mono (section 2.1): a
  transformers CodeGen directory, its own tokenizer beside it, as
  config.data.quality.embed_model (here a small random one)."""
  from data_pipeline.embed import load_embeddings
  from tests.conftest import make_hf_codegen
  codegen = str(tmp_path / "codegen")
  make_hf_codegen(codegen)
  config = small_config()
  config.data.max_files = 60
  config.data.quality.update(dict(annotate=40, embed_model=codegen, n_estimators=10))
  ctx = context(config, tmp_path / "work")
  markers = runner.execute(ctx, runner.make_plan(ctx, ["curate", "annotate", "embed",
                                                       "classify"]))
  embedded, classified = markers[-2]["summary"], markers[-1]["summary"]
  assert embedded["model"] == codegen and embedded["dims"] == 64  # CodeGen's n_embd
  ids, x_ND = load_embeddings(embedded["out"])
  assert x_ND.shape == (len(ids), 64) == (embedded["documents"], 64) and len(ids) > 0
  assert np.isfinite(x_ND).all() and np.abs(x_ND).sum(axis=1).min() > 0
  assert 0 < classified["kept"] <= classified["documents"]


def test_llm_annotation_without_an_endpoint_is_a_clear_error(tmp_path):
  config = small_config()
  config.data.quality.annotator = "llm"
  config.data.max_files = 30
  with pytest.raises(UsageError, match="config.llm.model"):
    run_data(context(config, tmp_path))
  assert not os.listdir(tmp_path)  # refused while planning: nothing written


def test_curate_on_datatrove_writes_what_the_in_process_run_wrote(built, tmp_path):
  pytest.importorskip("datatrove")
  from recipe.stages import data as data_stage  # pylint: disable=g-import-not-at-top
  ctx, _ = built
  config = small_config()
  config.data.update(dict(runner="datatrove", runner_workers=1, runner_shard_files=16))
  engine_ctx = context(config, tmp_path)
  summary = data_stage.curate(engine_ctx,
                             runner.node_reads(engine_ctx.graph["curate"], engine_ctx))
  assert summary["runner"] == "datatrove" and summary["shards"] == 8
  with open(data_stage.Paths(ctx).code, "rb") as a, open(summary["out"], "rb") as b:
    assert a.read() == b.read()
  local = ctx.marker("curate")["summary"]["stats"]
  strip = lambda stats: [{k: v for k, v in s.items() if k not in ("elapsed_s", "records_per_s")}
                         for s in stats]
  assert strip(summary["stats"]) == strip(local)


@pytest.mark.parametrize("field, value, message", [
    ("runner", "spark", "config.data.runner = 'spark'"),
    ("sources", ("/no/such/file.jsonl",), "no file /no/such/file.jsonl"),
    ("sources", ("/no/such/dir",), "no file or directory /no/such/dir"),
])
def test_a_bad_runner_or_source_is_refused_while_planning(tmp_path, field, value, message):
  config = small_config()
  config.data[field] = value
  with pytest.raises(UsageError, match=message):
    run_data(context(config, tmp_path))
  assert not os.listdir(tmp_path)


def test_bad_fim_rates_are_refused_while_planning(tmp_path):
  config = small_config()
  config.data.fim_spm_rate = 1.5
  with pytest.raises(UsageError, match=re.escape("config.data.fim_spm_rate = 1.5: must be a "
                                                 "number in [0, 1]")):
    run_data(context(config, tmp_path))
  assert not os.path.exists(tmp_path) or not os.listdir(tmp_path)


def test_fim_rate_rebuilds_the_tokenizer_and_text_datasets_with_sentinels(built, capsys):
  # last in this module: it leaves the work directory built with FIM
  from data_pipeline import token_dataset  # pylint: disable=g-import-not-at-top
  from phi_jax import fim  # pylint: disable=g-import-not-at-top
  from phi_jax.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  from tests.data_pipeline.test_fim import read_split  # pylint: disable=g-import-not-at-top
  ctx, _ = built
  run_data(ctx)  # as the module's config has it (an earlier test may have changed it)
  before = _step_runs(ctx)
  ctx.config.data.fim_rate = 0.5
  try:
    run_data(ctx)
  finally:
    ctx.config.data.fim_rate = 0.0
  after = _step_runs(ctx)
  assert {s for s in before if before[s] != after[s]} == {"tokenizer", "datasets"}
  tokenizer = Tokenizer.from_dir(catalog.tokenizer_dir(ctx.workdir))
  ids = fim.fim_ids(tokenizer)
  assert tokenizer.vocab_size == 512 and max(ids.prefix, ids.middle, ids.suffix) == 511
  share = {}
  for name in ("phi1_filtered_code", "phi1_mined_exercises"):
    records = read_split(token_dataset.version_dir(catalog.tfds_dir(ctx.workdir), name),
                         "train")
    share[name] = sum(ids.prefix in r.tokens for r in records) / len(records)
  assert 0.3 < share["phi1_filtered_code"] < 0.7  # fim_rate 0.5 of the code documents
  assert share["phi1_mined_exercises"] == 0  # exercises keep their prompt -> solution form
