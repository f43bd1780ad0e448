"""Step `attribute` (stage eval): memorisation attribution of the evaluated model's passes.

Every passing sample of the evaluated model (WORKDIR/eval/<benchmark>/results.jsonl) is
matched against the training records that model saw (data_pipeline/decontaminate/
attribution.py: the decontamination's n-gram and AST indexes and thresholds,
config.decontaminate's ngram_n, ngram_unit, ngram_min_matches, prune_tau, taus and
ast_min_nodes), and the pass@k over the samples that are not near-copies is given
beside the pass@k, both with their bootstrap intervals. The training data is found by
walking the model's lineage: the datasets of finetune (config.finetune.data) and of
the pretraining it started from (config.train.data), as the data stage built them (the
pruned records where config.decontaminate.prune prunes). A model imported from
elsewhere (config.eval.model a path or hub id, or an imported config.init.model under
the training) has training data this run does not hold: the step says so.

Writes WORKDIR/attribute/<benchmark>.jsonl (one line per passing sample: its nearest
records, similarities, near-copy or not) and WORKDIR/attribute/summary.json.
"""

from __future__ import annotations

import os

from data_pipeline import catalog
from data_pipeline.decontaminate import DecontConfig, attribution
from eval import passk
from eval.benchmarks import get_benchmark
from eval import run as eval_run
from phi_jax import atomic
from phi_jax import settings as settings_lib
from phi_jax.jsonl import read_jsonl
from recipe import models
from recipe.runner import Context, Node
from recipe.stages import data

NAME = "attribute"
# the decontamination settings the attribution reads
FIELDS = ("ngram_n", "ngram_unit", "ngram_min_matches", "prune_tau", "taus", "ast_min_nodes")


def lineage(ctx: Context) -> dict:
  """What the evaluated model was trained on in this run: {"datasets": [...],
  "stages": [...], "unavailable": [why, ...]} (the training the run does not hold)."""
  ref = models.resolve(ctx, ctx.settings.eval.model, "config.eval.model", before="eval")
  datasets, stages, unavailable = [], [], []
  sections = {"pretrain": ("train", ctx.settings.train),
              "finetune": ("finetune", ctx.settings.finetune)}
  while not ref.is_random:
    if ref.node is None:
      unavailable.append(f"{ref.spec} is a model from elsewhere: the data it was trained "
                         "on is not in this run")
      break
    if ref.node == "init":
      init = ctx.settings.init.model
      if init != models.RANDOM:
        unavailable.append(f"config.init.model = {init!r} is imported: the data it was "
                           "trained on is not in this run")
      break
    if ref.node not in sections:
      unavailable.append(f"{ref.node} makes a model this step does not know the data of")
      break
    section_name, section = sections[ref.node]
    stages.append(ref.node)
    for name in section.data:
      if catalog.is_catalog_name(name):
        datasets += [d for d in catalog.components(name) if d not in datasets]
      else:
        unavailable.append(f"config.{section_name}.data: {name} is a dataset directory, "
                           "not one this run built: its records are not searched")
    ref = models.resolve(ctx, section.model, f"config.{section_name}.model",
                         allow_random=True, before=ref.node)
  return {"datasets": datasets, "stages": stages, "unavailable": unavailable}


def training_files(ctx: Context, datasets: list[str]) -> dict[str, list[str]]:
  """{dataset: JSONL files} of the datasets the data stage built them from (the pruned
  records where config.decontaminate.prune prunes), relative to the work directory
  when inside it (a moved work directory is the same input)."""
  sources = data.corpora(ctx)

  def relative(path: str) -> str:
    inside = os.path.abspath(path).startswith(ctx.workdir + os.sep)
    return os.path.relpath(path, ctx.workdir) if inside else os.path.abspath(path)

  return {d: [relative(f) for f in sources[d]] for d in datasets if d in sources}


