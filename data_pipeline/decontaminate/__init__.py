"""Decontamination: training data checked against the benchmarks (docs/decontamination.md).

phi-1's three checks (section 5.2): n-gram overlap (`ngram`), L2 distance between
embeddings (`embedding`, through data_pipeline.embed) and the AST match rate tau
(`ast_match`); records within `prune_tau` of a benchmark problem are pruned (`prune`),
and `report` lays out pass rates on similar / non-similar problems (Table 3).

    from data_pipeline.decontaminate import DecontConfig, decontaminate
    summary = decontaminate(["exercises.jsonl"], ["humaneval"], DecontConfig(), "out/")

Command line: `python -m data_pipeline.decontaminate --input=F.jsonl --out=DIR`.
"""

import importlib

from data_pipeline.decontaminate.config import DecontConfig, DecontConfigError

_PRUNE = ("Decontaminator", "decontaminate")  # imported on first use


def __getattr__(name: str):
  if name in _PRUNE:
    return getattr(importlib.import_module("data_pipeline.decontaminate.prune"), name)
  raise AttributeError(f"module 'data_pipeline.decontaminate' has no attribute {name!r}")

__all__ = ["DecontConfig", "DecontConfigError", "Decontaminator", "decontaminate"]
