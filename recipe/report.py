"""The run report: what every stage of a work directory did, as Markdown and HTML.

    WORKDIR/report/report.md     the report (plots as PNG files beside it)
    WORKDIR/report/report.html   the same, self-contained (plots embedded as base64)
    WORKDIR/report/*.png         loss and bits-per-byte curves, the checkpoint sweep

Everything is read from what the stages wrote: their markers (summaries, timings),
data/stats.json, <stage>/metrics.jsonl, eval/summary.json and eval/checkpoints.json,
synthesize/{summary,diversity}.json and decontaminate/ (summary.json, each corpus's
report.json and matches.jsonl) when present; recipe/paper.py gives the paper's numbers
printed beside the run's ("Paper reference", Table 3). Nothing
is recomputed, so the report can be rebuilt at any time (`python run.py --report
WORKDIR`), also of a run that is still going or died; apart from the timings section
the same files give the same report.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from phi_jax import atomic
from phi_jax.train.metrics import read_metrics

REPORT_DIR = "report"
CONFIG_FILE = "config.json"
TRAINING_NODES = ("pretrain", "finetune")
SELECTION_WARNING = (
    "Choosing the best checkpoint by its HumanEval (or MBPP) score is selection on the "
    "test set: the chosen score is optimistically biased. The paper reports the best of "
    "its finetuning checkpoints; compare checkpoints on held-out data (the bits per byte "
    "here are also computed on the benchmarks) or report the last checkpoint as well.")

Block = tuple  # ("h", level, text) | ("p", text) | ("table", header, rows) | ("img", file, alt) | ("pre", text)


# --------------------------------------------------------------------------- reading
def _read_json(path: str) -> Any:
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _fmt(value: Any) -> str:
  if value is None:
    return "-"
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    if not math.isfinite(value):
      return str(value)
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
  if isinstance(value, int):
    return f"{value:,}" if abs(value) >= 10_000 else str(value)
  return str(value)


def _flatten(value: Any, prefix: str = "", max_list: int = 8) -> list[tuple[str, str]]:
  """Scalar leaves of a JSON value as (dotted key, text); long lists are summarised."""
  if isinstance(value, Mapping):
    out = []
    for key in sorted(value):
      out += _flatten(value[key], f"{prefix}.{key}" if prefix else str(key), max_list)
    return out
  if isinstance(value, (list, tuple)):
    if all(not isinstance(v, (Mapping, list, tuple)) for v in value) and len(value) <= max_list:
      return [(prefix, ", ".join(_fmt(v) for v in value))]
    return [(prefix, f"[{len(value)} items]")]
  return [(prefix, _fmt(value))]


def _kv_table(value: Any) -> Block:
  return ("table", ("field", "value"), _flatten(value))


# --------------------------------------------------------------------------- plots
def _plot(path: str, series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
          title: str, ylabel: str) -> bool:
  """Line plot of (label, steps, values) series to a PNG; False when nothing to draw."""
  series = [(label, x, y) for label, x, y in series if len(x)]
  if not series:
    return False
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
  for label, x, y in series:
    ax.plot(x, y, label=label, marker="o" if len(x) < 30 else None, markersize=3)
  ax.set_title(title)
  ax.set_xlabel("step")
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  _save_png(fig, path)
  plt.close(fig)
  return True


def _save_png(fig, path: str) -> None:
  """The figure as PNG bytes without metadata (the same data gives the same bytes)."""
  import io  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", metadata={"Software": None})
  atomic.write_bytes(path, buffer.getvalue())


def grouped_bars(path: str, groups: Sequence[str], bars: Mapping[str, Sequence[float | None]],
                 title: str, ylabel: str) -> None:
  """A grouped bar chart: one group per entry of `groups`, one bar per key of `bars`."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
  width = 0.8 / max(len(bars), 1)
  for i, (label, values) in enumerate(bars.items()):
    xs = [g + (i - (len(bars) - 1) / 2) * width for g in range(len(groups))]
    ax.bar(xs, [0.0 if v is None else v for v in values], width, label=label)
  ax.set_xticks(range(len(groups)), list(groups))
  ax.set_title(title)
  ax.set_ylabel(ylabel)
  ax.grid(axis="y", alpha=0.3)
  ax.legend()
  fig.tight_layout()
  _save_png(fig, path)
  plt.close(fig)


