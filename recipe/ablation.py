"""The paper's Figure 2.1 ablation: does data quality pay, before and after finetuning?

    python -m recipe.ablation --config=configs/ablation_quality.py --workdir=DIR \\
        [--config.ablation.seeds=0,1,2] [--config.ablation.budgets=70,200] [--plan]

The arms (configs/ablation_quality.py, docs/ablation.md):

    stack_plus               pretrained on the unfiltered code (The Stack+), scored as is
    filtered                 pretrained on the code the quality classifier keeps, scored as is
    code_textbook            pretrained on filtered code + synthetic textbooks, scored as is
    code_textbook_exercises  the code_textbook model finetuned on CodeExercises

The first three are pretraining runs; every pretraining run is also finetuned and its
finetuned model scored beside its pretrained one (on CodeExercises when the run has
exercises, else on the exercises mined from the curated code, a stand-in labelled as
such: only code_textbook -> CodeExercises is a column of the figure). Arms that need
synthetic data are skipped, with the reason, when no teacher is configured
(config.synth.teacher / local_teacher) and no file of it is given (config.ablation.
textbooks / exercises); the other arms run.

Axes. `config.ablation.budgets` lists pretraining lengths in steps (tokens = steps x
batch_size x seq_len): each budget is a separate run, because the learning rate decays
linearly to the run's last step, so an intermediate checkpoint of a longer run is a
different model from a run of that length. The model size is the config: one command runs
one size (configs/ablation_quality.py: the tiny model; configs/ablation_phi1_small.py: the
paper's 350M, for GPUs), and the summary gathers every size run in the same DIR.
`config.ablation.seeds` repeats each run; a seed varies parameter initialisation, the
order of the training data, dropout and the evaluator's sampling, never the data itself.

Layout: each pretraining arm's data stage runs once per size in DIR/<size>/data/<arm>
(with config.seed); each training run is DIR/<size>/runs/<arm>/steps<N>/seed<S>, whose
data directories are links to its arm's, so the runner's fingerprints still tie every
run to the data it read (a changed data setting makes the data rebuild and the training
runs refuse, as in run.py). Then DIR/ablation.json, DIR/ablation.md (mean and spread per
arm, the paper's values in their own columns, and every pair of arms' paired difference
of pass@1 on the same problems with its bootstrap interval: paired_comparisons) and
DIR/ablation.png (grouped bars per model size x budget, arms as bars: the figure's
layout). Benchmark bits per byte is the primary metric; pass@1 is beside it. With
config.ablation.shared_tokenizer (the default) every run tokenizes with the first run's
tokenizer (see shared_tokenizer), so the arms differ in their data only.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time

from absl import flags
from ml_collections import config_flags

from phi_jax import atomic, cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The ablation config (configs/ablation_quality.py or "
    "configs/ablation_phi1_small.py).", lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs go: WORKDIR/<size>/... "
                               "(default: config.workdir).")
_PLAN = flags.DEFINE_bool("plan", False, "Print each data and training run's plan and exit.")

CODE_EXERCISES = "phi1_code_exercises"
MINED_EXERCISES = "phi1_mined_exercises"
TRAINING_STAGES = ("init", "pretrain", "finetune", "eval")
BENCHMARK = "humaneval"  # the figure's benchmark


@dataclasses.dataclass(frozen=True)
class Arm:
  """One arm of the figure: which pretraining run it scores, and after which stage."""
  label: str
  run: str  # the pretraining run it scores (an arm name of RUNS)
  stage: str  # 'pretrain' (scored after pretraining alone) or 'finetune'


@dataclasses.dataclass(frozen=True)
class Run:
  """A pretraining run's data: the config fields it sets (data fields only)."""
  label: str
  keep_threshold: float
  train_data: tuple[str, ...]
  textbooks: bool  # its pretraining data includes synthetic textbooks


RUNS = {
    "stack_plus": Run("The Stack+", 0.0, ("phi1_filtered_code",), False),
    "filtered": Run("filtered code", 0.5, ("phi1_filtered_code",), False),
    "code_textbook": Run("CodeTextbook", 0.5, ("phi1_code_textbook",), True),
}
ARMS = {
    "stack_plus": Arm("The Stack+ (unfiltered code)", "stack_plus", "pretrain"),
    "filtered": Arm("filtered code", "filtered", "pretrain"),
    "code_textbook": Arm("CodeTextbook (filtered code + textbooks)", "code_textbook",
                         "pretrain"),
    "code_textbook_exercises": Arm("CodeTextbook -> CodeExercises", "code_textbook",
                                   "finetune"),
}

