"""The Section 5 experiment (configs/section5.py): phi-1 retrained on CodeExercises pruned
against HumanEval at each tau, and Table 3.

    python -m recipe.section5 --config=configs/section5.py --workdir=DIR \\
        [--config.section5.taus=0.95,0.8] [--config.FIELD=VALUE ...] [--plan]

Runs the config, unpruned, in DIR/base (phi-1-base and phi-1), then one run per tau in
DIR/tau_<tau> (configs/section5.py: tau_overrides), each by the one runner exactly as
run.py runs a config: skipped when complete, resumed when interrupted, refused when an
expensive stage's inputs changed. The tau runs read the base run's phi-1-base and
tokenizer, so they are planned once the base run is complete; every tau's plan is
checked before any of them runs. Then DIR/table3.json and DIR/table3.md: the paper's
Table 3 layout, this run's columns beside the paper's, and on each row's problems the
paired difference retrained minus phi-1 with its bootstrap interval.
"""

from __future__ import annotations

import copy
import json
import os
import shutil

from absl import flags
from ml_collections import config_flags

from phi_jax import atomic, cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The Section 5 config (configs/section5.py).", lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs go: WORKDIR/base/ and "
                               "WORKDIR/tau_<tau>/ (default: config.workdir).")
_PLAN = flags.DEFINE_bool("plan", False, "Print the base run's plan (and the taus' when "
                          "the base run is complete) and exit.")

BASE = "base"
EXERCISES = "phi1_exercises"  # CodeExercises (data_pipeline/catalog.py)
# what a tau run starts from, copied from the base run: the data steps before the
# checks (the runner skips them when their inputs are the same, reruns them otherwise)
SEEDED = (os.path.join("data", "curated"), os.path.join("data", "quality"), "synthesize")
SEEDED_MARKERS = ("curate", "annotate", "embed", "classify", "exercises")


def tau_dir(workdir: str, tau: float) -> str:
  return os.path.join(workdir, f"tau_{tau:g}")


def _set(config, dotted: str, value) -> None:
  *parents, leaf = dotted.split(".")
  for part in parents:
    config = config[part]
  config[leaf] = value


def base_config(config, workdir: str):
  """The base run: the config as it is (unpruned data), in workdir/base."""
  out = copy.deepcopy(config)
  out.workdir = os.path.join(workdir, BASE)
  out.decontaminate.prune = False
  return out


def tau_config(config, tau: float, workdir: str, graph):
  """The run of one tau: `config` pruned at tau, finetuned from the base run's
  phi-1-base (config.finetune.model resolved in workdir/base), in workdir/tau_<tau>."""
  from configs import section5  # pylint: disable=g-import-not-at-top
  from recipe import models, runner  # pylint: disable=g-import-not-at-top
  base = base_config(config, workdir)
  base_ctx = runner.Context(base, base.workdir, graph)
  start = models.resolve(base_ctx, config.finetune.model or "pretrain", "config.finetune.model",
                         before="finetune")
  tokenizer = None
  if config.data.tokenizer.spec == "train":  # the base run's trained vocabulary
    from data_pipeline import catalog  # pylint: disable=g-import-not-at-top
    tokenizer = catalog.tokenizer_dir(base.workdir)
  stages = list(config.stages) or graph.stage_names()
  out = copy.deepcopy(config)
  for dotted, value in section5.tau_overrides(tau, config.section5.prune_datasets, start.spec,
                                              tokenizer, stages).items():
    _set(out, dotted, value)
  out.workdir = tau_dir(workdir, tau)
  return out


def _link_or_copy(src: str, dst: str) -> None:
  try:
    os.link(src, dst)
  except OSError:
    shutil.copy2(src, dst)


def seed_from_base(base_dir: str, directory: str) -> None:
  """A new tau run starts with the base run's curated and synthetic data and the
  markers of the steps that made them; the runner checks their inputs as usual."""
  if os.path.exists(directory):
    return
  staging = directory + ".seeding"
  shutil.rmtree(staging, ignore_errors=True)
  for sub in SEEDED:
    if os.path.isdir(os.path.join(base_dir, sub)):
      shutil.copytree(os.path.join(base_dir, sub), os.path.join(staging, sub),
                      copy_function=_link_or_copy)
  os.makedirs(os.path.join(staging, "data", "steps"), exist_ok=True)
  for name in SEEDED_MARKERS:
    marker = os.path.join(base_dir, "data", "steps", f"{name}.json")
    if os.path.isfile(marker):
      shutil.copy2(marker, os.path.join(staging, "data", "steps", f"{name}.json"))
  os.replace(staging, directory)


