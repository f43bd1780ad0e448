"""The recipe's graph, as data: every stage and data step in pipeline order.

    curate -> annotate, embed -> classify -> exercises -> synthesize -> decontaminate
      -> tokenizer -> datasets -> data -> init -> pretrain -> finetune -> curves -> sample
      -> eval -> attribute -> export_hf -> report

Each node declares its own inputs (recipe/runner.py: config fields, upstream nodes,
files); this list only fixes the order. A new stage is a module in recipe/stages/ with
a NODES tuple, placed here after the nodes it reads.
"""

from __future__ import annotations

from recipe.runner import Graph
from recipe.stages import (attribute, curves, data, decontaminate, evaluate, export_hf, init,
                           report, sample, synthesize, training)


def build() -> Graph:
  decontamination = (decontaminate.node(data.source_corpora, data.source_nodes),)
  return Graph(data.NODES + synthesize.NODES + decontamination + data.FINAL_STEPS
               + init.NODES + training.NODES + curves.NODES + sample.NODES + evaluate.NODES
               + attribute.NODES + export_hf.NODES
               + report.NODES)  # last: it reads every other node