# The paper's HumanEval pass@1 for each arm, by model size, with where it is stated.
# Figure 2.1 draws a bar for every (size, budget, column) but prints no numbers; only
# the values the text states are here, each with its source and the budget the paper
# gives it. The figure's per-budget bars (350M at 26B and 76B tokens, the 1.3B Stack+
# bar) are 'not stated in the text (figure only)'.
FIGURE_ONLY = "not stated in the text (figure only)"
PAPER = {
    "stack_plus": {
        "350M": (12.19, "§2.1: The Stack + StackOverflow unfiltered, 'saturates at 12.19% "
                 "even after training for 96k steps (~200B tokens)': not one of the "
                 "figure's budgets"),
        "1.3B": (None, FIGURE_ONLY + "; trained for 76B tokens (Figure 2.1 caption)")},
    "filtered": {
        "350M": (17.68, "§2.1: the filtered subset, 'after 36k steps'; not a column of "
                 "Figure 2.1"),
        "1.3B": (None, "not reported")},
    "code_textbook": {
        "350M": (20.12, "§2.1: filtered code + synthetic textbooks, 'reported in Figure "
                 "2.1'; the text does not name its token budget"),
        "1.3B": (29.0, "phi-1-base, Figure 2.1 caption: 51B tokens")},
    "code_textbook_exercises": {
        "350M": (45.0, "phi-1-small, abstract and Table 1: 'the same pipeline as phi-1'; "
                 "which of the figure's budgets is not stated"),
        "1.3B": (50.6, "phi-1, abstract and Table 1: 51B tokens")},
}
PAPER_SIZES = ("350M", "1.3B")


# ----------------------------------------------------------------------- configs
def teacher_configured(config) -> bool:
  """Whether the config names a teacher for the synthesize stage."""
  synth = config.synth
  return bool(synth.local_teacher or synth.teacher.model or synth.teacher.base_url)


def skip_reasons(config) -> dict[str, str]:
  """{arm: why it is skipped} for the arms of config.ablation.arms that cannot run."""
  teacher = teacher_configured(config)
  books, exercises = tuple(config.ablation.textbooks), tuple(config.ablation.exercises)
  no_teacher = ("no teacher is configured (config.synth.teacher.model / base_url or "
                "config.synth.local_teacher)")
  reasons = {}
  for arm in config.ablation.arms:
    if arm not in ARMS:
      raise ValueError(f"config.ablation.arms: unknown arm {arm!r}; arms: {', '.join(ARMS)}")
    if arm.startswith("code_textbook") and not (teacher or books):
      reasons[arm] = (f"needs synthetic textbooks: {no_teacher} and "
                      "config.ablation.textbooks names no file")
    elif arm == "code_textbook_exercises" and not (teacher or exercises):
      reasons[arm] = (f"needs CodeExercises: {no_teacher} and config.ablation.exercises "
                      "names no file")
  return reasons


def _runs(config) -> list[str]:
  """The pretraining runs the arms that can run need, in RUNS order."""
  skipped = skip_reasons(config)
  wanted = {ARMS[a].run for a in config.ablation.arms if a not in skipped}
  return [r for r in RUNS if r in wanted]


def _synthesizes(config, run: str) -> bool:
  """The synthesize stage runs in the data stage of the textbook run only (the other
  runs need none of its output)."""
  return RUNS[run].textbooks and teacher_configured(config)


def finetune_data(config, run: str) -> tuple[str, ...]:
  """CodeExercises when the run has exercises, else the mined exercises (a stand-in)."""
  has = bool(tuple(config.ablation.exercises)) or _synthesizes(config, run)
  return (CODE_EXERCISES,) if has else (MINED_EXERCISES,)


def _set(config, dotted: str, value) -> None:
  node = config
  *parents, leaf = dotted.split(".")
  for part in parents:
    node = node[part]
  node[leaf] = value