def _results(workdir: str) -> dict[str, list[bool]]:
  from data_pipeline.decontaminate import report  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "eval", "humaneval", "results.jsonl")
  return report.read_results(path) if os.path.isfile(path) else {}


def _rates(passed: dict[str, list[bool]], task_ids) -> dict[str, float]:
  """Per-problem pass rate (the share of its samples that passed: pass@1) of the
  problems in `task_ids` with results."""
  return {t: sum(passed[t]) / len(passed[t]) for t in task_ids if passed.get(t)}


def _read_json(path: str):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def table3(workdir: str, taus, dataset: str = EXERCISES) -> dict:
  """Table 3 from the finished runs: for each tau, the HumanEval problems similar to some
  record of the base run's (unpruned) `dataset`, and the pass rates on each part of the
  base run's model (phi-1) and of the model retrained on the data pruned at tau."""
  from data_pipeline.decontaminate import report  # pylint: disable=g-import-not-at-top
  from recipe import paper  # pylint: disable=g-import-not-at-top
  from recipe.reporting import trust  # pylint: disable=g-import-not-at-top
  base = os.path.join(workdir, BASE)
  decont = os.path.join(base, "decontaminate", dataset, "report.json")
  if not os.path.isfile(decont):
    raise cli.UsageError(f"{decont}: no decontamination report of {dataset} in the base run "
                         "(config.data.exercises or the synthesize stage give CodeExercises)")
  similar_by_tau = _read_json(decont)["similar"].get("humaneval", {})
  phi1 = _results(base)
  if not phi1:
    raise cli.UsageError(f"{base}/eval/humaneval/results.jsonl: the base run evaluated no "
                         "HumanEval problem (config.eval.benchmarks)")
  task_ids = sorted(phi1)
  rows = []
  for tau in sorted(taus, reverse=True):
    key = f"{tau:g}"
    if key not in similar_by_tau:
      raise cli.UsageError(f"{decont}: no similar problems at tau {key}: add it to "
                           "config.decontaminate.taus")
    run = tau_dir(workdir, tau)
    retrained = _results(run)
    removed = _read_json(os.path.join(run, "decontaminate", "summary.json"))[
        "corpora"][dataset]
    theirs = {name: (count, rates) for name, count, rates in paper.table3_rows(tau)}
    similar = set(similar_by_tau[key])
    for row in report.table3({tau: similar}, task_ids, {"phi-1": phi1, "retrained": retrained}):
      count, rates = theirs.get(row["set"], (None, (None, None, None)))
      ids = [t for t in task_ids if row["set"] == "total"
             or (t in similar) == (row["set"] == "similar")]
      rows.append({"tau": tau, "set": row["set"], "problems": row["problems"],
                   "phi-1": row["pass_rate"]["phi-1"],
                   "retrained": row["pass_rate"]["retrained"],
                   "paper_problems": count,
                   # retrained minus phi-1, paired on the set's problems
                   "paired": trust.paired({"0": _rates(phi1, ids)},
                                          {"0": _rates(retrained, ids)}),
                   **{f"paper_{m}": r for m, r in zip(paper.TABLE3_MODELS, rates)}})
    rows[-1]["exercises_removed"] = removed.get("removed")
    rows[-1]["exercises"] = removed.get("records")
  return {"dataset": dataset, "problems": len(task_ids), "rows": rows}


def _pct(value) -> str:
  return "-" if value is None else f"{100 * value:.1f}%"