# --------------------------------------------------------------------------- sections
def _timings(workdir: str, nodes: Sequence[Any]) -> list[Block]:
  rows = []
  for node in nodes:
    marker = _read_json(os.path.join(workdir, node.marker_path))
    if marker is None:
      started = os.path.exists(os.path.join(workdir, node.started_path))
      rows.append((node.name, "started, not complete" if started else "not run", "", ""))
    else:
      rows.append((node.name, "complete", _fmt(marker.get("seconds")),
                   str(marker.get("finished_at", ""))))
  return [("h", 2, "Timings"), ("table", ("node", "status", "seconds", "finished"), rows)]


def _data(workdir: str) -> list[Block]:
  stats = _read_json(os.path.join(workdir, "data", "stats.json"))
  if stats is None:
    return [("h", 2, "Data"), ("p", "No data/stats.json: the data stage has not completed.")]
  blocks: list[Block] = [("h", 2, "Data")]
  steps = stats.get("steps", {})
  datasets = steps.get("datasets", {}).get("datasets", {})
  if datasets:
    rows = [(name, _fmt(d.get("tokens", {}).get("train")),
             _fmt(d.get("tokens", {}).get("validation"))) for name, d in sorted(datasets.items())]
    blocks += [("h", 3, "Tokens per dataset"),
               ("table", ("dataset", "train tokens", "validation tokens"), rows)]
  for step, summary in steps.items():
    if step == "datasets":
      continue
    blocks += [("h", 3, f"Step `{step}`"), _kv_table(summary)]
  return blocks


def _optional_json_section(workdir: str, title: str, files: Sequence[str]) -> list[Block]:
  found = [(name, _read_json(os.path.join(workdir, name))) for name in files]
  found = [(name, value) for name, value in found if value is not None]
  if not found:
    return []
  blocks: list[Block] = [("h", 2, title)]
  for name, value in found:
    blocks += [("h", 3, f"`{name}`"), _kv_table(value)]
  return blocks


def _synthesize(workdir: str) -> list[Block]:
  return _optional_json_section(workdir, "Synthetic data",
                                ("synthesize/summary.json", "synthesize/diversity.json"))


def _eval_results(workdir: str, benchmark: str) -> dict[str, list[bool]]:
  path = os.path.join(workdir, "eval", benchmark, "results.jsonl")
  passed: dict[str, list[bool]] = {}
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        row = json.loads(line)
        passed.setdefault(row["task_id"], []).append(bool(row["passed"]))
  return passed


def _similar_union(reports: Mapping[str, Any]) -> dict[str, dict[float, set[str]]]:
  """benchmark -> tau -> the problems similar to a record of any checked corpus."""
  out: dict[str, dict[float, set[str]]] = {}
  for report in reports.values():
    for benchmark, by_tau in report.get("similar", {}).items():
      for tau, ids in by_tau.items():
        out.setdefault(benchmark, {}).setdefault(float(tau), set()).update(ids)
  return out


def _matched_records(workdir: str, dataset: str, limit: int) -> list[dict]:
  """The first `limit` records of a corpus that a check flagged (matches.jsonl)."""
  path = os.path.join(workdir, "decontaminate", dataset, "matches.jsonl")
  rows = []
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      for line in f:
        row = json.loads(line)
        if row.get("flags"):
          rows.append(row)
          if len(rows) >= limit:
            break
  return rows


MATCHES_LISTED = 10


