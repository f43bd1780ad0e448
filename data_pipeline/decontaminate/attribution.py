"""Memorisation attribution: the training record nearest to each passing sample.

Decontamination asks whether training data holds the benchmark's problems; this asks
the question every reader of a phi-style result asks next: did the model write its
passing solutions, or recall them? Each passing sample's solution (the completion; for
the AST check, the function it completes) becomes a target of the same indexes the
decontamination builds, with its settings (n-gram length and unit, the AST match rate
and its minimum size), and the training records the evaluated model saw stream through
them (`read_samples`: documents, textbooks, exercises): per sample, the record sharing
the most n-grams with the solution and the record of the highest AST match rate tau
(searched down to the lowest of the decontamination's taus). A sample is a near-copy
by the decontamination's own thresholds: at least `ngram_min_matches` shared n-grams,
or tau >= `prune_tau`. `clean_counts` gives the (n, c) per problem over the samples
that are not near-copies, for a clean pass@k.

The n-gram index holds the solutions' n-grams only (not the prompts: a training record
that repeats a problem's prompt is the decontamination's finding, not a memorised
solution). The embedding check is not used here: it needs an embedding model and does
not locate a copy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from data_pipeline.decontaminate import ast_match
from data_pipeline.decontaminate.config import DecontConfig
from data_pipeline.decontaminate.ngram import NgramIndex
from data_pipeline.decontaminate.samples import read_samples
from data_pipeline.decontaminate.targets import Target, _parse, _unit


@dataclasses.dataclass(frozen=True)
class Passing:
  """A passing sample: its problem's prompt and entry point, and its completion."""
  task_id: str
  sample_index: int
  prompt: str
  entry_point: str
  completion: str


def target_of(sample: Passing) -> Target:
  """The sample as a target of the indexes: the completion is the n-gram text, the
  completed function (or the whole program) the AST unit."""
  program = sample.prompt + sample.completion
  module = _parse(program)
  return Target("samples", f"{sample.task_id}#{sample.sample_index}", "", "",
                sample.completion, program, _unit(module, sample.entry_point))


def _ignore(reason: str, where: str, detail: str) -> None:
  del reason, where, detail


def attribute(passing: Sequence[Passing], corpora: Mapping[str, Sequence[str]],
              config: DecontConfig,
              on_bad: Callable[[str, str, str], None] = _ignore) -> dict:
  """The nearest training record of each passing sample.

  corpora: {dataset: JSONL files} of the training data the model saw.
  Returns {"samples": [per sample: task_id, sample_index, ngram (the record sharing
  the most n-grams: dataset, id, where, matches, example; None when none), ast (the
  record of the highest tau >= the search floor: dataset, id, where, tau; None),
  near_copy, why], "records": records read per dataset, "thresholds": {...}}.
  """
  targets = [target_of(p) for p in passing]
  ngram_index = NgramIndex(targets, config.ngram_n, config.ngram_unit, ("solution",))
  labels = ast_match.Labels()
  trees = [ast_match.tree_of(t.unit, labels) if t.unit is not None
           else ast_match.Tree((), (), ()) for t in targets]
  ast_index = ast_match.MatchIndex(trees, labels, min_nodes=config.ast_min_nodes)
  floor = min(config.report_taus)
  best_ngram: dict[int, dict] = {}
  best_ast: dict[int, dict] = {}
  records: dict[str, int] = {}
  for dataset, files in corpora.items():
    records[dataset] = 0
    for record in read_samples(list(files), on_bad):
      records[dataset] += 1
      where = {"dataset": dataset, "id": record.id, "where": record.where}
      for t, grams in ngram_index.shared(record.text).items():
        if len(grams) > best_ngram.get(t, {}).get("matches", 0):
          best_ngram[t] = {**where, "matches": len(grams), "example": " ".join(min(grams))}
      if not record.modules or not targets:
        continue
      units = [ast_match.tree_of(node, labels) for module in record.modules
               for node in ast_match.program_units(module)]
      found = ast_index.matches(units, floor)
      for t, tau in found.tau.items():
        if tau > best_ast.get(t, {}).get("tau", -1.0):
          best_ast[t] = {**where, "tau": round(tau, 4)}
  out = []
  for t, sample in enumerate(passing):
    ngram, tree = best_ngram.get(t), best_ast.get(t)
    why = []
    if ngram is not None and ngram["matches"] >= config.ngram_min_matches:
      why.append(f"{ngram['matches']} shared {config.ngram_n}-grams")
    if tree is not None and tree["tau"] >= config.prune_tau:
      why.append(f"AST match rate {tree['tau']:.3f}")
    out.append({"task_id": sample.task_id, "sample_index": sample.sample_index,
                "ngram": ngram, "ast": tree, "near_copy": bool(why), "why": why,
                "parsed": targets[t].unit is not None})
  return {"samples": out, "records": records,
          "thresholds": {"ngram_n": config.ngram_n, "ngram_unit": config.ngram_unit,
                         "ngram_min_matches": config.ngram_min_matches,
                         "prune_tau": config.prune_tau, "ast_floor": floor,
                         "ast_min_nodes": config.ast_min_nodes}}


def clean_counts(results: Sequence[Mapping], near_copies: set[tuple[str, int]]
                 ) -> dict[str, tuple[int, int]]:
  """(n, c) per problem over the samples that are not near-copies (results.jsonl rows:
  task_id, sample_index, passed); a problem all of whose samples are near-copies is
  left out."""
  counts: dict[str, list[int]] = {}
  for row in results:
    if (row["task_id"], row["sample_index"]) in near_copies:
      continue
    n_c = counts.setdefault(row["task_id"], [0, 0])
    n_c[0] += 1
    n_c[1] += bool(row["passed"])
  return {task: (n, c) for task, (n, c) in counts.items()}


__all__ = ["Passing", "attribute", "clean_counts", "target_of"]