def _passing(cfg, benchmark: str, results: list[dict]) -> list[attribution.Passing]:
  problems = {p.task_id: p for p in get_benchmark(
      benchmark, **eval_run.benchmark_options_of(benchmark, cfg)).load(cfg.paths().get(benchmark))}
  return [attribution.Passing(r["task_id"], r["sample_index"], problems[r["task_id"]].prompt,
                              problems[r["task_id"]].entry_point, r["completion"])
          for r in results if r["passed"]]


LISTED = 10  # the passing samples nearest to a training record, in the summary


def _closeness(sample: dict) -> tuple:
  return (sample["near_copy"], (sample["ast"] or {}).get("tau", 0.0),
          (sample["ngram"] or {}).get("matches", 0))


def run(ctx: Context, reads: dict) -> dict:
  cfg = reads["eval"].value
  config = DecontConfig(**reads["thresholds"])
  trained = reads["lineage"]
  corpora = {d: [os.path.join(ctx.workdir, f) for f in files]
             for d, files in reads["corpora"].items()}
  out_dir = ctx.node_dir(NAME)
  os.makedirs(out_dir, exist_ok=True)
  summary = {"training": {**trained, "files": corpora}, "benchmarks": {}}
  for benchmark in cfg.benchmarks:
    results_path = os.path.join(ctx.node_dir("eval"), benchmark, eval_run.RESULTS)
    results = [row for _, row in read_jsonl(results_path)]
    report = passk.pass_at_k_report(attribution.clean_counts(results, set()), cfg.ks)
    entry = {"pass_at_k": {k: report[k] for k in ("overall", "intervals", "bootstrap")},
             "passing": sum(bool(r["passed"]) for r in results)}
    if corpora:
      found = attribution.attribute(_passing(cfg, benchmark, results), corpora, config)
      atomic.write_jsonl(found["samples"], os.path.join(out_dir, f"{benchmark}.jsonl"))
      near = {(s["task_id"], s["sample_index"]) for s in found["samples"] if s["near_copy"]}
      counts = attribution.clean_counts(results, near)
      clean = passk.pass_at_k_report(counts, cfg.ks) if counts else None
      entry.update(near_copies=len(near), records=found["records"],
                   thresholds=found["thresholds"],
                   clean_problems=len(counts),
                   clean_pass_at_k=None if clean is None else {
                       k: clean[k] for k in ("overall", "intervals", "bootstrap",
                                             "skipped_k")},
                   nearest=sorted(found["samples"], key=_closeness, reverse=True)[:LISTED])
    summary["benchmarks"][benchmark] = entry
    print(f"[{NAME}] {benchmark}: {entry.get('near_copies', 'no training data to search;')} "
          f"near-copies among {entry['passing']} passing samples", flush=True)
  atomic.write_json(summary, os.path.join(out_dir, "summary.json"))
  return {b: {"passing": e["passing"], "near_copies": e.get("near_copies")}
          for b, e in summary["benchmarks"].items()}


def _reads(ctx: Context) -> dict:
  """The benchmarks evaluated, the decontamination thresholds, and the evaluated
  model's training lineage and the files of its datasets."""
  trained = lineage(ctx)
  return {"eval": settings_lib.Part(ctx.settings.eval, ("benchmarks", "k", "mbpp_prompt",
                                                        "humaneval_path", "mbpp_path",
                                                        "data_paths")),
          # the values themselves: the decontamination counts its n-gram and AST fields
          # inert when it does not run those checks, but the attribution always does
          "thresholds": {f: getattr(ctx.settings.decontaminate, f) for f in FIELDS},
          "lineage": trained, "corpora": training_files(ctx, trained["datasets"])}


def _after(ctx: Context) -> list[str]:
  """The eval stage, and the nodes that write the training records searched."""
  return ["eval"] + data.corpus_nodes(ctx)


NODES = (Node(name=NAME, group="eval", run=run, reads=_reads, after=_after, primary_only=True,
              doc="nearest training records of the passing samples, clean pass@k: "
                  "attribute/summary.json"),)
