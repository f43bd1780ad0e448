"""Benchmark proximity at generation time: a synthetic sample too close to a benchmark
problem is rejected as `benchmark_proximity` when it is generated, not pruned later.

    index = load(config.decontaminate, config.synth.proximity, benchmark_paths,
                 benchmark_options)
    found = check(index, config.synth.proximity, [(sample_id, record), ...])
    found[sample_id]   # (Rejected('benchmark_proximity', ...) or None, scores JSON)

The checks are the decontamination's own (data_pipeline/decontaminate): its n-gram index
and its AST match index, built once by its `Decontaminator` from the benchmarks and the
index settings of config.decontaminate (benchmarks, ngram_n, ngram_unit, ngram_fields,
ast_min_nodes), with the thresholds of config.synth.proximity:

  ngram   the sample shares >= ngram_min_matches distinct n-grams with one problem;
  ast     a function of the sample has AST match rate tau >= ast_tau with a problem's
          function under test (renaming and other literals do not lower tau).

A textbook section is checked as the decontamination checks a document (its text, and
the code of its Python blocks), an exercise as prompt + solution.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from data_pipeline.decontaminate import DecontConfig
from data_pipeline.decontaminate.prune import Decontaminator
from data_pipeline.decontaminate.samples import sample_of
from data_pipeline.synth.config import ProximityOptions
from data_pipeline.synth.parse import Rejected

GATE = "benchmark_proximity"


def decont_config(decontaminate: DecontConfig, options: ProximityOptions) -> DecontConfig:
  """config.decontaminate's indexes with the proximity checks and thresholds: its
  `ngram` flag is `ngram_min_matches` shared n-grams, its `ast` flag tau >= ast_tau."""
  return dataclasses.replace(decontaminate, checks=tuple(options.checks),
                             ngram_min_matches=options.ngram_min_matches,
                             prune_tau=options.ast_tau, taus=(options.ast_tau,),
                             prune=False, prune_datasets=())


def load(decontaminate: DecontConfig | Mapping[str, Any], options: ProximityOptions,
         benchmark_paths: Mapping[str, str] | None = None,
         benchmark_options: Mapping[str, Mapping[str, Any]] | None = None,
         warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr)
         ) -> Decontaminator:
  """The decontamination's indexes for the proximity gate (benchmarks that cannot be
  loaded are skipped with a warning, as the decontaminate stage does; each is built with
  its `benchmark_options`, as the evaluator builds it)."""
  if not isinstance(decontaminate, DecontConfig):
    decontaminate = DecontConfig.from_mapping(decontaminate)
  config = decont_config(decontaminate, options)
  return Decontaminator.load(list(config.benchmarks), config,
                             benchmark_paths=benchmark_paths,
                             benchmark_options=benchmark_options, warn=warn)


def _reason(index: Decontaminator, flags: list[str], scores: Mapping[str, Any]) -> str:
  parts = []
  if "ngram" in flags:
    s = scores["ngram"]
    parts.append(f"{s['matches']} {index.config.ngram_n}-gram(s) shared with "
                 f"{s['benchmark']} {s['task_id']} (e.g. '{s['example']}')")
  if "ast" in flags:
    s = scores["ast"]
    parts.append(f"AST match rate {s['tau']:.2f} with {s['benchmark']} {s['task_id']}'s "
                 f"function (at least {index.config.prune_tau:g} rejects)")
  return "; ".join(parts)


def check(index: Decontaminator, records: Sequence[tuple[str, dict]]
          ) -> dict[str, tuple[Rejected | None, dict]]:
  """{sample id: (its rejection or None, its scores)} of `records` ((id, record): a
  Record's {"id", "text"} or an Exercise's {"id", "prompt", "solution"})."""
  samples = [sample_of(record, sample_id) for sample_id, record in records]
  found: dict[str, tuple[Rejected | None, dict]] = {}
  for (sample_id, _), verdict in zip(records, index.check(samples)):
    scores: dict[str, Any] = {}
    if "ngram" in verdict.scores:
      s = verdict.scores["ngram"]
      scores["ngram"] = {"matches": s["matches"],
                         **({"task_id": s["task_id"]} if s["matches"] else {})}
    if "ast" in verdict.scores:
      s = verdict.scores["ast"]
      scores["ast"] = {"tau": s.get("tau"), **({"task_id": s["task_id"]}
                                                if s.get("tau") is not None else {})}
    flags = [f for f in verdict.flags if f in ("ngram", "ast")]
    rejected = Rejected(GATE, _reason(index, flags, verdict.scores)) if flags else None
    found[sample_id] = (rejected, scores)
  return found