def data_config(config, run: str, workdir: str, tokenizer: str | None = None):
  """The config of `run`'s data stage, in workdir/<size>/data/<run>: the base config
  with the run's data fields, at config.seed; `tokenizer`: the tokenizer.json it uses
  instead of training its own (see shared_tokenizer)."""
  spec = RUNS[run]
  out = copy.deepcopy(config)
  if tokenizer:
    _set(out, "data.tokenizer.spec", tokenizer)
  _set(out, "data.quality.keep_threshold", spec.keep_threshold)
  _set(out, "data.textbooks", tuple(config.ablation.textbooks) if spec.textbooks else ())
  _set(out, "data.exercises", tuple(config.ablation.exercises))
  _set(out, "train.data", spec.train_data)
  _set(out, "finetune.data", finetune_data(config, run))
  out.stages = ("data",) + (("synthesize",) if _synthesizes(config, run) else ())
  out.workdir = os.path.join(workdir, config.ablation.size, "data", run)
  return out


def run_config(config, run: str, steps: int, seed: int, workdir: str,
               tokenizer: str | None = None):
  """The config of one training run: `run`'s data config with `steps` of pretraining
  and `seed`, scoring the pretrained and the finetuned model."""
  out = data_config(config, run, workdir, tokenizer)
  out.seed = int(seed)
  out.train.steps = int(steps)
  out.stages = TRAINING_STAGES
  out.eval.model = "finetune"
  out.eval.checkpoints = ("pretrain",)  # scored after pretraining alone too
  out.workdir = run_dir(workdir, config.ablation.size, run, steps, seed)
  return out


def run_dir(workdir: str, size: str, run: str, steps: int, seed: int) -> str:
  return os.path.join(workdir, size, "runs", run, f"steps{int(steps)}", f"seed{int(seed)}")


# ----------------------------------------------------------------------- running
def _shares_tokenizer(config) -> bool:
  return bool(config.ablation.shared_tokenizer) and config.data.tokenizer.spec == "train"


def shared_tokenizer(first_ctx, directory: str) -> str | None:
  """The tokenizer every run after the first uses: the first run's (stack_plus: trained
  on all the curated code, of which the filtered code is a part), copied to
  directory/tokenizer-<sha256>.json so that its content is part of the path the other
  runs' fingerprints record. None when the first run's data stage has not run.

  Why one tokenizer: bits per byte does not depend on the tokenizer's units, but a
  model's loss does depend on how many tokens a byte costs; a tokenizer trained on each
  arm's own data compresses the benchmark differently (an untrained model's bits per
  byte differs by arm), which would be counted as an effect of the data."""
  from data_pipeline import catalog  # pylint: disable=g-import-not-at-top
  from phi_jax.digest import file_sha256  # pylint: disable=g-import-not-at-top
  source = os.path.join(catalog.tokenizer_dir(first_ctx.workdir), "tokenizer.json")
  if first_ctx.marker("tokenizer") is None or not os.path.isfile(source):
    return None
  target = os.path.join(directory, f"tokenizer-{file_sha256(source)[:16]}.json")
  if not os.path.isfile(target):
    with open(source, "rb") as f:
      atomic.write_bytes(target, f.read())
  return target


def _link_data(graph, data_ctx, run_workdir: str) -> None:
  """Links run_workdir's data directories (the top-level entries the data-side nodes
  write) to the arm's data stage, so the run reads that data and its markers."""
  os.makedirs(run_workdir, exist_ok=True)
  tops = set()
  for name in data_ctx.selected:
    node = graph[name]
    tops.update(p.split(os.sep)[0] for p in (node.dir_name, node.marker_path))
  for top in sorted(tops):
    target, link = data_ctx.path(top), os.path.join(run_workdir, top)
    if not os.path.exists(target):
      continue
    if os.path.islink(link):
      if os.path.realpath(link) == os.path.realpath(target):
        continue
      os.remove(link)
    elif os.path.exists(link):
      raise cli.UsageError(f"{link} is a directory of its own, not a link to the arm's "
                           f"data {target}: remove it or use another --workdir")
    os.symlink(target, link)


def _textbooks_missing(data_ctx) -> bool:
  marker = data_ctx.marker("datasets") or {}
  return "phi1_textbooks" in (marker.get("summary") or {}).get("empty", [])


