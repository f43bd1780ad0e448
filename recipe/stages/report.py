"""Stage `report`: WORKDIR/report/report.md and report.html from what the stages wrote.

The last node of the graph. It reads the nodes whose output it shows (SHOWN) that are
complete or built in this run, so it reruns whenever one of them changed, and renders
recipe/report.py's report; `python run.py --report WORKDIR` renders the same report
without running a stage.
"""

from __future__ import annotations

from recipe import report as report_lib
from recipe.runner import Context, Node


# The nodes whose output the report shows (the timings of the others aside).
SHOWN = ("data", "synthesize", "decontaminate", "pretrain", "finetune", "eval")


def _after(ctx: Context) -> list[str]:
  return [name for name in SHOWN
          if name in ctx.graph.by_name and ctx.complete_or_selected(name)]


def run(ctx: Context) -> dict:
  paths = report_lib.build_report(ctx.workdir, ctx.graph.nodes, ctx.config.to_dict())
  print(f"[report] {paths['markdown']}\n[report] {paths['html']}", flush=True)
  return paths


# Its inputs are those nodes' fingerprints (which hold every config value that shaped
# their output): it reruns exactly when something it shows was rebuilt.
NODES = (Node(name="report", run=run, doc="the run report: report/report.md and report.html",
              after=_after, primary_only=True),)
