"""The report's parts that say how far the evaluation can be trusted: every pass@k with
its bootstrap interval, the evaluation checks (time limits scaled by the machine-speed
probe, unstable verdicts, the determinism certificate), paired comparisons of the
checkpoint sweep, and the memorisation attribution (recipe/stages/attribute.py); and
`paired`, the paired comparison of two models' per-problem scores that the ablation's
and Section 5's summaries give (recipe/ablation.py, recipe/section5.py).

Read from eval/summary.json, eval/checkpoints.json with each sweep entry's
pass_at_k.json, and attribute/summary.json."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from recipe.reporting.blocks import Block, fmt, read_json


def interval_text(result: Mapping[str, Any], key: str) -> str:
  interval = (result.get("intervals") or {}).get(key)
  if not interval:
    return "-"
  return f"{100 * interval[0]:.2f}-{100 * interval[1]:.2f}%"


def uncertainty(summary: Mapping[str, Any], sweep: Sequence[Mapping[str, Any]]) -> list[Block]:
  """Every pass@k of the evaluated model and of the sweep with its bootstrap interval
  over problems (eval/passk.py), the level and resamples stated."""
  rows, how = [], set()
  models = [("evaluated model", summary)] + [(e["model"], e["benchmarks"]) for e in sweep]
  for name, benchmarks in models:
    for benchmark, result in sorted(benchmarks.items()):
      if not isinstance(result, Mapping):
        continue
      boot = result.get("bootstrap") or {}
      if boot:
        how.add((boot.get("level"), boot.get("resamples"), boot.get("method")))
      for key, value in sorted(result.get("overall", {}).items(),
                               key=lambda kv: int(kv[0].split("@")[1])):
        rows.append((name, benchmark, key, f"{100 * value:.2f}%", interval_text(result, key),
                     "-" if not boot else f"{100 * boot['level']:g}%",
                     fmt(boot.get("resamples"))))
  if not rows:
    return []
  text = ("A benchmark is a sample of problems: each pass@k is given with a bootstrap "
          "interval over its problems (resampled with replacement, each problem's own "
          "unbiased pass@k estimate), at the level and with the resamples stated.")
  if len(how) == 1:
    level, resamples, method = next(iter(how))
    text += f" Here: {method}, {100 * level:g}% level, {resamples:,} resamples."
  return [("h", 3, "Uncertainty"), ("p", text),
          ("table", ("model", "benchmark", "k", "pass@k", "interval", "level", "resamples"),
           rows)]


def checks(summary: Mapping[str, Any], sweep: Sequence[Mapping[str, Any]]) -> list[Block]:
  """How far the verdicts and the decoding can be trusted, per evaluated model and
  benchmark: the machine-speed scale of the time limits, the samples run again near
  their limit and those whose verdict changed, and the determinism certificate."""
  rows = []
  models = [("evaluated model", summary)] + [(e["model"], e["benchmarks"]) for e in sweep]
  for name, benchmarks in models:
    for benchmark, result in sorted(benchmarks.items()):
      if not isinstance(result, Mapping) or "verdicts" not in result:
        continue
      machine, verdicts = result.get("machine"), result["verdicts"]
      cert = result.get("determinism")
      if cert:
        parts = [f"{label}: {cert['variants'][key]['diverged']} diverged, pass@1 "
                 f"{100 * cert['variants'][key]['pass@1_change']:+.2f}"
                 for key, label in (("batch_1", "batch 1"), ("shuffled", "shuffled"))]
        certificate = (f"{cert['problems']} problems vs batch {cert['batch_size']} "
                       f"({cert.get('device', '?')}, {cert.get('dtype', '?')}): "
                       + "; ".join(parts))
      else:
        certificate = "not run (config.eval.determinism_problems = 0)"
      rows.append((name, benchmark,
                   "-" if not machine else f"x{machine['scale']:g} (probe "
                                           f"{machine['probe_s']:g} s)",
                   f"{verdicts['unstable']} of {verdicts['rechecked']}", certificate))
  if not rows:
    return []
  return [("h", 3, "Evaluation checks"),
          ("p", "Time limits: the fixed limits times the machine-speed probe's scale "
                "(eval/speed.py; '-': the benchmark times its own references, or the probe "
                "is off). Unstable: samples that timed out, were killed or passed near their "
                "limit were run once more; those whose verdict changed (the first is "
                "scored). Determinism: a sample of problems re-decoded greedily at batch 1 "
                "and in shuffled order against the evaluation's own batch size: completions "
                "that diverge and the change of pass@1 (points) over those problems."),
          ("table", ("model", "benchmark", "time limits", "unstable of rechecked",
                     "determinism certificate"), rows)]


def _per_task(workdir: str, entry: Mapping[str, Any], benchmark: str) -> Mapping | None:
  """The pass_at_k.json (per-problem pass@k) of a sweep entry's benchmark, or None."""
  if not entry.get("dir"):
    return None
  return read_json(os.path.join(workdir, entry["dir"], benchmark, "pass_at_k.json"))