def _scores(summary: dict, results_dir: str | None) -> dict:
  """pass@1 and bits per byte of the benchmark, and its per-problem pass@1 (`per_task`,
  from results_dir/<benchmark>/pass_at_k.json; None without it) for the paired
  comparisons."""
  bench = summary.get(BENCHMARK, {})
  per_task = None
  path = results_dir and os.path.join(results_dir, BENCHMARK, "pass_at_k.json")
  if path and os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      report = json.load(f)
    if all("pass@1" in v for v in report.get("per_task", {}).values()):
      per_task = {t: v["pass@1"] for t, v in report["per_task"].items()}
  return {"pass@1": bench.get("overall", {}).get("pass@1"), "bpb": bench.get("bpb"),
          "per_task": per_task}


def run_scores(run_workdir: str) -> dict:
  """{'pretrain': scores, 'finetune': scores} of a finished training run's eval."""
  eval_dir = os.path.join(run_workdir, "eval")
  with open(os.path.join(eval_dir, "summary.json"), encoding="utf-8") as f:
    finetuned = _scores(json.load(f), eval_dir)
  with open(os.path.join(eval_dir, "checkpoints.json"), encoding="utf-8") as f:
    sweep = json.load(f)
  # a sweep written before entries recorded their `dir` has them where the eval stage
  # puts them: eval/checkpoints/<model, ':' as '_'>
  pretrained = next(
      _scores(item["benchmarks"], os.path.join(run_workdir, item.get("dir") or os.path.join(
          "eval", "checkpoints", item["model"].replace(":", "_"))))
      for item in sweep if item["model"].startswith("pretrain"))
  pretrained["untrained_bpb"] = _step0_bpb(os.path.join(run_workdir, "pretrain",
                                                        "metrics.jsonl"))
  return {"pretrain": pretrained, "finetune": finetuned}


def _step0_bpb(metrics_path: str) -> float | None:
  """The benchmark's bits per byte pretraining measured at step 0 (an untrained model:
  it shows what the tokenizer alone makes of the benchmark), or None."""
  if not os.path.isfile(metrics_path):
    return None
  with open(metrics_path, encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      if row.get("step") == 0 and f"bpb_{BENCHMARK}" in row:
        return row[f"bpb_{BENCHMARK}"]
  return None


def execute(config, workdir: str, plan_only: bool = False) -> dict:
  """Runs every data stage and training run of `config` under workdir/<size>; returns
  and writes workdir/<size>/results.json."""
  from recipe import graph as graph_lib, runner  # pylint: disable=g-import-not-at-top
  graph = graph_lib.build()
  size = config.ablation.size
  skipped = skip_reasons(config)
  runs = _runs(config)
  budgets, seeds = [int(b) for b in config.ablation.budgets], [int(s) for s in
                                                                config.ablation.seeds]
  if not budgets or not seeds:
    raise cli.UsageError("config.ablation.budgets and config.ablation.seeds: name at "
                         "least one each")
  for arm, why in skipped.items():
    runner.say(f"ablation arm {arm}: skipped: {why}")
  started = time.time()
  data_ctxs, timings, tokenizer = {}, {}, None
  for i, run in enumerate(runs):
    cfg = data_config(config, run, workdir, tokenizer)
    ctx = runner.Context(cfg, cfg.workdir, graph)
    data_ctxs[run] = ctx
    plan = runner.make_plan(ctx, list(cfg.stages), list(cfg.force))
    if plan_only:
      print(f"data of {size}/{run}:\n" + runner.format_plan(plan, ctx.workdir))
    else:
      runner.check_refusals(plan, ctx.workdir)
      runner.say(f"ablation data of {run}: {ctx.workdir}")
      t0 = time.time()
      runner.execute(ctx, plan)
      timings[f"data/{run}"] = time.time() - t0
    if i == 0 and _shares_tokenizer(config):
      tokenizer = shared_tokenizer(ctx, os.path.join(workdir, size, "data"))
      if tokenizer is None:  # --plan before the first data stage ran
        print(f"data of the other runs: after the data stage of {run} (its tokenizer)")
        break
  if not plan_only and "code_textbook" in runs and _textbooks_missing(data_ctxs["code_textbook"]):
    for arm in ("code_textbook", "code_textbook_exercises"):
      if arm in config.ablation.arms and arm not in skipped:
        skipped[arm] = "the data stage built no textbook (the teacher's were all rejected)"
    runs.remove("code_textbook")
  train_plans = {}
  # seed-major order: an interrupted ablation has every arm at the seeds it finished
  for seed in seeds:
    for steps in budgets:
      for run in runs:
        if run not in data_ctxs:
          continue
        cfg = run_config(config, run, steps, seed, workdir, tokenizer)
        if plan_only and not all(data_ctxs[run].marker(n) for n in data_ctxs[run].selected):
          print(f"run {size}/{run}/steps{steps}/seed{seed}: after the data stage of {run}")
          continue
        _link_data(graph, data_ctxs[run], cfg.workdir)
        ctx = runner.Context(cfg, cfg.workdir, graph)
        train_plans[(run, steps, seed)] = (ctx, runner.make_plan(ctx, list(cfg.stages),
                                                                 list(cfg.force)))
        if plan_only:
          print(f"run {size}/{run}/steps{steps}/seed{seed}:\n"
                + runner.format_plan(train_plans[(run, steps, seed)][1], ctx.workdir))
  if plan_only:
    return {}
  for ctx, plan in train_plans.values():
    runner.check_refusals(plan, ctx.workdir)
  scores = {}
  results = _size_results(config, runs, budgets, seeds, skipped, scores, timings,
                          time.time() - started)
  for (run, steps, seed), (ctx, plan) in train_plans.items():
    runner.say(f"ablation run {size}/{run}, {steps} steps, seed {seed}: {ctx.workdir}")
    t0 = time.time()
    runner.execute(ctx, plan)
    timings[f"{run}/steps{steps}/seed{seed}"] = time.time() - t0
    scores[(run, steps, seed)] = run_scores(ctx.workdir)
    # the results so far after every run (rows count the seeds finished), so a long
    # ablation stopped early still shows what it measured
    results = _size_results(config, runs, budgets, seeds, skipped, scores, timings,
                            time.time() - started)
    atomic.write_json(results, os.path.join(workdir, size, "results.json"))
    write_summary(workdir)
  return results


# ----------------------------------------------------------------------- results
def stats(values: list[float | None]) -> dict | None:
  """Mean, sample standard deviation (None for one value), min, max and n."""
  values = [v for v in values if v is not None]
  if not values:
    return None
  mean = sum(values) / len(values)
  sd = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        if len(values) > 1 else None)
  return {"mean": mean, "sd": sd, "min": min(values), "max": max(values), "n": len(values)}


