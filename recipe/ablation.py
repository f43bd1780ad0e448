"""The data-quality ablation (configs/ablation_quality.py): one pipeline per arm, one chart.

    python -m recipe.ablation --config=configs/ablation_quality.py --workdir=DIR \\
        [--config.ablation.textbooks=textbooks.jsonl] [--config.FIELD=VALUE ...]

Each arm is the config with the arm's data fields set (configs/ablation_quality.py:
arm_overrides), run by the one runner in DIR/<arm> exactly as run.py runs a config:
skipped when complete, resumed when interrupted, refused when an expensive stage's
inputs changed. Then DIR/ablation.json, DIR/ablation.md and the grouped bar charts
DIR/ablation_pass1.png and DIR/ablation_bpb.png (pass@1 and bits per byte of each
benchmark, one bar per arm: the paper's Figure 2.1).
"""

from __future__ import annotations

import copy
import json
import os

from absl import flags
from ml_collections import config_flags

from phi_jax import atomic, cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The ablation config (configs/ablation_quality.py).", lock_config=False)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the arms run: WORKDIR/<arm>/ "
                               "(default: config.workdir).")
_PLAN = flags.DEFINE_bool("plan", False, "Print each arm's plan and exit.")


def arm_config(config, arm: str, workdir: str):
  """The config of one arm: `config` with the arm's data fields, in workdir/<arm>."""
  from configs import ablation_quality  # pylint: disable=g-import-not-at-top
  out = copy.deepcopy(config)
  for dotted, value in ablation_quality.arm_overrides(
      arm, tuple(config.ablation.textbooks)).items():
    node = out
    *parents, leaf = dotted.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  out.workdir = os.path.join(workdir, arm)
  return out


def _results(workdir: str, arm: str) -> dict:
  path = os.path.join(workdir, arm, "eval", "summary.json")
  with open(path, encoding="utf-8") as f:
    summary = json.load(f)
  return {name: {"pass@1": b.get("overall", {}).get("pass@1"), "bpb": b.get("bpb")}
          for name, b in summary.items()}


def write_summary(workdir: str, arms: list[str]) -> dict:
  """ablation.json, ablation.md and the two grouped bar charts from the arms' evals."""
  from recipe import report  # pylint: disable=g-import-not-at-top
  results = {arm: _results(workdir, arm) for arm in arms}
  benchmarks = sorted({b for r in results.values() for b in r})
  atomic.write_json(results, os.path.join(workdir, "ablation.json"))
  for metric, png, label in (("pass@1", "ablation_pass1.png", "pass@1"),
                             ("bpb", "ablation_bpb.png", "bits per byte (lower is better)")):
    report.grouped_bars(os.path.join(workdir, png), benchmarks,
                        {arm: [results[arm].get(b, {}).get(metric) for b in benchmarks]
                         for arm in arms},
                        f"data-quality ablation: {label}", label)
  lines = ["# Data-quality ablation (Figure 2.1 at this scale)", "",
           "Same model and token budget; the arms differ only in their training data. "
           "Each arm trains its own tokenizer on its data: compare bits per byte, which "
           "does not depend on the tokenizer.", "",
           "| arm | " + " | ".join(f"{b} pass@1 | {b} bits/byte" for b in benchmarks) + " |",
           "|---|" + "---|---|" * len(benchmarks)]
  for arm in arms:
    cells = []
    for b in benchmarks:
      r = results[arm].get(b, {})
      cells += ["-" if r.get("pass@1") is None else f"{100 * r['pass@1']:.2f}%",
                "-" if r.get("bpb") is None else f"{r['bpb']:.4f}"]
    lines.append(f"| {arm} | " + " | ".join(cells) + " |")
  lines += ["", "![pass@1](ablation_pass1.png)", "", "![bits per byte](ablation_bpb.png)", ""]
  atomic.write_text(os.path.join(workdir, "ablation.md"), "\n".join(lines))
  return results


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  if config is None or "ablation" not in config:
    raise cli.UsageError("--config: pass an ablation config (configs/ablation_quality.py)")
  from recipe import graph, runner  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(_WORKDIR.value or config.workdir)
  arms = list(config.ablation.arms)
  try:
    configs = {arm: arm_config(config, arm, workdir) for arm in arms}
  except ValueError as e:
    raise cli.UsageError(str(e)) from None
  plans = {}
  for arm, arm_cfg in configs.items():  # every arm's plan is checked before any runs
    ctx = runner.Context(arm_cfg, arm_cfg.workdir, graph.build())
    plans[arm] = (ctx, runner.make_plan(ctx, list(arm_cfg.stages), list(arm_cfg.force)))
    if _PLAN.value:
      print(f"arm {arm}:\n" + runner.format_plan(plans[arm][1], ctx.workdir))
  if _PLAN.value:
    return
  for arm, (ctx, plan) in plans.items():
    runner.check_refusals(plan, ctx.workdir)
  for arm, (ctx, plan) in plans.items():
    runner.say(f"ablation arm {arm}: {ctx.workdir}")
    runner.execute(ctx, plan)
  results = write_summary(workdir, arms)
  print(json.dumps(results, indent=2))
  print(os.path.join(workdir, "ablation.md"))


if __name__ == "__main__":
  cli.run(main, prog="python -m recipe.ablation")