def write_table3(workdir: str, taus, dataset: str = EXERCISES) -> dict:
  """DIR/table3.json and DIR/table3.md."""
  from recipe import paper  # pylint: disable=g-import-not-at-top
  table = table3(workdir, taus, dataset)
  atomic.write_json(table, os.path.join(workdir, "table3.json"))
  lines = [
      "# Table 3: similar vs non-similar HumanEval problems", "",
      f"Similar: some record of the unpruned CodeExercises ({dataset} of {BASE}/) within AST "
      "match rate tau of the problem. phi-1: the base run's finetuned model (unpruned "
      "data); retrained: finetuned again from the base run's phi-1-base on CodeExercises "
      f"pruned at tau (tau_<tau>/). Pass rates over the {table['problems']} evaluated "
      "HumanEval problems (pass@1 for one greedy sample).", "",
      f"The paper's columns are its Table 3 ({paper.CITATION}): 1.3B parameters, all 164 "
      "problems, 879.5K exercises; this run's model and data are its own size.", "",
      "| tau | | problem count | phi-1 | phi-1 retrained on pruned data | exercises removed"
      " | paper: problem count | paper: phi-1 | paper: phi-1 retrained on pruned data"
      " | paper: StarCoder-Prompted |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for row in table["rows"]:
    first = row["set"] == "similar"
    removed = (f"{row['exercises_removed']} of {row['exercises']}"
               if row["set"] == "total" else "")
    paper_rates = [row[f"paper_{m}"] for m in paper.TABLE3_MODELS]
    lines.append(
        f"| {row['tau']:g} | {row['set']} | {row['problems']} |" if first else
        f"| | {row['set']} | {row['problems']} |")
    lines[-1] += (f" {_pct(row['phi-1'])} | {_pct(row['retrained'])} | {removed} | "
                  f"{'-' if row['paper_problems'] is None else row['paper_problems']} | "
                  + " | ".join("-" if r is None else f"{r:.1f}%" for r in paper_rates) + " |")
  removed = ", ".join(f"{n:,} at tau {t:g}" for t, n in paper.PRUNED_EXERCISES.items())
  lines += ["", f"The paper removed {removed} of its {paper.EXERCISES:,} exercises.", ""]
  lines += _paired_md(table["rows"])
  atomic.write_text(os.path.join(workdir, "table3.md"), "\n".join(lines))
  return table


def _paired_md(rows: list[dict]) -> list[str]:
  """The paired comparisons of Table 3's rows: retrained minus phi-1 on each set."""
  from recipe.reporting import trust  # pylint: disable=g-import-not-at-top
  pairs = [row["paired"] for row in rows if "paired" in row]
  if not pairs:
    return []
  lines = ["## Paired comparisons: retrained minus phi-1", "",
           "The change of the pass rate (points) on each set's problems, the same problems "
           "for both models, resampled jointly. " + trust.paired_how(pairs), "",
           "| tau | | problems compared | " + " | ".join(trust.PAIRED_COLUMNS) + " |",
           "|---|---|---:|" + "---:|" * len(trust.PAIRED_COLUMNS)]
  for row in rows:
    if "paired" in row:
      lines.append(f"| {row['tau']:g} | {row['set']} | "
                   f"{row['paired'].get('num_problems', 0)} | "
                   + " | ".join(trust.paired_cells(row["paired"])) + " |")
  return lines + [""]


def run(config, workdir: str, plan_only: bool = False) -> dict | None:
  """The base run, then every tau's run, then Table 3; returns table3.json's content."""
  from recipe import graph as graph_lib, runner  # pylint: disable=g-import-not-at-top
  graph = graph_lib.build()
  workdir = os.path.abspath(workdir)
  base = base_config(config, workdir)
  base_ctx = runner.Context(base, base.workdir, graph)
  base_plan = runner.make_plan(base_ctx, list(base.stages), list(base.force))
  if plan_only:
    print("base:\n" + runner.format_plan(base_plan, base_ctx.workdir))
  else:
    runner.check_refusals(base_plan, base_ctx.workdir)
    runner.say(f"section 5: the base run (unpruned data): {base_ctx.workdir}")
    runner.execute(base_ctx, base_plan)
  if plan_only and base_ctx.marker("pretrain") is None:
    print("the taus' runs are planned once the base run is complete")
    return None
  taus = [float(t) for t in config.section5.taus]
  plans = {}
  for tau in taus:  # every tau's plan is checked before any runs
    tau_cfg = tau_config(config, tau, workdir, graph)
    if not plan_only:
      seed_from_base(base.workdir, tau_cfg.workdir)
    ctx = runner.Context(tau_cfg, tau_cfg.workdir, graph)
    plans[tau] = (ctx, runner.make_plan(ctx, list(tau_cfg.stages), list(tau_cfg.force)))
    if plan_only:
      print(f"tau {tau:g}:\n" + runner.format_plan(plans[tau][1], ctx.workdir))
  if plan_only:
    return None
  for ctx, plan in plans.values():
    runner.check_refusals(plan, ctx.workdir)
  for tau, (ctx, plan) in plans.items():
    runner.say(f"section 5: tau {tau:g} (CodeExercises pruned): {ctx.workdir}")
    runner.execute(ctx, plan)
  return write_table3(workdir, taus)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None or "section5" not in config:
    raise cli.UsageError("--config: pass a Section 5 config (configs/section5.py)")
  workdir = _WORKDIR.value or config.workdir
  if run(config, workdir, plan_only=_PLAN.value) is not None:
    print(os.path.join(os.path.abspath(workdir), "table3.md"))


if __name__ == "__main__":
  cli.run(main, prog="python -m recipe.section5")