def _size_results(config, runs, budgets, seeds, skipped, scores, timings, seconds) -> dict:
  tokens_per_step = int(config.train.batch_size) * int(config.train.seq_len)
  groups = []
  for steps in budgets:
    rows = []
    for arm in config.ablation.arms:
      spec = ARMS[arm]
      if arm in skipped:
        rows.append({"arm": arm, "label": spec.label, "skipped": skipped[arm]})
        continue
      ft = finetune_data(config, spec.run)
      if spec.stage == "finetune" and ft != (CODE_EXERCISES,):
        rows.append({"arm": arm, "label": spec.label,
                     "skipped": "its run has no CodeExercises to finetune on"})
        continue
      rows.append(_row(arm, spec.label, spec.run, spec.stage, ft, steps, seeds, scores,
                       in_figure=True))
    for run in runs:  # every run's finetuned model beside (beyond the figure)
      ft = finetune_data(config, run)
      if run == "code_textbook" and ft == (CODE_EXERCISES,):
        continue  # that one is the figure's code_textbook_exercises
      what = "CodeExercises" if ft == (CODE_EXERCISES,) else "mined exercises"
      rows.append(_row(f"{run}_finetuned", f"{RUNS[run].label} -> {what}", run, "finetune",
                       ft, steps, seeds, scores, in_figure=False))
    groups.append({"steps": steps, "tokens": steps * tokens_per_step, "rows": rows,
                   "verdict": verdicts(rows), "paired": paired_comparisons(rows, scores, steps)})
  model = config.model
  return {"size": config.ablation.size,
          "model": {k: int(model[k]) for k in ("d_model", "num_layers", "num_heads",
                                               "mlp_dim")},
          "tokens_per_step": tokens_per_step,
          "seeds": [s for s in seeds if any(k[2] == s for k in scores)], "groups": groups,
          "skipped": skipped, "seconds": seconds, "timings": timings,
          "benchmark": BENCHMARK}


