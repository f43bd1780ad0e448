"""Every leaf field of the tiny config, changed one at a time on the finished tiny run:
the plan reruns exactly the nodes whose output the field determines and their
dependents; operational fields rerun nothing and never make pretrain or finetune refuse.

EXPECTED below is kept by hand, from what each node does (not from the fingerprints):
field -> the nodes that read it for their output, before dependents. Every
output-determining field is also in the report (report/config.json shows the run's
settings), which the table says with `+ REPORT`.
"""

import ast
import os
import shutil

import ml_collections
import pytest

from configs import tiny
from recipe import graph as graph_lib
from recipe import runner
from tests import conftest

REPORT = {"report"}
NONE: set = set()
TRAINING = {"pretrain", "finetune"}
# init (a random init of config.model), the random embedder of the quality filter
# (embed, classify) and the random local teacher (synthesize) take config.model's shape
SHAPE = {"init", "embed", "classify", "synthesize"} | REPORT
# the numerics and dropout a training run gives its starting model (RUNTIME_FIELDS)
NUMERICS = {"init", "embed", "classify"} | TRAINING | REPORT
CURATE = {"curate"} | REPORT

EXPECTED = {
    # top level
    "workdir": NONE, "stages": NONE, "force": NONE, "compilation_cache_dir": NONE,
    "seed": {"curate", "annotate", "embed", "classify", "datasets", "init", "pretrain",
             "finetune", "sample", "eval"} | REPORT,
    # data: the sources are this Python's files, which have no record fields or split
    "data.sources": CURATE, "data.max_files": CURATE, "data.max_chars": CURATE,
    "data.near_dup_threshold": CURATE, "data.num_perm": CURATE,
    "data.text_field": NONE, "data.license_field": NONE, "data.hf_split": NONE,
    "data.runner_workers": NONE, "data.runner_shard_files": NONE, "data.runner": NONE,
    "data.textbooks": {"tokenizer", "datasets", "decontaminate"} | REPORT,
    "data.exercises": {"tokenizer", "datasets", "decontaminate"} | REPORT,
    "data.allow_partial_mixtures": TRAINING | REPORT,
    "data.validation_fraction": {"datasets"} | REPORT,
    "data.fim_rate": {"tokenizer", "datasets"} | REPORT,
    "data.fim_spm_rate": NONE,  # no FIM at fim_rate 0
    "data.quality.annotator": REPORT,  # 'auto' is 'heuristic' without config.llm.model
    "data.quality.annotate": {"annotate"} | REPORT,
    "data.quality.label_threshold": {"annotate", "classify"} | REPORT,
    "data.quality.keep_threshold": {"classify"} | REPORT,
    "data.quality.embed_model": {"embed", "classify"} | REPORT,
    "data.quality.embed_max_len": {"embed", "classify"} | REPORT,
    "data.quality.embed_dtype": {"embed", "classify"} | REPORT,
    "data.quality.embed_batch_size": NONE, "data.quality.score_chunk_size": NONE,
    "data.quality.n_estimators": {"classify"} | REPORT,
    "data.quality.max_depth": {"classify"} | REPORT,
    "data.quality.test_fraction": {"classify"} | REPORT,
    "data.tokenizer.spec": {"tokenizer"} | REPORT,
    "data.tokenizer.vocab_size": {"tokenizer"} | REPORT,
    # the decontamination runs n-grams and AST (no embedding check in tiny); the
    # attribution of the passing samples uses its n-gram and AST settings
    "decontaminate.benchmarks": {"decontaminate"} | REPORT,
    "decontaminate.checks": {"decontaminate"} | REPORT,
    "decontaminate.taus": {"decontaminate", "attribute"} | REPORT,
    "decontaminate.prune_tau": {"decontaminate", "attribute"} | REPORT,
    "decontaminate.ngram_n": {"decontaminate", "attribute"} | REPORT,
    "decontaminate.ngram_unit": {"decontaminate", "attribute"} | REPORT,
    "decontaminate.ngram_fields": {"decontaminate"} | REPORT,
    "decontaminate.ngram_min_matches": {"decontaminate", "attribute"} | REPORT,
    "decontaminate.ast_min_nodes": {"decontaminate", "attribute"} | REPORT,
    "decontaminate.examples_per_tau": {"decontaminate"} | REPORT,
    "decontaminate.embed_threshold": NONE, "decontaminate.embed_decides": NONE,
    # pruning (off in tiny, as in phi1): on, the tokenizer and the datasets read the
    # kept records; the checks themselves do not change
    "decontaminate.prune": {"tokenizer", "datasets"} | REPORT,
    "decontaminate.prune_datasets": NONE,  # no pruning
    # eval (pretrain and finetune measure bits per byte along the way: not their output)
    "eval.model": {"eval"} | REPORT, "eval.benchmarks": {"eval"} | REPORT,
    "eval.humaneval_path": {"eval", "decontaminate", "curves"} | REPORT,
    "eval.mbpp_path": NONE, "eval.mbpp_prompt": NONE,  # MBPP is not evaluated in tiny
    "eval.data_paths": {"eval"} | REPORT, "eval.checkpoints": {"eval"} | REPORT,
    # bits per byte: the evaluated models' and, re-measured, the training curves'
    "eval.bpb_benchmarks": {"eval", "curves"} | REPORT,
    "eval.bpb_max_len": {"eval", "curves"} | REPORT,
    "eval.bpb_limit": {"eval", "curves"} | REPORT, "eval.limit": {"eval"} | REPORT,
    "eval.n": {"eval"} | REPORT, "eval.temperature": {"eval"} | REPORT,
    "eval.top_p": NONE,  # greedy
    "eval.max_new_tokens": {"eval"} | REPORT, "eval.k": {"eval"} | REPORT,
    "eval.timeout_s": {"eval"} | REPORT, "eval.memory_mb": {"eval"} | REPORT,
    "eval.batch_size": NONE, "eval.isolation": NONE, "eval.workers": NONE,
    "eval.determinism_problems": {"eval"} | REPORT, "eval.recheck_margin": {"eval"} | REPORT,
    "eval.speed_probe": {"eval"} | REPORT,
    # long-context is not evaluated in tiny: its settings are inert
    "eval.long_context_lengths": NONE, "eval.long_context_depths": NONE,
    "eval.long_context_per_cell": NONE, "eval.long_context_seed": NONE,
    "export_hf.model": {"export_hf"} | REPORT, "export_hf.dtype": {"export_hf"} | REPORT,
    "init.model": {"init"} | REPORT, "init.tokenizer": {"init"} | REPORT,
    # the annotator is the heuristic one: the LLM client is read by no node, except that
    # naming a model makes 'auto' annotate with it
    "llm.model": {"annotate"} | REPORT,
    "llm.base_url": REPORT, "llm.temperature": REPORT, "llm.top_p": REPORT,
    "llm.max_tokens": REPORT, "llm.seed": REPORT, "llm.stop": REPORT,
    "llm.model_identity": REPORT,
    "llm.api_key_env": NONE, "llm.max_concurrency": NONE, "llm.max_retries": NONE,
    "llm.timeout_s": NONE, "llm.cache_dir": NONE, "llm.backoff_initial_s": NONE,
    "llm.backoff_max_s": NONE, "llm.parse_retries": NONE,
    **{f"llm.{f}": NONE for f in (
        "mode", "batch_max_requests", "batch_poll_s", "batch_retry", "rpm_limit", "tpm_limit",
        "price_prompt_per_1m", "price_completion_per_1m", "batch_price_prompt_per_1m",
        "batch_price_completion_per_1m", "budget_usd")},
    "mesh.data": NONE, "mesh.fsdp": NONE, "mesh.tensor": NONE, "mesh.rules": NONE,
    # config.model: the shape of every random model; max_seq_len is raised to 4096 for
    # the random teacher's byte-level prompts (a change below that changes nothing there)
    "model.vocab_size": SHAPE | {"tokenizer"}, "model.d_model": SHAPE,
    "model.num_layers": SHAPE, "model.num_heads": SHAPE, "model.mlp_dim": SHAPE,
    "model.rotary_dim": SHAPE, "model.rope_base": SHAPE,
    "model.rope_scaling_type": SHAPE, "model.rope_scaling_factor": SHAPE,
    "model.max_seq_len": SHAPE - {"synthesize"}, "model.layer_norm_eps": SHAPE,
    "model.activation": SHAPE, "model.initializer_range": SHAPE,
    "model.architecture": SHAPE, "model.attention_bias": SHAPE,
    "model.embed_dropout": NUMERICS, "model.attention_dropout": NUMERICS,
    "model.residual_dropout": NUMERICS, "model.dtype": NUMERICS,
    "model.param_dtype": NUMERICS,
    "model.attention": NONE, "model.attention_block_q": NONE,
    "model.attention_block_kv": NONE, "model.scan_layers": NONE, "model.remat": NONE,
    "sample.model": {"sample"} | REPORT, "sample.prompts": {"sample"} | REPORT,
    "sample.num_samples": {"sample"} | REPORT, "sample.max_new_tokens": {"sample"} | REPORT,
    "sample.temperature": {"sample"} | REPORT, "sample.stop": {"sample"} | REPORT,
    "sample.top_p": NONE, "sample.top_k": NONE,  # greedy
    "sample.batch_size": NONE,
    **{f"serve.{f}": NONE for f in (
        "model", "host", "port", "model_name", "max_batch", "chunk_size", "dtype",
        "max_queue", "batching", "api_key_env", "warm_up_prompt_tokens",
        "warm_up_new_tokens")},
    # synth: the random local teacher
    "synth.local_teacher": {"synthesize"} | REPORT, "synth.seed": {"synthesize"} | REPORT,
    "synth.near_dup_threshold": {"synthesize"} | REPORT,
    "synth.num_perm": {"synthesize"} | REPORT,
    "synth.local_max_batch": NONE,
    "synth.teacher.temperature": {"synthesize"} | REPORT,
    "synth.teacher.top_p": {"synthesize"} | REPORT,
    "synth.teacher.stop": {"synthesize"} | REPORT,
    "synth.teacher.model_identity": {"synthesize"} | REPORT,
    "synth.teacher.max_tokens": NONE, "synth.teacher.seed": NONE,  # set per request
    **{f"synth.teacher.{f}": NONE for f in (
        "api_key_env", "max_concurrency", "max_retries", "timeout_s", "cache_dir",
        "backoff_initial_s", "backoff_max_s", "parse_retries", "batch_max_requests",
        "batch_poll_s", "batch_retry", "rpm_limit", "tpm_limit", "price_prompt_per_1m",
        "price_completion_per_1m", "batch_price_prompt_per_1m",
        "batch_price_completion_per_1m", "budget_usd")},
    **{f"synth.textbooks.{f}": {"synthesize"} | REPORT for f in (
        "count", "max_tokens", "min_code_blocks", "min_words", "grounding_chars")},
    **{f"synth.exercises.{f}": {"synthesize"} | REPORT for f in (
        "count", "max_tokens", "min_tests", "min_docstring_chars", "timeout_s", "memory_mb",
        "mutants", "min_mutation_score", "mutant_timeout_s")},
    # benchmark proximity: off in tiny; turned on, the node reads config.decontaminate's
    # index settings
    "synth.proximity.checks": {"synthesize"} | REPORT,
    "synth.proximity.ngram_min_matches": NONE, "synth.proximity.ast_tau": NONE,
    "synth.exercises.isolation": NONE, "synth.exercises.workers": NONE,
}
# training sections: the same fields for pretraining (config.train) and finetuning
for _section, _node in (("train", "pretrain"), ("finetune", "finetune")):
  for _f in ("model", "steps", "batch_size", "seq_len", "data", "loss_on_solution_only",
             "segment_ids", "host_sharding", "context.max_seq_len", "context.rope_base",
             "context.rope_scaling_type", "context.rope_scaling_factor", "optimizer.lr",
             "optimizer.warmup_steps", "optimizer.end_lr", "optimizer.weight_decay",
             "optimizer.b1", "optimizer.b2", "optimizer.eps", "optimizer.grad_clip"):
    EXPECTED[f"{_section}.{_f}"] = {_node} | REPORT
  for _f in ("microbatches", "loss_chunk", "memory_headroom", "device_memory_gib",
             "checkpoint_every", "keep_checkpoints", "keep_steps", "log_every", "loader_workers", "on_corrupt_checkpoint"):
    EXPECTED[f"{_section}.{_f}"] = NONE
  # measurements along the way: the curves', not the model's
  for _f in ("eval_every", "eval_batches"):
    EXPECTED[f"{_section}.{_f}"] = {"curves"} | REPORT

