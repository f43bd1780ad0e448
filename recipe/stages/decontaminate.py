"""Stage `decontaminate`: the training corpora checked against the benchmarks.

Checks every corpus the datasets are built from (filtered code, textbooks, exercises,
mined exercises) with n-gram overlap, embedding distance and the AST match rate tau
against `config.decontaminate.benchmarks` (data_pipeline/decontaminate,
docs/decontamination.md), and writes per corpus WORKDIR/decontaminate/<dataset>/
{kept,removed,matches}.jsonl and report.{md,json}, plus summary.json with the counts
each check flagged.

By default (config.decontaminate.prune = False, the paper's phi-1) this is an analysis:
no training node reads its output, so its settings never make training rerun or
refuse; the report shows the similar records and problems (Table 3's split). With
`prune` on, the tokenizer and datasets steps read the kept records of the datasets in
`prune_datasets` (recipe/stages/data.py: corpora) and so come after this stage.
"""

from __future__ import annotations

import dataclasses
import os

from data_pipeline.decontaminate import DecontConfig, Decontaminator, decontaminate
from data_pipeline.decontaminate.config import PRUNE_FIELDS
from data_pipeline.embed import make_embedder
from eval import run as eval_run
from phi_jax import atomic, checkpoint
from phi_jax import settings as settings_lib
from recipe.runner import Context, Node

NAME = "decontaminate"


def kept_path(ctx: Context, dataset: str) -> str:
  return os.path.join(ctx.node_dir(NAME), dataset, "kept.jsonl")


def benchmark_paths(ctx: Context) -> dict[str, str]:
  """The evaluator's data files of the checked benchmarks (config.eval's humaneval_path,
  mbpp_path and data_paths); a benchmark without one loads from its default source."""
  benchmarks = set(ctx.settings.decontaminate.benchmarks)
  return {name: path for name, path in ctx.settings.eval.paths().items() if name in benchmarks}


def benchmark_options(ctx: Context) -> dict[str, dict]:
  """The options the evaluator builds each checked benchmark with from config.eval
  (eval.run's benchmark_options_of: long-context's lengths, depths, files per cell and
  seed; MBPP's prompt format), so that the checks compare the training data with the
  problems the run evaluates; benchmarks without options are left out."""
  options = {name: eval_run.benchmark_options_of(name, ctx.settings.eval)
             for name in ctx.settings.decontaminate.benchmarks}
  return {name: value for name, value in options.items() if value}


def pruned(ctx: Context, datasets) -> list[str]:
  """Which of `datasets` the training data reads pruned (config.decontaminate.prune,
  prune_datasets): none by default."""
  return ctx.settings.decontaminate.pruned(datasets)


def run(ctx: Context, reads: dict, corpora: dict[str, list[str]]) -> dict:
  config: DecontConfig = reads["decontaminate"].value
  embedder = None
  if "embedding" in config.checks:
    model = reads.get("model")
    embedder = make_embedder(config.embed_model, model.to_dict() if model else None,
                             max_len=config.embed_max_len, seed=config.seed)
  decontaminator = Decontaminator.load(list(config.benchmarks), config,
                                       benchmark_paths=reads["benchmark_paths"],
                                       benchmark_options=reads.get("benchmark_options"),
                                       embedder=embedder)
  summary = {"benchmarks": list(config.benchmarks),
             "unavailable": dict(decontaminator.unavailable), "corpora": {}}
  for dataset, paths in corpora.items():
    print(f"[{NAME}] {dataset}: {len(paths)} file(s)", flush=True)
    result = decontaminate(paths, summary["benchmarks"], config,
                           os.path.join(ctx.node_dir(NAME), dataset),
                           decontaminator=decontaminator)
    summary["corpora"][dataset] = result
  atomic.write_json(summary, os.path.join(ctx.node_dir(NAME), "summary.json"))
  for dataset, result in summary["corpora"].items():
    print(f"[{NAME}] {dataset}: {result.get('records')} records, removed "
          f"{result.get('removed')} ({result.get('removed_by')})", flush=True)
  return summary


def _reads(ctx: Context) -> dict:
  """The decontamination settings (with the quality filter's embedder), the benchmark
  files and the options the benchmarks are built with (when any), and config.model
  when the embedding check uses a random-init embedder of its shape."""
  config = ctx.settings.decontaminate
  # every field but the pruning ones: what training does with the result does not
  # change what the checks compute
  fields = tuple(f.name for f in dataclasses.fields(config) if f.name not in PRUNE_FIELDS)
  reads = {"decontaminate": settings_lib.Part(config, fields),
           "benchmark_paths": benchmark_paths(ctx),
           # the corpora it checks include these files
           "data": settings_lib.Part(ctx.settings.data, ("textbooks", "exercises"))}
  options = benchmark_options(ctx)
  if options:
    reads["benchmark_options"] = options
  if "embedding" in config.checks and not config.embed_model:
    reads["model"] = ctx.settings.model
  return reads


def _primary_only(ctx: Context) -> bool:
  """Process 0 alone checks the corpora in a multi-host job (the checks are local
  computations, the embedder on its own devices), unless the embedding check loads an
  Orbax checkpoint: an Orbax restore needs every process of the job."""
  model = ctx.settings.decontaminate.embed_model
  return not ("embedding" in ctx.settings.decontaminate.checks and model
              and os.path.isdir(model) and checkpoint.is_checkpoint(model))


def node(corpora, after) -> Node:
  """The stage's node; `corpora(ctx)` gives {dataset: [JSONL paths]} to check and
  `after(ctx)` the nodes that write them (the data stage's steps, synthesize)."""
  return Node(name=NAME, run=lambda ctx, reads: run(ctx, reads, corpora(ctx)),
              doc="the corpora checked against the benchmarks: decontaminate/",
              reads=lambda ctx: {**_reads(ctx), "datasets": sorted(corpora(ctx))},
              after=after,
              files=lambda ctx: [p for paths in corpora(ctx).values() for p in paths
                                 if not p.startswith(ctx.workdir)]
              + sorted(p for p in benchmark_paths(ctx).values() if os.path.isfile(p)),
              primary_only=_primary_only)