def _row(arm, label, run, stage, ft, steps, seeds, scores, *, in_figure) -> dict:
  per_seed = {str(s): {k: v for k, v in scores[(run, steps, s)][stage].items()
                       if k != "per_task"}
              for s in seeds if (run, steps, s) in scores}
  return {"arm": arm, "label": label, "run": run, "stage": stage, "in_figure": in_figure,
          "scored_after": ("pretraining" if stage == "pretrain"
                           else "finetuning on " + ", ".join(ft)),
          "seeds": per_seed,
          "bpb": stats([v["bpb"] for v in per_seed.values()]),
          "untrained_bpb": stats([v.get("untrained_bpb") for v in per_seed.values()]),
          "pass@1": stats([v["pass@1"] for v in per_seed.values()])}


def paired_comparisons(rows: list[dict], scores: dict, steps: int) -> list[dict]:
  """Every pair of the group's scored rows (a before b in the table's order): the
  paired difference of their HumanEval pass@1 (b minus a) on the same problems, the
  seeds both finished averaged per problem, with its paired bootstrap interval over
  problems (recipe/reporting/trust.py's `paired`)."""
  from recipe.reporting import trust  # pylint: disable=g-import-not-at-top
  scored = [r for r in rows if "skipped" not in r]
  per_problem = {}
  for row in scored:
    per_problem[row["arm"]] = {
        seed: scores[(row["run"], steps, int(seed))][row["stage"]]["per_task"]
        for seed in row["seeds"]
        if scores[(row["run"], steps, int(seed))][row["stage"]].get("per_task") is not None}
  out = []
  for i, a in enumerate(scored):
    for b in scored[i + 1:]:
      out.append({"a": a["arm"], "b": b["arm"], "metric": "pass@1",
                  **trust.paired(per_problem[a["arm"]], per_problem[b["arm"]])})
  return out


def compare(better: dict | None, worse: dict | None, lower_is_better: bool) -> str:
  """Whether `better`'s seeds beat `worse`'s beyond the spread: their ranges do not
  overlap (every seed of one on the right side of every seed of the other)."""
  if better is None or worse is None:
    return "not measured"
  if better["n"] < 2 or worse["n"] < 2:
    return "one seed: the spread is unknown"
  if better["min"] == better["max"] == worse["min"] == worse["max"]:
    return "no difference (every seed of both scored the same)"
  sign = 1 if lower_is_better else -1
  if sign * better["max"] < sign * worse["min"]:
    return "beyond the spread (the seeds' ranges do not overlap)"
  if sign * worse["max"] < sign * better["min"]:
    return "the other way, beyond the spread (the seeds' ranges do not overlap)"
  return "not beyond the spread (the seeds' ranges overlap)"


def verdicts(rows: list[dict]) -> dict:
  """filtered vs The Stack+ after pretraining (and after finetuning), per metric."""
  by_arm = {r["arm"]: r for r in rows if "skipped" not in r}
  out = {}
  for stage, (f, u) in (("pretrain", ("filtered", "stack_plus")),
                        ("finetune", ("filtered_finetuned", "stack_plus_finetuned"))):
    if f in by_arm and u in by_arm:
      out[stage] = {
          "bpb": compare(by_arm[f]["bpb"], by_arm[u]["bpb"], lower_is_better=True),
          "pass@1": compare(by_arm[f]["pass@1"], by_arm[u]["pass@1"], lower_is_better=False),
          "bpb_difference": _diff(by_arm[f]["bpb"], by_arm[u]["bpb"])}
  return out


def _diff(a, b):
  return None if a is None or b is None else a["mean"] - b["mean"]


def _fmt(s: dict | None, percent: bool) -> str:
  if s is None:
    return "-"
  if percent:
    text = f"{100 * s['mean']:.2f}%"
    return text + (f" ± {100 * s['sd']:.2f}" if s["sd"] is not None else "")
  return f"{s['mean']:.4f}" + (f" ± {s['sd']:.4f}" if s["sd"] is not None else "")


def _tokens(n: int) -> str:
  for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
    if n >= scale:
      return f"{n / scale:.3g}{unit}"
  return str(n)