# Fields valid only together with another: changed with it.
COMPANIONS = {f"{s}.context.rope_scaling_factor": {f"{s}.context.rope_scaling_type": "linear"}
              for s in ("train", "finetune")}
COMPANIONS["model.rope_scaling_factor"] = {"model.rope_scaling_type": "linear"}
COMPANIONS["model.rope_scaling_type"] = {"model.rope_scaling_factor": 2.0}
COMPANIONS["model.attention_block_q"] = {"model.attention_block_kv": 32}
COMPANIONS["model.attention_block_kv"] = {"model.attention_block_q": 32}
COMPANIONS["model.architecture"] = {"model.attention_bias": False}  # CodeGen has none
for _s in ("llm", "synth.teacher"):  # a budget needs the prices
  COMPANIONS[f"{_s}.budget_usd"] = {f"{_s}.price_prompt_per_1m": 1.0,
                                    f"{_s}.price_completion_per_1m": 1.0}
COMPANIONS["eval.temperature"] = {"eval.determinism_problems": 0}  # certifies greedy only

# Two settings that contradict the tiny config's: refused with one line naming both.
REFUSED = {"synth.teacher.model": "gpt-4o-mini", "synth.teacher.base_url": "http://x/v1",
           "synth.teacher.mode": "batch"}  # the local teacher has no Batch API