def _decontaminate(workdir: str, config: Mapping[str, Any] | None) -> list[Block]:
  """The decontaminate stage's checks per corpus: what each flagged, whether the
  training data was pruned, the flagged records, and Table 3's split of the benchmark
  with this run's pass rates and the paper's beside them."""
  summary = _read_json(os.path.join(workdir, "decontaminate", "summary.json"))
  if summary is None:
    return []
  from data_pipeline.decontaminate import report as decont_report  # pylint: disable=g-import-not-at-top
  from data_pipeline.decontaminate.config import DecontConfig  # pylint: disable=g-import-not-at-top
  from recipe import paper  # pylint: disable=g-import-not-at-top
  section = dict((config or {}).get("decontaminate") or {})
  settings = DecontConfig.from_mapping(
      {k: v for k, v in section.items() if k in DecontConfig.__dataclass_fields__})
  corpora = summary.get("corpora", {})
  pruned = set(settings.pruned(list(corpora)))
  blocks: list[Block] = [("h", 2, "Decontamination")]
  if pruned:
    blocks.append(("p", "The training data was pruned: the tokenizer and datasets read the "
                        f"kept records of {', '.join(sorted(pruned))} "
                        "(config.decontaminate.prune)."))
  else:
    blocks.append(("p", "An analysis, as the paper's phi-1: nothing was removed from the "
                        "training data (config.decontaminate.prune is off). \"flagged\" "
                        "counts the records a pruning would remove."))
  rows = []
  for dataset, result in sorted(corpora.items()):
    rows.append((dataset, _fmt(result.get("records")), _fmt(result.get("removed")),
                 str(result.get("removed") if dataset in pruned else 0),
                 ", ".join(f"{k} {v}" for k, v in sorted(result.get("flagged_by", {}).items()))
                 or "-"))
  blocks.append(("table", ("corpus", "records", "flagged", "removed from training",
                           "flagged by check"), rows))
  reports = {dataset: _read_json(os.path.join(workdir, "decontaminate", dataset, "report.json"))
             or {} for dataset in corpora}
  for dataset in sorted(corpora):
    matches = _matched_records(workdir, dataset, MATCHES_LISTED)
    if not matches:
      continue
    blocks += [("h", 3, f"Similar records: {dataset}"),
               ("p", f"The first {len(matches)} flagged records "
                     f"(decontaminate/{dataset}/matches.jsonl lists them all)."),
               ("table", ("record", "where", "flags", "nearest problem (AST tau)",
                          "removed from training"),
                [(str(m["id"]), str(m.get("where", "")), ", ".join(m["flags"]),
                  ", ".join(f"{t} ({tau:.2f})" for t, tau in sorted(
                      (m.get("ast_similar") or {}).items(), key=lambda kv: -kv[1])[:2]) or "-",
                  "yes" if dataset in pruned and m.get("removed") else "no")
                 for m in matches])]
  for benchmark, similar in sorted(_similar_union(reports).items()):
    passed = _eval_results(workdir, benchmark)
    task_ids = sorted(passed) if passed else []
    if not task_ids:
      blocks += [("h", 3, f"Table 3 layout: {benchmark}"),
                 ("p", "Similar problems per tau: " + ", ".join(
                     f"{tau:g}: {len(ids)}" for tau, ids in sorted(similar.items(), reverse=True))
                  + " (no evaluation results for the pass rates).")]
      continue
    rows3 = decont_report.table3(similar, task_ids, {"this run": passed})
    table = []
    for r in rows3:
      theirs = {name: (count, rates) for name, count, rates in paper.table3_rows(r["tau"])}
      count, rates = theirs.get(r["set"], (None, ()))
      rate = r["pass_rate"]["this run"]
      table.append((f"{r['tau']:g}" if r["set"] == "similar" else "", r["set"],
                    str(r["problems"]), "-" if rate is None else f"{100 * rate:.1f}%",
                    _fmt(count),
                    *([f"{v:.1f}%" for v in rates[:2]] if rates else ["-", "-"])))
    blocks += [("h", 3, f"Table 3 layout: {benchmark}, similar vs non-similar problems"),
               ("p", f"Similar: some record of the checked corpora within AST match rate tau "
                     f"of the problem; pass rates of this run's evaluated model over the "
                     f"{len(task_ids)} evaluated problems. The paper's columns ({paper.CITATION}, "
                     "Table 3) are for CodeExercises against all 164 HumanEval problems "
                     "at 1.3B parameters."),
               ("table", ("tau", "", "problems", "pass rate (this run)", "paper: problems",
                          "paper: phi-1", "paper: phi-1 retrained on pruned data"), table)]
  return blocks