def comparisons(workdir: str, sweep: Sequence[Mapping[str, Any]]) -> list[Block]:
  """Paired bootstrap of consecutive checkpoints of the sweep (and of the first against
  the last): the change of each pass@k, its interval and whether it is beyond the noise
  of the problem draw."""
  from eval import passk  # pylint: disable=g-import-not-at-top
  pairs = list(zip(sweep, sweep[1:]))
  if len(sweep) > 2:
    pairs.append((sweep[0], sweep[-1]))
  rows, missing, how = [], [], None
  for a, b in pairs:
    for benchmark in sorted(set(a["benchmarks"]) & set(b["benchmarks"])):
      ra, rb = _per_task(workdir, a, benchmark), _per_task(workdir, b, benchmark)
      if ra is None or rb is None:
        missing.append(f"{a['model']} vs {b['model']} on {benchmark}")
        continue
      try:
        compared = passk.compare_reports(ra, rb)
      except ValueError as e:
        missing.append(f"{a['model']} vs {b['model']} on {benchmark} ({e})")
        continue
      for key, c in sorted(compared.items(), key=lambda kv: int(kv[0].split("@")[1])):
        how = c
        rows.append((benchmark, key, f"{a['model']} -> {b['model']}",
                     f"{100 * c['difference']:+.2f}",
                     f"{100 * c['interval'][0]:+.2f} to {100 * c['interval'][1]:+.2f}",
                     f"{c['p_value']:.3g}",
                     "yes" if c["beyond_noise"] else "no (within noise)"))
  if not rows and not missing:
    return []
  blocks: list[Block] = [("h", 3, "Checkpoint comparisons (paired bootstrap)")]
  if how is not None:
    blocks.append(("p", f"The change of pass@k (points) from one checkpoint to the next on "
                        f"the same {how['num_problems']} problems: a {how['method']} "
                        f"({100 * how['level']:g}% interval, {how['resamples']:,} "
                        "resamples, two-sided p-value). Beyond noise: the interval "
                        "excludes 0."))
    blocks.append(("table", ("benchmark", "k", "models", "change (points)", "interval",
                             "p", "beyond noise"), rows))
  if missing:
    blocks.append(("p", "Not compared (no per-problem results): " + "; ".join(missing) + "."))
  return blocks


def paired(a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]]
           ) -> dict[str, Any]:
  """The paired difference of two models' mean per-problem score (b minus a) on the same
  problems, with its paired bootstrap interval (eval/passk.py's paired_bootstrap).

  a, b: {replicate (a seed): {task_id: score (pass@1)}}. The replicates both have are
  averaged per problem first, so the interval is the noise of the problem draw given
  those seeds (the seeds' own spread is reported beside, as mean ± sd); the problems
  compared are those every such replicate of both scored.

  Returns paired_bootstrap's fields with `seeds` (the replicates used), or
  {"not_compared": why} when no replicate or no problem is common to both.
  """
  from eval import passk  # pylint: disable=g-import-not-at-top
  seeds = sorted(set(a) & set(b), key=lambda s: (len(str(s)), str(s)))
  if not seeds:
    return {"not_compared": "no seed with per-problem results of both"}
  scored = [set(side[s]) for side in (a, b) for s in seeds]
  tasks = sorted(set.intersection(*scored))
  if not tasks:
    return {"not_compared": "no problem scored by both"}
  mean_a = {t: sum(a[s][t] for s in seeds) / len(seeds) for t in tasks}
  mean_b = {t: sum(b[s][t] for s in seeds) / len(seeds) for t in tasks}
  return {**passk.paired_bootstrap(mean_a, mean_b), "seeds": list(seeds)}


