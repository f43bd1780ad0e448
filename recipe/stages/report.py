"""Stage `report`: WORKDIR/report/report.md and report.html from what the stages wrote.

The last node of the graph. It reads every other node that is complete or built in
this run (so it reruns whenever any of them changed) and renders recipe/report.py's
report; `python run.py --report WORKDIR` renders the same report without running a
stage.
"""

from __future__ import annotations

from recipe import report as report_lib
from recipe.runner import Context, Node


def _after(ctx: Context) -> list[str]:
  return [node.name for node in ctx.graph.nodes
          if node.name != "report" and ctx.complete_or_selected(node.name)]


def run(ctx: Context) -> dict:
  paths = report_lib.build_report(ctx.workdir, ctx.graph.nodes, ctx.config.to_dict())
  print(f"[report] {paths['markdown']}\n[report] {paths['html']}", flush=True)
  return paths


NODES = (Node(name="report", run=run, doc="the run report: report/report.md and report.html",
              after=_after, extra=lambda ctx: {"config": ctx.config.to_dict()}),)