def _paper_cell(arm: str, size: str) -> str:
  if arm not in PAPER:
    return "not in the paper"
  value, source = PAPER[arm][size]
  return f"{value:g}% ({source})" if value is not None else source


def markdown(all_results: list[dict]) -> str:
  """ablation.md: one table per model size x budget, the paper's values beside."""
  lines = ["# Figure 2.1: pretraining data quality, before and after finetuning", "",
           "HumanEval bits per byte of the canonical solutions (primary at small scale; "
           "lower is better) and pass@1, mean ± sample standard deviation over seeds "
           "(a seed varies initialisation, data order, dropout and sampling; never the "
           "data). The paper's columns are its HumanEval pass@1 at 350M and 1.3B "
           "parameters and tens of billions of tokens: a scale far above a small run's, "
           "so they show the direction to expect, not a value to match. Each budget is a "
           "separate run (the learning rate decays linearly to the run's last step). "
           "'untrained bits/byte' is pretraining's step-0 measurement: equal across arms "
           "when they share one tokenizer (config.ablation.shared_tokenizer). Without a "
           "teacher the finetuned rows finetune on exercises mined from the curated code, "
           "a stand-in for CodeExercises.", ""]
  for res in all_results:
    for group in res["groups"]:
      lines += [f"## {res['size']} ({res['model']['num_layers']} layers, d_model "
                f"{res['model']['d_model']}), {group['steps']} steps "
                f"({_tokens(group['tokens'])} tokens), seeds {res['seeds']}", "",
                "| arm | scored after | bits/byte | pass@1 | untrained bits/byte | "
                "paper 350M pass@1 | paper 1.3B pass@1 |", "|---|---|---|---|---|---|---|"]
      for row in group["rows"]:
        paper = [_paper_cell(row["arm"], s) for s in PAPER_SIZES]
        if "skipped" in row:
          lines.append(f"| {row['label']} | skipped: {row['skipped']} | - | - | - | "
                       f"{paper[0]} | {paper[1]} |")
          continue
        label = row["label"] + ("" if row["in_figure"] else " (not a column of the figure)")
        lines.append(f"| {label} | {row['scored_after']} | {_fmt(row['bpb'], False)} | "
                     f"{_fmt(row['pass@1'], True)} | {_fmt(row.get('untrained_bpb'), False)} | "
                     f"{paper[0]} | {paper[1]} |")
      lines.append("")
      for stage in ("pretrain", "finetune"):
        if stage not in group["verdict"]:
          continue
        v = group["verdict"][stage]
        when = "after pretraining" if stage == "pretrain" else "after finetuning"
        diff = v["bpb_difference"]
        lines.append(f"- Filtered vs unfiltered {when}: bits per byte "
                     + (f"{diff:+.4f} (filtered minus unfiltered, means), " if diff is not None
                        else "") + f"filtered better {v['bpb']}; pass@1: {v['pass@1']}.")
      lines.append("")
      lines += _paired_md(group.get("paired") or [], group["rows"])
    if res["skipped"]:
      lines += [f"Skipped at {res['size']}: " + "; ".join(f"{a}: {w}" for a, w in
                                                         res["skipped"].items()), ""]
    lines += [f"Run time at {res['size']}: {res['seconds'] / 60:.1f} minutes.", ""]
  lines += ["Figure 2.1's per-budget bars for 350M (26B and 76B tokens) and the 1.3B "
            f"Stack+ bar are {FIGURE_ONLY}.", "", "![Figure 2.1 at this scale](ablation.png)",
            ""]
  return "\n".join(lines)


def _paired_md(pairs: list[dict], rows: list[dict]) -> list[str]:
  """The group's paired comparisons as a table (none: nothing)."""
  from recipe.reporting import trust  # pylint: disable=g-import-not-at-top
  if not pairs:
    return []
  labels = {r["arm"]: r["label"] for r in rows}
  lines = ["Paired comparisons, HumanEval pass@1 (b minus a, points) on the same problems: "
           "each arm's per-problem pass@1 averaged over the seeds both finished, problems "
           "resampled jointly, so the interval is the noise of the problem draw; the "
           "seeds' spread is the table's ± above. " + trust.paired_how(pairs), "",
           "| b | a | seeds | problems | " + " | ".join(trust.PAIRED_COLUMNS) + " |",
           "|---|---|---|---:|" + "---:|" * len(trust.PAIRED_COLUMNS)]
  for pair in pairs:
    seeds = ", ".join(str(s) for s in pair.get("seeds", [])) or "-"
    lines.append(f"| {labels[pair['b']]} | {labels[pair['a']]} | {seeds} | "
                 f"{pair.get('num_problems', '-')} | "
                 + " | ".join(trust.paired_cells(pair)) + " |")
  return lines + [""]


