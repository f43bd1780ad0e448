"""The run report: what every stage of a work directory did, as Markdown and HTML.

    WORKDIR/report/report.md     the report (plots as PNG files beside it)
    WORKDIR/report/report.html   the same, self-contained (plots embedded as base64)
    WORKDIR/report/*.png         the curves, the sweep, the funnels and histograms

Everything is read from what the stages wrote: their markers (summaries, timings),
<stage>/metrics.jsonl, eval/, attribute/, data/, synthesize/ and decontaminate/; recipe/paper.py
gives the paper's numbers printed beside the run's. This module assembles the sections
(SECTIONS, in order) and writes the files; recipe/reporting/ has the blocks and their
rendering, the plots, the evaluation's intervals and checks (trust.py), and the
sections of the data, synthetic data, decontamination and samples. Nothing is recomputed, so the report can be rebuilt at any time (`python run.py
--report WORKDIR`), also of a run that is still going or died; apart from the timings
section the same files give the same report.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from phi_jax import atomic
from phi_jax.train.metrics import read_metrics
from recipe.reporting import data, decontamination, plots, samples, synthetic, trust
from recipe.reporting.blocks import Block, fmt, html_page, markdown, read_json, rel, seconds

REPORT_DIR = "report"
CONFIG_FILE = "config.json"
TRAINING_NODES = ("pretrain", "finetune")
SELECTION_WARNING = (
    "Choosing the best checkpoint by its HumanEval (or MBPP) score is selection on the "
    "test set: the chosen score is optimistically biased. The paper reports the best of "
    "its finetuning checkpoints; compare checkpoints on held-out data (the bits per byte "
    "here are also computed on the benchmarks) or report the last checkpoint as well.")



# --------------------------------------------------------------------------- sections
def _timings(workdir: str, nodes: Sequence[Any]) -> list[Block]:
  rows = []
  for node in nodes:
    marker = read_json(os.path.join(workdir, node.marker_path))
    if marker is None:
      started = os.path.exists(os.path.join(workdir, node.started_path))
      rows.append((node.name, "started, not complete" if started else "not run", "", ""))
    else:
      rows.append((node.name, "complete", seconds(marker.get("seconds")),
                   str(marker.get("finished_at", ""))))
  return [("h", 2, "Timings"), ("table", ("node", "status", "time", "finished"), rows)]


def _run_scores(workdir: str) -> tuple[dict, dict]:
  """(pass@1 per benchmark of the evaluated model, of the last pretraining checkpoint in
  the checkpoint sweep), in %."""
  summary = read_json(os.path.join(workdir, "eval", "summary.json")) or {}
  final = {name: 100 * b["overall"]["pass@1"] for name, b in summary.items()
           if isinstance(b, Mapping) and b.get("overall", {}).get("pass@1") is not None}
  base = {}
  for entry in read_json(os.path.join(workdir, "eval", "checkpoints.json")) or []:
    if str(entry.get("model", "")).startswith("pretrain"):
      base = {name: 100 * b["overall"]["pass@1"] for name, b in entry["benchmarks"].items()
              if b.get("overall", {}).get("pass@1") is not None}
  return final, base


def _paper_reference(workdir: str) -> list[Block]:
  """The paper's pass@1 of its models of the run's size beside the run's own, labelled
  as the paper's, with the difference in scale stated."""
  from recipe import paper  # pylint: disable=g-import-not-at-top
  init = read_json(os.path.join(workdir, "init", "COMPLETE.json")) or {}
  params = (init.get("summary") or {}).get("params")
  final, base = _run_scores(workdir)
  rows = []
  for m in paper.models_for(params):
    ours = base if m["stage"] == "pretrain" else final
    rows.append((f"{m['model']} ({m['size']})", m["source"],
                 "-" if m["humaneval"] is None else f"{m['humaneval']:.1f}%",
                 "-" if m["mbpp"] is None else f"{m['mbpp']:.1f}%",
                 "-" if "humaneval" not in ours else f"{ours['humaneval']:.1f}%",
                 "-" if "mbpp" not in ours else f"{ours['mbpp']:.1f}%"))
  return [("h", 2, "Paper reference"),
          ("p", f"The paper's numbers ({paper.CITATION}), not this run's, beside this run's "
                "model at the same stage (after finetuning; phi-1-base: the last pretraining "
                "checkpoint of the checkpoint sweep). " + paper.scale_note(params)),
          ("table", ("paper model", "paper source", "paper HumanEval pass@1",
                     "paper MBPP pass@1", "this run HumanEval pass@1", "this run MBPP pass@1"),
           rows)]