def _values(workdir: str, data_file: str) -> dict:
  """A valid value other than tiny's for the fields the generic rule cannot change."""
  return {
      "workdir": "elsewhere", "stages": ("data",), "force": ("sample",),
      "compilation_cache_dir": "jax_cache",
      "data.sources": ("stdlib",), "data.text_field": "content",
      "data.license_field": "", "data.hf_split": "test", "data.runner": "datatrove",
      "data.textbooks": (data_file,), "data.exercises": (data_file,),
      "data.quality.annotator": "heuristic", "data.quality.embed_model": "microsoft/phi-1_5",
      "data.quality.embed_dtype": "bfloat16", "data.tokenizer.spec": "byte_level",
      "data.fim_rate": 0.5, "data.quality.test_fraction": 0.3,
      "decontaminate.benchmarks": ("humaneval", "mbpp"), "decontaminate.checks": ("ngram",),
      "decontaminate.taus": (0.9,), "decontaminate.ngram_unit": "code_tokens",
      "decontaminate.ngram_fields": ("prompt",), "decontaminate.embed_decides": "yes",
      "decontaminate.prune_datasets": ("phi1_exercises",),
      "eval.model": "pretrain", "eval.benchmarks": ("humaneval", "humaneval+"),
      "eval.humaneval_path": data_file, "eval.mbpp_path": data_file,
      "eval.mbpp_prompt": "all_tests", "eval.data_paths": (f"humaneval+={data_file}",),
      "eval.checkpoints": (), "eval.bpb_benchmarks": (), "eval.k": (1,),
      "eval.isolation": "rlimits", "eval.temperature": 0.8,
      "eval.long_context_lengths": (1000,), "eval.long_context_depths": (0.5,),
      "export_hf.model": "pretrain", "export_hf.dtype": "bfloat16",
      "init.model": os.path.join(workdir, "export_hf", "hf"), "init.tokenizer": "byte_level",
      "llm.model": "gpt-4o", "llm.base_url": "http://127.0.0.1:1/v1", "llm.top_p": 0.9,
      "llm.seed": 1, "llm.stop": ("\n",), "llm.model_identity": "x",
      "llm.api_key_env": "OTHER_KEY", "llm.cache_dir": "/tmp/cache",
      **{f"{s}.{f}": v for s in ("llm", "synth.teacher") for f, v in (
          ("mode", "batch"), ("batch_retry", "online"), ("batch_max_requests", 100))},
      "mesh.fsdp": 8, "mesh.rules": "vocab:,embed:fsdp", "model.activation": "gelu",
      "model.attention": "pallas", "model.attention_block_q": 32,
      "model.attention_block_kv": 32, "model.dtype": "bfloat16",
      "model.param_dtype": "bfloat16", "model.remat": "full",
      "model.rope_scaling_type": "linear", "model.rope_scaling_factor": 2.0,
      "model.num_heads": 8, "model.rotary_dim": 16, "model.max_seq_len": 1024,
      "model.architecture": "codegen",
      "sample.model": "pretrain", "sample.prompts": ("def f(x):\n",), "sample.stop": (),
      "sample.top_p": 0.5, "sample.temperature": 0.5,
      "serve.model": "pretrain", "serve.host": "0.0.0.0", "serve.model_name": "tiny",
      "serve.dtype": "bfloat16", "serve.batching": "static", "serve.api_key_env": "KEY",
      "synth.local_teacher": os.path.join(workdir, "init", "checkpoints"),
      "synth.teacher.stop": ("\n",), "synth.teacher.model_identity": "x",
      "synth.teacher.api_key_env": "OTHER_KEY", "synth.teacher.cache_dir": "/tmp/cache",
      "synth.teacher.top_p": 0.5, "synth.teacher.seed": 3, "synth.teacher.max_tokens": 99,
      "synth.exercises.isolation": "rlimits", "synth.proximity.checks": ("ngram",),
      **{f"{s}.{f}": v for s in ("train", "finetune") for f, v in (
          ("model", "random"), ("data", ("phi1_filtered_code",)),
          ("host_sharding", "rows"), ("on_corrupt_checkpoint", "previous"),
          ("context.max_seq_len", 1024), ("context.rope_base", 1e6),
          ("context.rope_scaling_type", "linear"), ("context.rope_scaling_factor", 2.0),
          ("keep_steps", (3,)), ("microbatches", 2), ("optimizer.end_lr", 1e-5))},
      "train.optimizer.warmup_steps": 1, "finetune.optimizer.warmup_steps": 0,
      "model.d_model": 512,
      "finetune.seq_len": 64, "train.seq_len": 64,
  }