COLORS = {"stack_plus": "#f28e2b", "filtered": "#edc948", "code_textbook": "#8cd17d",
          "code_textbook_exercises": "#2e7d32"}


def chart(path: str, all_results: list[dict]) -> None:
  """Grouped bars per model size x budget, one bar per arm (the figure's layout):
  bits per byte above, pass@1 below; error bars are the seeds' standard deviation and
  dots the seeds; arms beyond the figure are hatched."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  groups = [(res, g) for res in all_results for g in res["groups"]]
  arms = []
  for _, g in groups:
    for row in g["rows"]:
      if "skipped" not in row and row["arm"] not in arms:
        arms.append(row["arm"])
  width = 0.8 / max(1, len(arms))
  fig, axes = plt.subplots(2, 1, figsize=(max(6, 2.2 * len(groups) + 3), 7), sharex=True)
  for ax, metric, scale, ylabel in ((axes[0], "bpb", 1, "bits per byte (lower is better)"),
                                    (axes[1], "pass@1", 100, "pass@1 (%)")):
    for j, arm in enumerate(arms):
      xs, means, sds, label, hatch = [], [], [], arm, None
      for i, (_, g) in enumerate(groups):
        row = next((r for r in g["rows"] if r["arm"] == arm and "skipped" not in r), None)
        if row is None or row[metric] is None:
          continue
        label, hatch = row["label"], (None if row["in_figure"] else "//")
        x = i + (j - (len(arms) - 1) / 2) * width
        xs.append(x)
        means.append(scale * row[metric]["mean"])
        sds.append(scale * (row[metric]["sd"] or 0))
        seed_values = [scale * v[metric] for v in row["seeds"].values() if v[metric] is not None]
        ax.plot([x] * len(seed_values), seed_values, "k.", markersize=3)
      color = COLORS.get(arm, COLORS.get(arm.replace("_finetuned", ""), "#999999"))
      ax.bar(xs, means, width, yerr=sds, capsize=3, label=label, color=color, hatch=hatch,
             edgecolor="black", linewidth=0.5)
    ax.set_ylabel(ylabel)
  axes[1].set_xticks(range(len(groups)))
  axes[1].set_xticklabels([f"{res['size']}\n{g['steps']} steps\n{_tokens(g['tokens'])} tokens"
                           for res, g in groups])
  axes[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
  axes[0].set_title(f"Figure 2.1 at this scale: {BENCHMARK}, mean ± sd over seeds")
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=110)
  plt.close(fig)
  os.replace(tmp, path)


def write_summary(workdir: str) -> list[dict]:
  """DIR/ablation.json, ablation.md and ablation.png from every size's results.json."""
  all_results = []
  for size in sorted(os.listdir(workdir)):
    path = os.path.join(workdir, size, "results.json")
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        all_results.append(json.load(f))
  atomic.write_json(all_results, os.path.join(workdir, "ablation.json"))
  atomic.write_text(os.path.join(workdir, "ablation.md"), markdown(all_results))
  chart(os.path.join(workdir, "ablation.png"), all_results)
  return all_results


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None or "ablation" not in config:
    raise cli.UsageError("--config: pass an ablation config (configs/ablation_quality.py)")
  workdir = os.path.abspath(_WORKDIR.value or config.workdir)
  try:
    skip_reasons(config)
  except ValueError as e:
    raise cli.UsageError(str(e)) from None
  results = execute(config, workdir, plan_only=_PLAN.value)
  if _PLAN.value:
    return
  write_summary(workdir)
  print(json.dumps({g["steps"]: g["verdict"] for g in results["groups"]}, indent=2))
  print(os.path.join(workdir, "ablation.md"))


if __name__ == "__main__":
  cli.run(main, prog="python -m recipe.ablation")