def _training(workdir: str, out_dir: str) -> list[Block]:
  blocks: list[Block] = [("h", 2, "Training")]
  any_metrics = False
  for node in TRAINING_NODES:
    rows = read_metrics(os.path.join(workdir, node))
    if not rows:
      continue
    any_metrics = True
    train = [r for r in rows if r.get("kind", "train") == "train" and "loss" in r]
    evals = [r for r in rows if r.get("kind") == "eval"]
    blocks.append(("h", 3, node))
    # the measurements as the run's current settings take them (recipe/stages/curves.py)
    measured = read_json(os.path.join(workdir, "curves", f"{node}.json"))
    if measured is not None:
      evals = measured["points"]
      blocks += [("p", f"Bits per byte {measured['bpb_source']}.")]
      blocks += [("p", note) for note in measured["notes"]]
    series = [("train loss", [r["step"] for r in train], [r["loss"] for r in train])]
    held = [r for r in evals if "loss" in r]
    series.append(("held-out loss", [r["step"] for r in held], [r["loss"] for r in held]))
    if plots.lines(os.path.join(out_dir, f"{node}_loss.png"), series, f"{node}: loss", "nats/token"):
      blocks.append(("img", f"{node}_loss.png", f"{node} loss"))
    bpb_keys = sorted({k for r in evals for k in r if k.startswith("bpb_")})
    bpb_series = [(k[len("bpb_"):], [r["step"] for r in evals if k in r],
                   [r[k] for r in evals if k in r]) for k in bpb_keys]
    if plots.lines(os.path.join(out_dir, f"{node}_bpb.png"), bpb_series,
             f"{node}: bits per byte of the benchmarks' canonical solutions", "bits/byte"):
      blocks.append(("img", f"{node}_bpb.png", f"{node} bits per byte"))
    if evals:
      keys = ["loss"] * any("loss" in r for r in evals) + bpb_keys
      blocks += [("p", "Evaluations (held-out loss in nats per token; bits per byte of the "
                       "benchmark solutions given their prompts, never trained on):"),
                 ("table", ("step",) + tuple(keys),
                  [(str(r["step"]),) + tuple(fmt(r.get(k)) for k in keys) for r in evals])]
    timed = [r for r in train if r.get("tokens_per_s") is not None]
    if timed:
      def median(key):
        values = sorted(r[key] for r in timed if r.get(key) is not None)
        return values[len(values) // 2] if values else None
      blocks += [("p", "Throughput (median over the logged windows; the first window of each "
                       "process excludes compilation):"),
                 ("table", ("tokens/s", "step time (s)", "MFU"),
                  [(fmt(median("tokens_per_s")), fmt(median("step_time_s")),
                    "n/a (no peak FLOP/s known for this device)" if median("mfu") is None
                    else f"{100 * median('mfu'):.1f}%")])]
  if not any_metrics:
    blocks.append(("p", "No metrics.jsonl: no training stage has run."))
  return blocks


def _pass_table(benchmarks: Mapping[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
  ks = sorted({k for b in benchmarks.values() for k in b.get("overall", {})},
              key=lambda k: int(k.split("@")[1]))
  rows = [(name, str(b.get("num_problems", "")))
          + tuple("-" if k not in b.get("overall", {}) else f"{100 * b['overall'][k]:.2f}%"
                  for k in ks) + (fmt(b.get("bpb")) if "bpb" in b else "-",)
          for name, b in sorted(benchmarks.items())]
  return ("benchmark", "problems") + tuple(ks) + ("bits/byte",), rows


def _evaluation(workdir: str, out_dir: str) -> list[Block]:
  summary = read_json(os.path.join(workdir, "eval", "summary.json"))
  if summary is None:
    return [("h", 2, "Evaluation"), ("p", "No eval/summary.json: the eval stage has not run.")]
  header, rows = _pass_table(summary)
  blocks: list[Block] = [("h", 2, "Evaluation"), ("table", header, rows)]
  for name, result in sorted(summary.items()):
    if isinstance(result, Mapping) and (result.get("breakdown") or {}).get("kind") == \
        "length_depth":
      blocks += _length_depth(name, result["breakdown"], out_dir)
  sweep = read_json(os.path.join(workdir, "eval", "checkpoints.json")) or []
  return (blocks + trust.uncertainty(summary, sweep) + trust.checks(summary, sweep)
          + trust.attribution(workdir))


def _length_depth(benchmark: str, breakdown: Mapping[str, Any], out_dir: str) -> list[Block]:
  """The pass rate by file length (rows) and depth of the function to call (columns),
  as a table and a heat map."""
  lengths, depths = breakdown["lengths"], breakdown["depths"]
  rate = {(c["length"], c["depth"]): c for c in breakdown["cells"]}

  def cell(length, depth):
    c = rate.get((length, depth))
    return "-" if c is None else f"{100 * c['pass_rate']:.0f}% ({c['passed']}/{c['samples']})"

  table = [(fmt(length),) + tuple(cell(length, depth) for depth in depths)
           for length in lengths]
  file_name = f"{benchmark}_heatmap.png"
  plots.heatmap(os.path.join(out_dir, file_name),
          [[rate[length, depth]["pass_rate"] if (length, depth) in rate else math.nan
            for depth in depths] for length in lengths],
          [fmt(length) for length in lengths], [f"{depth:g}" for depth in depths],
          f"{benchmark}: pass rate by length and depth",
          f"file length ({breakdown.get('unit', 'characters')})",
          "depth of the function to call (0 = start of the file)")
  return [("h", 3, f"{benchmark}: pass rate by length and depth"),
          ("p", f"Rows: the file's length in {breakdown.get('unit', 'characters')}; columns: "
                "where the function the file's last line must call is defined (0 = the "
                "start of the file, 1 = just before the call); each cell: passed/samples."),
          ("table", ("length / depth",) + tuple(f"{depth:g}" for depth in depths), table),
          ("img", file_name, f"{benchmark} pass rate by length and depth")]


def _sweep(workdir: str, out_dir: str) -> list[Block]:
  sweep = read_json(os.path.join(workdir, "eval", "checkpoints.json"))
  blocks: list[Block] = [("h", 2, "Checkpoint sweep")]
  if not sweep:
    return blocks + [("p", "No eval/checkpoints.json: config.eval.checkpoints lists no models.")]
  blocks.append(("p", "**Warning.** " + SELECTION_WARNING))
  benchmarks = sorted({b for entry in sweep for b in entry["benchmarks"]})
  cols = []
  for b in benchmarks:
    cols += [f"{b} pass@1", f"{b} bits/byte"]
  table = []
  for entry in sweep:
    row = [entry["model"]]
    for b in benchmarks:
      result = entry["benchmarks"].get(b, {})
      p1 = result.get("overall", {}).get("pass@1")
      row += ["-" if p1 is None else f"{100 * p1:.2f}%", fmt(result.get("bpb", "-"))]
    table.append(tuple(row))
  blocks.append(("table", ("model",) + tuple(cols), table))
  steps = [int(e["model"].rsplit(":", 1)[1]) for e in sweep
           if e["model"].rsplit(":", 1)[-1].isdigit()]
  if len(steps) == len(sweep):
    series = [(f"{b} bits/byte", steps, [e["benchmarks"].get(b, {}).get("bpb", math.nan)
                                         for e in sweep]) for b in benchmarks]
    if plots.lines(os.path.join(out_dir, "sweep_bpb.png"), series,
                   "bits per byte per kept checkpoint", "bits/byte"):
      blocks.append(("img", "sweep_bpb.png", "bits per byte per checkpoint"))
  return blocks + trust.comparisons(workdir, sweep)


def config_rows(config: Mapping[str, Any], workdir: str,
                prefix: str = "") -> list[tuple[str, str]]:
  """(dotted field, value) for every leaf of the config; a list shows its items, a
  mapping inside a list its key=value pairs, a path inside the work directory is made
  relative to it."""
  rows = []
  for key in sorted(config):
    value, name = config[key], f"{prefix}{key}"
    if isinstance(value, Mapping):
      rows += config_rows(value, workdir, name + ".")
    elif isinstance(value, str) and os.path.isabs(value):
      rows.append((name, rel(value, workdir)))
    else:
      rows.append((name, _config_value(value)))
  return rows


def _config_value(value: Any) -> str:
  if isinstance(value, (list, tuple)):
    return ", ".join(_config_value(v) for v in value) if value else "(none)"
  if isinstance(value, Mapping):
    return " ".join(f"{k}={_config_value(v)}" for k, v in sorted(value.items()))
  if value == "":
    return "''"
  return fmt(value)


def _config(workdir: str, config: Mapping[str, Any] | None) -> list[Block]:
  if config is None:
    return [("h", 2, "Config"), ("p", "No config recorded (report/config.json).")]
  rows = config_rows(config, workdir)
  return [("h", 2, "Config"),
          ("p", f"The run's {len(rows)} settings, as report/{CONFIG_FILE} records them."),
          ("details", f"all {len(rows)} settings", [("table", ("field", "value"), rows)])]


SECTIONS = ("Evaluation", "Checkpoint sweep", "Paper reference", "Training", "Data",
            "Synthetic data", "Decontamination", "Samples", "Timings", "Config")


def report_blocks(workdir: str, out_dir: str, nodes: Sequence[Any],
                  config: Mapping[str, Any] | None) -> list[Block]:
  """The report's blocks, every section of SECTIONS in that order (a section whose
  stage has not run says so); writes the plots into out_dir."""
  title = f"phi_jax run report: {os.path.basename(workdir)}"
  blocks: list[Block] = [("h", 1, title),
                         ("p", f"Work directory `{os.path.basename(workdir)}`; the paths below "
                               "are relative to it.")]
  blocks += _evaluation(workdir, out_dir)
  blocks += _sweep(workdir, out_dir)
  blocks += _paper_reference(workdir)
  blocks += _training(workdir, out_dir)
  blocks += data.section(workdir, out_dir, config)
  blocks += synthetic.section(workdir, out_dir)
  blocks += decontamination.section(workdir, config)
  blocks += samples.section(workdir)
  blocks += _timings(workdir, nodes)
  blocks += _config(workdir, config)
  return blocks


def build_report(workdir: str, nodes: Sequence[Any],
                 config: Mapping[str, Any] | None = None) -> dict[str, str]:
  """Writes WORKDIR/report/report.md, report.html and the plots; returns their paths.

  nodes: the graph's nodes (recipe.runner.Node: name, marker_path, started_path), for
    the timings. config: the run config as a dict (None: WORKDIR/report/config.json
    if a report stage wrote one).
  """
  workdir = os.path.abspath(workdir)
  out_dir = os.path.join(workdir, REPORT_DIR)
  os.makedirs(out_dir, exist_ok=True)
  config_path = os.path.join(out_dir, CONFIG_FILE)
  if config is None:
    config = read_json(config_path)
  else:
    atomic.write_json(dict(config), config_path)
  title = f"phi_jax run report: {os.path.basename(workdir)}"
  blocks = report_blocks(workdir, out_dir, nodes, config)
  md_path, html_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.html")
  atomic.write_text(md_path, markdown(blocks) + "\n")
  atomic.write_text(html_path, html_page(blocks, out_dir, title))
  return {"markdown": md_path, "html": html_path}