PAIRED_COLUMNS = ("difference (points)", "interval", "p", "beyond noise")


def paired_cells(result: Mapping[str, Any]) -> tuple[str, ...]:
  """The table cells of a `paired` result (PAIRED_COLUMNS)."""
  if "not_compared" in result:
    return ("-", f"not compared: {result['not_compared']}", "-", "-")
  return (f"{100 * result['difference']:+.2f}",
          f"{100 * result['interval'][0]:+.2f} to {100 * result['interval'][1]:+.2f}",
          f"{result['p_value']:.3g}", "yes" if result["beyond_noise"] else "no (within noise)")


def paired_how(results: Sequence[Mapping[str, Any]]) -> str:
  """How the paired results were computed, as one sentence ('' when none was)."""
  done = [r for r in results if "not_compared" not in r]
  if not done:
    return ""
  how = done[0]
  return (f"A {how['method']} ({100 * how['level']:g}% interval, {how['resamples']:,} "
          "resamples, two-sided p-value); beyond noise: the interval excludes 0.")


def attribution(workdir: str) -> list[Block]:
  """The attribute step: each passing sample's nearest training record and the pass@k
  over the samples that are not near-copies (recipe/stages/attribute.py)."""
  summary = read_json(os.path.join(workdir, "attribute", "summary.json"))
  if summary is None:
    return []
  training = summary["training"]
  blocks: list[Block] = [("h", 3, "Memorisation attribution")]
  searched = ", ".join(f"{d} ({len(f)} file(s))" for d, f in training["files"].items())
  blocks.append(("p", "Each passing sample's solution against the training records the "
                      "evaluated model saw, with the decontamination's n-gram and AST "
                      "indexes and thresholds (data_pipeline/decontaminate/attribution.py). "
                      "Searched: " + (searched or "nothing") + "."))
  for why in training["unavailable"]:
    blocks.append(("p", f"**Not searched.** {why}."))
  rows, nearest = [], []
  for benchmark, entry in sorted(summary["benchmarks"].items()):
    clean = entry.get("clean_pass_at_k") or {}
    for key, value in entry["pass_at_k"]["overall"].items():
      clean_value = (clean.get("overall") or {}).get(key)
      rows.append((benchmark, key, f"{100 * value:.2f}% ({interval_text(entry['pass_at_k'], key)})",
                   "-" if "near_copies" not in entry else str(entry["near_copies"]),
                   str(entry["passing"]),
                   "-" if clean_value is None
                   else f"{100 * clean_value:.2f}% ({interval_text(clean, key)})"))
    for s in entry.get("nearest") or []:
      ngram, tree = s.get("ngram") or {}, s.get("ast") or {}
      nearest.append((benchmark, f"{s['task_id']}#{s['sample_index']}",
                      f"{tree['dataset']}: {tree['id']} ({tree['tau']:.3f})" if tree else "-",
                      f"{ngram['dataset']}: {ngram['id']} ({ngram['matches']})" if ngram else "-",
                      "yes" if s["near_copy"] else "no"))
  blocks.append(("table", ("benchmark", "k", "pass@k (interval)", "near-copies",
                           "passing samples", "clean pass@k (interval)"), rows))
  if nearest:
    blocks += [("p", "The passing samples nearest to a training record (AST match rate tau; "
                     "shared n-grams):"),
               ("table", ("benchmark", "sample", "nearest by AST (tau)",
                          "nearest by n-grams (shared)", "near-copy"), nearest)]
  return blocks