def _changed(field: str, value, values: dict):
  if field in values:
    return values[field]
  if isinstance(value, bool):
    return not value
  if isinstance(value, int):
    return value + 1
  if isinstance(value, float):
    return 0.05 if value == 0 else value / 2 if 0 < value <= 1 else value + 1.0
  raise AssertionError(f"no value to change {field} = {value!r} to: add it to _values")


def leaves(config, prefix=()):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from leaves(value, prefix + (key,))
    else:
      yield ".".join(prefix + (key,)), value


def tiny_run_config() -> ml_collections.ConfigDict:
  """configs/tiny.py with the --config overrides the tiny_run work directory was made with."""
  config = tiny.get_config()
  for arg in conftest.TINY_RUN_ARGS:
    if arg.startswith("--config."):
      field, _, text = arg[len("--config."):].partition("=")
      set_field(config, field, ast.literal_eval(text))
  return config


def set_field(config, dotted: str, value) -> None:
  *parents, leaf = dotted.split(".")
  for part in parents:
    config = config[part]
  config[leaf] = value


def downstream(graph, ctx, nodes: set[str]) -> set[str]:
  """`nodes` and every node that reads from one of them (transitively)."""
  out = set(nodes)
  for node in graph.nodes:
    if out & set(node.upstream(ctx)):
      out.add(node.name)
  return out


