"""Stage `decontaminate`: the training corpora pruned against the benchmarks.

Checks every corpus the datasets are built from (filtered code, textbooks, exercises,
mined exercises) with n-gram overlap, embedding distance and the AST match rate tau
against `config.decontaminate.benchmarks` (data_pipeline/decontaminate,
docs/decontamination.md), and writes per corpus WORKDIR/decontaminate/<dataset>/
{kept,removed,matches}.jsonl and report.{md,json}, plus summary.json with the counts
each check removed. The tokenizer and datasets steps then read the kept records.
"""

from __future__ import annotations

import os

from data_pipeline import catalog
from data_pipeline.decontaminate import DecontConfig, Decontaminator, decontaminate
from data_pipeline.embed import make_embedder
from phi_jax import atomic, checkpoint
from phi_jax.cli import UsageError
from recipe.runner import Context, Node

NAME = "decontaminate"
# config.decontaminate fields that are not DecontConfig's
_STAGE_FIELDS = ("benchmarks",)


def kept_path(ctx: Context, dataset: str) -> str:
  return os.path.join(ctx.node_dir(NAME), dataset, "kept.jsonl")


def in_run(ctx: Context) -> bool:
  return ctx.complete_or_selected(NAME)


def decont_config(ctx: Context) -> DecontConfig:
  cfg = ctx.config.decontaminate
  quality = ctx.config.data.quality
  values = {k: v for k, v in cfg.to_dict().items() if k not in _STAGE_FIELDS}
  values.update(embed_model=quality.embed_model, embed_max_len=int(quality.embed_max_len),
                embed_batch_size=int(quality.embed_batch_size), seed=int(ctx.config.seed))
  try:
    return DecontConfig.from_mapping(values)
  except ValueError as e:
    raise UsageError(f"config.decontaminate: {e}") from None


def benchmark_paths(ctx: Context) -> dict[str, str]:
  paths = {"humaneval": ctx.config.eval.humaneval_path, "mbpp": ctx.config.eval.mbpp_path}
  return {name: path for name, path in paths.items() if path}


def run(ctx: Context, corpora: dict[str, list[str]]) -> dict:
  config = decont_config(ctx)
  embedder = None
  if "embedding" in config.checks:
    embedder = make_embedder(config.embed_model, ctx.config.model.to_dict(),
                             max_len=config.embed_max_len, seed=config.seed)
  decontaminator = Decontaminator.load(list(ctx.config.decontaminate.benchmarks), config,
                                       benchmark_paths=benchmark_paths(ctx), embedder=embedder)
  summary = {"benchmarks": list(ctx.config.decontaminate.benchmarks),
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


def validate(ctx: Context) -> None:
  benchmarks = list(ctx.config.decontaminate.benchmarks)
  if not benchmarks:
    raise UsageError("config.decontaminate.benchmarks names no benchmark")
  unknown = sorted(set(benchmarks) - {"humaneval", "mbpp"})
  if unknown:
    raise UsageError(f"config.decontaminate.benchmarks: unknown {unknown}; known: humaneval, "
                     f"mbpp")
  decont_config(ctx)


def _primary_only(ctx: Context) -> bool:
  """Process 0 alone checks the corpora in a multi-host job (the checks are local
  computations, the embedder on its own devices), unless the embedding check loads an
  Orbax checkpoint: an Orbax restore needs every process of the job."""
  model = ctx.config.data.quality.embed_model
  return not ("embedding" in ctx.config.decontaminate.checks and model
              and os.path.isdir(model) and checkpoint.is_checkpoint(model))


def node(corpora, after) -> Node:
  """The stage's node; `corpora(ctx)` gives {dataset: [JSONL paths]} to check and
  `after(ctx)` the nodes that write them (the data stage's steps, synthesize)."""
  return Node(name=NAME, run=lambda ctx: run(ctx, corpora(ctx)),
              doc="the corpora pruned against the benchmarks: decontaminate/",
              config=("decontaminate", "seed", "eval.humaneval_path", "eval.mbpp_path",
                      "data.quality.embed_model", "data.quality.embed_max_len"),
              after=after, validate=validate,
              files=lambda ctx: [p for paths in corpora(ctx).values() for p in paths
                                 if not p.startswith(ctx.workdir)],
              extra=lambda ctx: {"datasets": sorted(corpora(ctx))},
              primary_only=_primary_only)