def _run_scores(workdir: str) -> tuple[dict, dict]:
  """(pass@1 per benchmark of the evaluated model, of the last pretraining checkpoint in
  the checkpoint sweep), in %."""
  summary = _read_json(os.path.join(workdir, "eval", "summary.json")) or {}
  final = {name: 100 * b["overall"]["pass@1"] for name, b in summary.items()
           if isinstance(b, Mapping) and b.get("overall", {}).get("pass@1") is not None}
  base = {}
  for entry in _read_json(os.path.join(workdir, "eval", "checkpoints.json")) or []:
    if str(entry.get("model", "")).startswith("pretrain"):
      base = {name: 100 * b["overall"]["pass@1"] for name, b in entry["benchmarks"].items()
              if b.get("overall", {}).get("pass@1") is not None}
  return final, base


def _paper_reference(workdir: str) -> list[Block]:
  """The paper's pass@1 of its models of the run's size beside the run's own, labelled
  as the paper's, with the difference in scale stated."""
  from recipe import paper  # pylint: disable=g-import-not-at-top
  init = _read_json(os.path.join(workdir, "init", "COMPLETE.json")) or {}
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
    measured = _read_json(os.path.join(workdir, "curves", f"{node}.json"))
    if measured is not None:
      evals = measured["points"]
      blocks += [("p", f"Bits per byte {measured['bpb_source']}.")]
      blocks += [("p", note) for note in measured["notes"]]
    series = [("train loss", [r["step"] for r in train], [r["loss"] for r in train])]
    held = [r for r in evals if "loss" in r]
    series.append(("held-out loss", [r["step"] for r in held], [r["loss"] for r in held]))
    if _plot(os.path.join(out_dir, f"{node}_loss.png"), series, f"{node}: loss", "nats/token"):
      blocks.append(("img", f"{node}_loss.png", f"{node} loss"))
    bpb_keys = sorted({k for r in evals for k in r if k.startswith("bpb_")})
    bpb_series = [(k[len("bpb_"):], [r["step"] for r in evals if k in r],
                   [r[k] for r in evals if k in r]) for k in bpb_keys]
    if _plot(os.path.join(out_dir, f"{node}_bpb.png"), bpb_series,
             f"{node}: bits per byte of the benchmarks' canonical solutions", "bits/byte"):
      blocks.append(("img", f"{node}_bpb.png", f"{node} bits per byte"))
    if evals:
      keys = ["loss"] * any("loss" in r for r in evals) + bpb_keys
      blocks += [("p", "Evaluations (held-out loss in nats per token; bits per byte of the "
                       "benchmark solutions given their prompts, never trained on):"),
                 ("table", ("step",) + tuple(keys),
                  [(str(r["step"]),) + tuple(_fmt(r.get(k)) for k in keys) for r in evals])]
    timed = [r for r in train if r.get("tokens_per_s") is not None]
    if timed:
      def median(key):
        values = sorted(r[key] for r in timed if r.get(key) is not None)
        return values[len(values) // 2] if values else None
      blocks += [("p", "Throughput (median over the logged windows; the first window of each "
                       "process excludes compilation):"),
                 ("table", ("tokens/s", "step time (s)", "MFU"),
                  [(_fmt(median("tokens_per_s")), _fmt(median("step_time_s")),
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
                  for k in ks) + (_fmt(b.get("bpb")) if "bpb" in b else "-",)
          for name, b in sorted(benchmarks.items())]
  return ("benchmark", "problems") + tuple(ks) + ("bits/byte",), rows


def _evaluation(workdir: str, out_dir: str) -> list[Block]:
  summary = _read_json(os.path.join(workdir, "eval", "summary.json"))
  if summary is None:
    return [("h", 2, "Evaluation"), ("p", "No eval/summary.json: the eval stage has not run.")]
  header, rows = _pass_table(summary)
  blocks: list[Block] = [("h", 2, "Evaluation"), ("table", header, rows)]
  for name, result in sorted(summary.items()):
    if isinstance(result, Mapping) and (result.get("breakdown") or {}).get("kind") == \
        "length_depth":
      blocks += _length_depth(name, result["breakdown"], out_dir)
  sweep = _read_json(os.path.join(workdir, "eval", "checkpoints.json"))
  if sweep:
    blocks += [("h", 3, "Checkpoint sweep"), ("p", "**Warning.** " + SELECTION_WARNING)]
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
        row += ["-" if p1 is None else f"{100 * p1:.2f}%", _fmt(result.get("bpb", "-"))]
      table.append(tuple(row))
    blocks.append(("table", ("model",) + tuple(cols), table))
    steps = [int(e["model"].rsplit(":", 1)[1]) for e in sweep
             if e["model"].rsplit(":", 1)[-1].isdigit()]
    if len(steps) == len(sweep):
      series = [(f"{b} bits/byte", steps, [e["benchmarks"].get(b, {}).get("bpb", math.nan)
                                           for e in sweep]) for b in benchmarks]
      if _plot(os.path.join(out_dir, "sweep_bpb.png"), series,
               "bits per byte per kept checkpoint", "bits/byte"):
        blocks.append(("img", "sweep_bpb.png", "bits per byte per checkpoint"))
  return blocks


def _length_depth(benchmark: str, breakdown: Mapping[str, Any], out_dir: str) -> list[Block]:
  """The pass rate by file length (rows) and depth of the function to call (columns),
  as a table and a heat map."""
  lengths, depths = breakdown["lengths"], breakdown["depths"]
  rate = {(c["length"], c["depth"]): c for c in breakdown["cells"]}

  def cell(length, depth):
    c = rate.get((length, depth))
    return "-" if c is None else f"{100 * c['pass_rate']:.0f}% ({c['passed']}/{c['samples']})"

  table = [(_fmt(length),) + tuple(cell(length, depth) for depth in depths)
           for length in lengths]
  file_name = f"{benchmark}_heatmap.png"
  heatmap(os.path.join(out_dir, file_name),
          [[rate[length, depth]["pass_rate"] if (length, depth) in rate else math.nan
            for depth in depths] for length in lengths],
          [_fmt(length) for length in lengths], [f"{depth:g}" for depth in depths],
          f"{benchmark}: pass rate by length and depth",
          f"file length ({breakdown.get('unit', 'characters')})",
          "depth of the function to call (0 = start of the file)")
  return [("h", 3, f"{benchmark}: pass rate by length and depth"),
          ("p", f"Rows: the file's length in {breakdown.get('unit', 'characters')}; columns: "
                "where the function the file's last line must call is defined (0 = the "
                "start of the file, 1 = just before the call); each cell: passed/samples."),
          ("table", ("length / depth",) + tuple(f"{depth:g}" for depth in depths), table),
          ("img", file_name, f"{benchmark} pass rate by length and depth")]


def heatmap(path: str, values: Sequence[Sequence[float]], rows: Sequence[str],
            columns: Sequence[str], title: str, ylabel: str, xlabel: str) -> None:
  """A heat map of values in [0, 1] (rows x columns), each cell labelled in %."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(1.2 * len(columns) + 2.5, 0.6 * len(rows) + 1.8), dpi=100)
  image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
  ax.set_xticks(range(len(columns)), list(columns))
  ax.set_yticks(range(len(rows)), list(rows))
  for i, row in enumerate(values):
    for j, value in enumerate(row):
      if math.isfinite(value):
        ax.text(j, i, f"{100 * value:.0f}%", ha="center", va="center",
                color="black" if value > 0.5 else "white")
  ax.set_title(title)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  fig.colorbar(image, ax=ax, label="pass rate")
  fig.tight_layout()
  _save_png(fig, path)
  plt.close(fig)


def _config(config: Mapping[str, Any] | None) -> list[Block]:
  if config is None:
    return []
  return [("h", 2, "Config"), ("pre", json.dumps(config, indent=2, sort_keys=True, default=str))]


# --------------------------------------------------------------------------- rendering
def _md(blocks: Iterable[Block]) -> str:
  out = []
  for block in blocks:
    kind = block[0]
    if kind == "h":
      out += ["#" * block[1] + " " + block[2], ""]
    elif kind == "p":
      out += [block[1], ""]
    elif kind == "table":
      header, rows = block[1], block[2]
      out.append("| " + " | ".join(header) + " |")
      out.append("|" + "---|" * len(header))
      out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
      out.append("")
    elif kind == "img":
      out += [f"![{block[2]}]({block[1]})", ""]
    elif kind == "pre":
      out += ["```", block[1], "```", ""]
  return "\n".join(out)


def _inline_md(text: str) -> str:
  """`code` and **bold** of a Markdown line as HTML (the only inline marks used)."""
  import re  # pylint: disable=g-import-not-at-top
  text = html.escape(text)
  text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
  return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _html(blocks: Iterable[Block], out_dir: str, title: str) -> str:
  out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
         f"<title>{html.escape(title)}</title>",
         "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
         "padding:2px 8px;text-align:left}pre{background:#f6f6f6;padding:1em;overflow:auto}"
         "</style></head><body>"]
  for block in blocks:
    kind = block[0]
    if kind == "h":
      out.append(f"<h{block[1]}>{_inline_md(block[2])}</h{block[1]}>")
    elif kind == "p":
      out.append(f"<p>{_inline_md(block[1])}</p>")
    elif kind == "table":
      out.append("<table><tr>" + "".join(f"<th>{_inline_md(h)}</th>" for h in block[1])
                 + "</tr>")
      out += ["<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
              for row in block[2]]
      out.append("</table>")
    elif kind == "img":
      with open(os.path.join(out_dir, block[1]), "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
      out.append(f"<p><img alt='{html.escape(block[2])}' src='data:image/png;base64,{data}'></p>")
    elif kind == "pre":
      out.append(f"<details><summary>show</summary><pre>{html.escape(block[1])}</pre></details>")
  out.append("</body></html>")
  return "\n".join(out) + "\n"


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
    config = _read_json(config_path)
  else:
    atomic.write_json(dict(config), config_path)
  title = f"phi_jax run report: {os.path.basename(workdir)}"
  blocks: list[Block] = [("h", 1, title), ("p", f"Work directory: `{workdir}`.")]
  blocks += _evaluation(workdir, out_dir)
  blocks += _paper_reference(workdir)
  blocks += _training(workdir, out_dir)
  blocks += _data(workdir)
  blocks += _synthesize(workdir)
  blocks += _decontaminate(workdir, config)
  blocks += _timings(workdir, nodes)
  blocks += _config(config)
  md_path, html_path = os.path.join(out_dir, "report.md"), os.path.join(out_dir, "report.html")
  atomic.write_text(md_path, _md(blocks) + "\n")
  atomic.write_text(html_path, _html(blocks, out_dir, title))
  return {"markdown": md_path, "html": html_path}
