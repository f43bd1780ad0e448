"""Stage `report`: WORKDIR/report/report.md and report.html from what the stages wrote.

The last node of the graph. It reads the nodes whose output it shows (SHOWN) that are
complete or built in this run, so it reruns whenever one of them changed, and renders
recipe/report.py's report; `python run.py --report WORKDIR` renders the same report
without running a stage.
"""

from __future__ import annotations

from phi_jax import settings as settings_lib
from recipe import report as report_lib
from recipe.runner import Context, Node


# The nodes whose output the report shows (the timings of the others aside).
SHOWN = ("data", "synthesize", "decontaminate", "pretrain", "finetune", "curves", "eval",
         "attribute")


def _after(ctx: Context) -> list[str]:
  return [name for name in SHOWN
          if name in ctx.graph.by_name and ctx.complete_or_selected(name)]


def run(ctx: Context, reads: dict) -> dict:
  # the settings the results were made with: output-determining fields only
  shown = settings_lib.output_values(reads)
  paths = report_lib.build_report(ctx.workdir, ctx.graph.nodes, shown)
  print(f"[report] {paths['markdown']}\n[report] {paths['html']}", flush=True)
  return paths


def _reads(ctx: Context) -> dict:
  """The report shows the run's settings (report/config.json): their output-determining
  fields, which enter its fingerprint; its other inputs are the shown nodes'
  fingerprints, so it reruns exactly when something it shows was rebuilt."""
  return {**ctx.settings.sections, "seed": ctx.settings.seed}


NODES = (Node(name="report", run=run, doc="the run report: report/report.md and report.html",
              reads=_reads, after=_after, primary_only=True),)
