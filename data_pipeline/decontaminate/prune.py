"""Checks each training record against the benchmarks and prunes the contaminated ones.

    summary = decontaminate(["exercises.jsonl"], ["humaneval", "mbpp"], DecontConfig(),
                            "out/decontaminate", benchmark_paths={"mbpp": "mbpp.jsonl"})

Records stream through the three checks in batches (the embedding check embeds a batch
at a time); each record is written to kept.jsonl unchanged or to removed.jsonl with
its nearest benchmark problem and every score. matches.jsonl lists every record that
a check flagged or that is within the lowest report tau of a problem (kept or not),
with the taus a pruning at which would remove it and every problem it is within that
tau of: the removed list of a pruning at any report tau, without a rerun. A record is removed when a deciding
check flags it:

  ngram      >= ngram_min_matches distinct n-grams shared with one problem;
  ast        AST match rate tau >= prune_tau with some problem;
  embedding  L2 distance <= embed_threshold to the nearest problem; deciding only
             with embed_decides='yes', or 'auto' and a pretrained embedder.

report.json / report.md (data_pipeline.decontaminate.report) count what each check
flagged and removed, the benchmark problems "similar" to the data at each tau, and,
given evaluation results, pass rates on similar and non-similar problems (Table 3).
Every output is written atomically; bad lines are counted and named, never fatal.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from data_pipeline.decontaminate import ast_match
from data_pipeline.decontaminate.config import DecontConfig
from data_pipeline.decontaminate.ngram import NgramIndex
from data_pipeline.decontaminate.samples import Sample, read_samples
from data_pipeline.decontaminate.targets import Target, load_targets
from phi_jax import atomic
from phi_jax.progress import Progress

KEPT, REMOVED, MATCHES = "kept.jsonl", "removed.jsonl", "matches.jsonl"
REPORT_JSON, REPORT_MD = "report.json", "report.md"
BATCH = 256  # records checked together (the embedding check embeds them at once)


def _warn(line: str) -> None:
  print(line, file=sys.stderr)


@dataclasses.dataclass
class Verdict:
  """What the checks found for one sample."""
  sample: Sample
  flags: list[str]  # the checks that flagged it
  removed: bool
  scores: dict[str, Any]  # per check: the nearest problem and its score (JSON)
  ast_taus: dict[int, float]  # target index -> tau, for every tau >= the lowest report tau
  ast_best: tuple[int, float, str]  # (target, tau, the source of the sample unit)


class Decontaminator:
  """The benchmark indexes of the configured checks, built once.

  Build it once (`Decontaminator.load`) and pass it to `decontaminate` for each of
  several corpora (filtered code, textbooks, exercises) so the indexes are built once.

  Args:
    targets: the benchmark problems (targets.load_targets).
    config: the settings.
    embedder: a data_pipeline.embed.Embedder to use (default: built from the config).
    unavailable: {benchmark: why} for the benchmarks that could not be loaded.
  """

  def __init__(self, targets: Sequence[Target], config: DecontConfig, *, embedder=None,
               unavailable: Mapping[str, str] | None = None):
    self.targets, self.config = list(targets), config
    self.unavailable = dict(unavailable or {})
    self.ngram = self.ast = self.embedding = None
    self.min_tau = min(config.report_taus)
    if "ngram" in config.checks:
      self.ngram = NgramIndex(self.targets, config.ngram_n, config.ngram_unit,
                              config.ngram_fields)
    if "ast" in config.checks:
      self.labels = ast_match.Labels()
      trees = [ast_match.tree_of(t.unit, self.labels) if t.unit is not None
               else ast_match.Tree((), (), ()) for t in self.targets]
      self.ast = ast_match.MatchIndex(trees, self.labels, min_nodes=config.ast_min_nodes)
    if "embedding" in config.checks:
      from data_pipeline.decontaminate import embedding  # pylint: disable=g-import-not-at-top
      if embedder is None:
        embedder = embedding.make_embedder(config.embed_model, max_len=config.embed_max_len,
                                           seed=config.seed)
      self.embedding = embedding.EmbeddingIndex(embedder, self.targets,
                                                max_len=config.embed_max_len,
                                                batch_size=config.embed_batch_size)
    decides = {"yes": True, "no": False,
               "auto": bool(self.embedding is not None and self.embedding.informative)}
    self.embed_decides = self.embedding is not None and decides[config.embed_decides]
    self.ast_computed = self.ast_pruned = 0

  @classmethod
  def load(cls, benchmarks: Sequence[str], config: DecontConfig | Mapping[str, Any], *,
           benchmark_paths: Mapping[str, str] | None = None,
           benchmark_options: Mapping[str, Mapping[str, Any]] | None = None, embedder=None,
           warn: Callable[[str], None] = _warn) -> Decontaminator:
    """Loads the benchmarks (skipping, with a warning, those unavailable; each built with
    its `benchmark_options`, targets.load_targets) and builds the indexes of the
    configured checks."""
    if not isinstance(config, DecontConfig):
      config = DecontConfig.from_mapping(config)
    targets, unavailable = load_targets(list(benchmarks), benchmark_paths,
                                        options=benchmark_options, warn=warn)
    decontaminator = cls(targets, config, embedder=embedder, unavailable=unavailable)
    if decontaminator.embedding is not None and not decontaminator.embedding.informative:
      note = "decides" if decontaminator.embed_decides else "is reported, not used to decide"
      warn(f"decontaminate: warning: the embedder is {decontaminator.embedding.source}: "
           f"the embedding check is uninformative and {note}")
    return decontaminator

  def deciding_checks(self) -> list[str]:
    checks = [c for c in ("ngram", "ast") if getattr(self, c) is not None]
    return checks + (["embedding"] if self.embed_decides else [])

  def _target_json(self, t: int) -> dict[str, str]:
    return {"benchmark": self.targets[t].benchmark, "task_id": self.targets[t].task_id}

  def _ast(self, sample: Sample) -> tuple[dict, dict[int, float], tuple]:
    units, sources = [], []
    for module, code in zip(sample.modules, sample.code):
      for node in ast_match.program_units(module):
        units.append(ast_match.tree_of(node, self.labels))
        sources.append(ast.get_source_segment(code, node) if node is not module else code)
    found = self.ast.matches(units, self.min_tau)
    self.ast_computed += found.computed
    self.ast_pruned += found.pruned
    best, tau = found.best()
    if best < 0:
      return {"tau": None, "below": self.min_tau, "units": len(units)}, {}, (-1, 0.0, "")
    score = {**self._target_json(best), "tau": round(tau, 4), "units": len(units)}
    return score, found.tau, (best, tau, sources[found.unit[best]] or "")

  def check(self, samples: Sequence[Sample]) -> list[Verdict]:
    """The verdict on each sample of a batch."""
    config = self.config
    nearest = self.embedding.nearest([s.text for s in samples]) if self.embedding else None
    verdicts = []
    for i, sample in enumerate(samples):
      flags: list[str] = []
      scores: dict[str, Any] = {}
      removed = False
      if self.ngram is not None:
        overlap = self.ngram.overlap(sample.text)
        scores["ngram"] = ({**self._target_json(overlap.target), "matches": overlap.matches,
                            "fields": overlap.fields, "example": overlap.example}
                           if overlap.target >= 0 else {"matches": 0})
        if overlap.matches >= config.ngram_min_matches:
          flags.append("ngram")
          removed = True
      taus: dict[int, float] = {}
      best = (-1, 0.0, "")
      if self.ast is not None:
        if sample.modules:
          scores["ast"], taus, best = self._ast(sample)
          if best[0] >= 0 and best[1] >= config.prune_tau:
            flags.append("ast")
            removed = True
        else:
          scores["ast"] = {"tau": None, "units": 0}
          if sample.unparsable:
            scores["ast"]["unparsable"] = sample.unparsable
      if nearest is not None:
        t, distance = int(nearest.target_N[i]), float(nearest.distance_N[i])
        scores["embedding"] = {**self._target_json(t), "distance": round(distance, 5)}
        if distance <= config.embed_threshold:
          flags.append("embedding")
          removed = removed or self.embed_decides
      verdicts.append(Verdict(sample, flags, removed, scores, taus, best))
    return verdicts


class Tally:
  """Counts for the report, accumulated over the stream."""

  def __init__(self, decontaminator: Decontaminator):
    self.d = decontaminator
    config = decontaminator.config
    self.taus = config.report_taus
    self.records = self.kept = self.removed = self.no_code = 0
    self.flagged = collections.Counter()
    self.removed_by = collections.Counter()
    self.ast_at = collections.Counter()  # tau -> records with some tau >= it
    self.removed_at = collections.Counter()  # tau -> records removed pruning at it
    self.target_tau: dict[int, float] = {}  # target -> highest tau of any record
    self.ngram_targets = collections.Counter()  # task id -> records the n-grams flagged
    self.embed_targets: dict[str, float] = {}  # task id -> least distance of a flagged record
    self.examples: dict[float, list[dict]] = {t: [] for t in self.taus}
    self.bad = collections.Counter()
    self.bad_listed: list[str] = []
    self.unparsable = 0
    self.unparsable_listed: list[str] = []

  def on_bad(self, reason: str, where: str, detail: str) -> None:
    self.bad[reason] += 1
    if len(self.bad_listed) < self.d.config.max_listed:
      self.bad_listed.append(f"{where}: {reason}: {detail}")

  def add(self, v: Verdict) -> None:
    self.records += 1
    self.kept += not v.removed
    self.removed += v.removed
    self.flagged.update(v.flags)
    if v.removed:
      self.removed_by.update(v.flags)
    if v.sample.unparsable:
      self.unparsable += 1
      if len(self.unparsable_listed) < self.d.config.max_listed:
        self.unparsable_listed.append(f"{v.sample.where}: {'; '.join(v.sample.unparsable)}")
    elif not v.sample.code:
      self.no_code += 1
    best_tau = max(v.ast_taus.values(), default=0.0)
    removed_at = self.removed_at_taus(v)
    for tau in self.taus:
      self.ast_at[tau] += best_tau >= tau
      self.removed_at[tau] += tau in removed_at
    for t, tau in v.ast_taus.items():
      self.target_tau[t] = max(tau, self.target_tau.get(t, 0.0))
    if "ngram" in v.flags:
      self.ngram_targets[v.scores["ngram"]["task_id"]] += 1
    if "embedding" in v.scores:
      t, distance = v.scores["embedding"]["task_id"], v.scores["embedding"]["distance"]
      if "embedding" in v.flags:
        self.embed_targets[t] = min(distance, self.embed_targets.get(t, 2.0))
    self._example(v)

  def removed_at_taus(self, v: Verdict) -> list[float]:
    """The report taus a pruning at which removes this record (n-gram and deciding
    embedding flags remove it at every tau)."""
    other = "ngram" in v.flags or (self.d.embed_decides and "embedding" in v.flags)
    best_tau = max(v.ast_taus.values(), default=0.0)
    return [tau for tau in self.taus if other or best_tau >= tau]

  def match_row(self, v: Verdict) -> dict | None:
    """matches.jsonl's row of a record some check flagged or that is within the lowest
    report tau of a problem (None otherwise)."""
    if not v.flags and not v.ast_taus:
      return None
    similar = {self.d.targets[t].task_id: round(tau, 4) for t, tau in v.ast_taus.items()}
    return {"id": v.sample.id, "where": v.sample.where, "removed": v.removed,
            "flags": v.flags, "removed_at_tau": self.removed_at_taus(v),
            "ast_similar": similar, "scores": v.scores}

  def _example(self, v: Verdict) -> None:
    """Keeps the first few pairs in each band [tau_i, tau_{i-1}) of match rates."""
    t, tau, source = v.ast_best
    if t < 0:
      return
    band = next((b for b in self.taus if tau >= b), None)
    if band is None or len(self.examples[band]) >= self.d.config.examples_per_tau:
      return
    target = self.d.targets[t]
    self.examples[band].append({
        "tau": round(tau, 4), "id": v.sample.id, "where": v.sample.where,
        "sample_code": source, "benchmark": target.benchmark, "task_id": target.task_id,
        "benchmark_code": (ast.get_source_segment(target.program, target.unit)
                           if target.unit is not None else "") or target.program})


def _batches(items: Iterable, size: int) -> Iterable[list]:
  iterator = iter(items)
  while batch := list(itertools.islice(iterator, size)):
    yield batch


def decontaminate(sources: Iterable[str | dict], benchmarks: Sequence[str],
                  config: DecontConfig | Mapping[str, Any], out_dir: str, *,
                  benchmark_paths: Mapping[str, str] | None = None,
                  benchmark_options: Mapping[str, Mapping[str, Any]] | None = None,
                  results: Mapping[str, str] | None = None, embedder=None,
                  decontaminator: Decontaminator | None = None, progress: bool = True,
                  warn: Callable[[str], None] = _warn) -> dict:
  """Checks records against benchmarks; writes kept/removed/report under out_dir.

  Args:
    sources: JSONL paths and/or record dicts ({"id","text"} or {"id","prompt","solution"}).
    benchmarks: benchmark names ('humaneval', 'mbpp').
    config: a DecontConfig, or a mapping of its fields.
    out_dir: where kept.jsonl, removed.jsonl, report.json and report.md go.
    benchmark_paths: optional local data file per benchmark ({'mbpp': 'mbpp.jsonl'}).
    benchmark_options: optional options each benchmark is built with
      ({'long-context': {'lengths': (2000,), ...}}: targets.load_targets).
    results: optional {label: evaluation results.jsonl} for the Table 3 pass rates.
    embedder: a data_pipeline.embed.Embedder to use instead of the configured one.
    decontaminator: indexes built before (Decontaminator.load) for several calls;
      then `benchmarks`, `config`, `benchmark_paths`, `benchmark_options` and
      `embedder` are its own.
    progress: print a progress line.
    warn: where warnings go (one line each).

  Returns:
    The summary (report.json's "summary"): records, kept, removed, removed_by (records
    each check flagged among the removed), flagged_by, removed_at_tau, bad_input, ...
  """
  from data_pipeline.decontaminate import report  # pylint: disable=g-import-not-at-top
  if not isinstance(config, DecontConfig):
    config = DecontConfig.from_mapping(config)
  # results are read first: a bad results file fails before any work
  passed = {label: report.read_results(path) for label, path in (results or {}).items()}
  if decontaminator is None:
    decontaminator = Decontaminator.load(benchmarks, config, benchmark_paths=benchmark_paths,
                                         benchmark_options=benchmark_options,
                                         embedder=embedder, warn=warn)
  decontaminator.ast_computed = decontaminator.ast_pruned = 0
  tally = Tally(decontaminator)
  meter = Progress("decontaminate", None, enabled=progress, unit="records")
  with atomic.writing(os.path.join(out_dir, KEPT), "w") as kept, \
       atomic.writing(os.path.join(out_dir, REMOVED), "w") as removed, \
       atomic.writing(os.path.join(out_dir, MATCHES), "w") as matches:
    for batch in _batches(read_samples(sources, tally.on_bad), BATCH):
      for verdict in decontaminator.check(batch):
        tally.add(verdict)
        match = tally.match_row(verdict)
        if match is not None:
          matches.write(json.dumps(match, ensure_ascii=False) + "\n")
        if verdict.removed:
          row = {"id": verdict.sample.id, "where": verdict.sample.where,
                 "removed_by": verdict.flags, "nearest": report.nearest(verdict),
                 "scores": verdict.scores, "record": verdict.sample.record}
          removed.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
          kept.write(json.dumps(verdict.sample.record, ensure_ascii=False) + "\n")
      meter.update(tally.records, removed=tally.removed, bad=sum(tally.bad.values()))
    meter.update(tally.records, final=True, removed=tally.removed, bad=sum(tally.bad.values()))
  if sum(tally.bad.values()):
    warn(f"decontaminate: warning: {sum(tally.bad.values())} bad input line(s) skipped "
         f"(listed in {os.path.join(out_dir, REPORT_MD)}); first: {tally.bad_listed[0]}")
  return report.write_report(tally, out_dir, unavailable=decontaminator.unavailable,
                             results=passed)