def changed_nodes(workdir, config) -> tuple[set[str], set[str]]:
  """(nodes the plan would not skip, nodes it refuses) on `workdir` with `config`."""
  ctx = runner.Context(config, workdir, graph_lib.build())
  stages = ctx.settings.run.stages or ctx.graph.stage_names()
  plan = runner.make_plan(ctx, ctx.graph.stage_names() if "stages" else stages)
  return ({d.node.name for d in plan if d.action != "skip"},
          {d.node.name for d in plan if d.action == "refuse"})


def test_the_table_covers_every_leaf_of_the_tiny_config():
  fields = {name for name, _ in leaves(tiny.get_config())}
  assert fields - set(EXPECTED) - set(REFUSED) == set(), "fields without an expectation"
  assert set(EXPECTED) - fields == set(), "expectations of fields tiny has not"


def test_each_field_reruns_exactly_the_nodes_whose_output_it_determines(tiny_run, tmp_path):
  workdir, _ = tiny_run
  data_file = str(tmp_path / "records.jsonl")
  with open(data_file, "w") as f:
    f.write('{"id": "x", "text": "def f():\\n  return 1\\n", "prompt": "def f():\\n", '
            '"solution": "  return 1\\n"}\n')
  base = tiny_run_config()
  graph = graph_lib.build()
  ctx = runner.Context(base, workdir, graph)
  assert changed_nodes(workdir, base) == (set(), set()), "the finished run plans work"
  values = _values(workdir, data_file)
  wrong = []
  for field, value in leaves(base):
    config = tiny_run_config()
    if field in REFUSED:
      set_field(config, field, REFUSED[field])
      with pytest.raises(runner.UsageError, match="two teachers|no Batch API"):
        runner.Context(config, workdir, graph)
      continue
    set_field(config, field, _changed(field, value, values))
    for other, other_value in COMPANIONS.get(field, {}).items():
      set_field(config, other, other_value)
    try:
      rerun, refused = changed_nodes(workdir, config)
    except Exception as e:  # pylint: disable=broad-except
      wrong.append(f"{field}: {type(e).__name__}: {e}")
      continue
    expected = downstream(graph, ctx, EXPECTED[field]) if EXPECTED[field] else set()
    if rerun != expected:
      wrong.append(f"{field}: reruns {sorted(rerun)}, expected {sorted(expected)}")
    if not EXPECTED[field] and refused:
      wrong.append(f"{field} (operational) makes {sorted(refused)} refuse")
  assert not wrong, "\n".join(wrong)
