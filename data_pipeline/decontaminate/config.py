"""The decontamination's settings: one frozen dataclass, every field documented."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from data_pipeline.decontaminate.ngram import FIELDS, UNITS
from phi_jax.settings import OPERATIONAL, setting

CHECKS = ("ngram", "embedding", "ast")
# Fields a run config does not set in its `decontaminate` section: the stage takes the
# embedder from config.data.quality and the seed from config.seed (recipe/stages/
# decontaminate.py), so one embedding model serves the quality filter and the checks.
RUN_DERIVED = ("embed_model", "embed_max_len", "embed_batch_size", "seed", "max_listed")
EMBED_DECIDES = ("auto", "yes", "no")
# Fields that say what the recipe does with the result (which training datasets read the
# kept records), not what the checks compute: decontaminate() and its report never read
# them, so the recipe's decontaminate stage does not rerun when they change.
PRUNE_FIELDS = ("prune", "prune_datasets")


class DecontConfigError(ValueError):
  """A bad decontamination setting (the message names the field)."""


@dataclasses.dataclass(frozen=True)
class DecontConfig:
  """How training data is checked against the benchmarks (docs/decontamination.md).

  Attributes:
    benchmarks: the benchmarks checked against (names of eval/benchmarks' registry).
    checks: which checks run: 'ngram', 'embedding', 'ast'.
    taus: the AST match rates the report lays out (Table 3: 0.95, 0.9, 0.85, 0.8).
    prune_tau: records whose AST match rate with a benchmark problem is >= this are
      removed (also added to `taus` for the report).
    ngram_n: n-gram length (13: the paper's).
    ngram_unit: 'words' (lowercased alphanumeric runs) or 'code_tokens' (words and
      punctuation).
    ngram_fields: the benchmark fields indexed: 'prompt', 'docstring', 'solution'.
    ngram_min_matches: distinct shared n-grams with one problem that flag a record.
    embed_model: the embedding model (a phi_jax checkpoint, transformers dir or hub id);
      '' = a random-init model (random features: uninformative).
    embed_threshold: L2 distance between unit-length embeddings (in [0, 2]) at or
      below which a record is flagged (0.1 = cosine similarity >= 0.995).
    embed_decides: whether the embedding flag removes records: 'auto' (only for a
      pretrained embedder), 'yes', 'no' (reported only).
    embed_max_len: tokens embedded per text (its first ones).
    embed_batch_size: texts per embedding forward pass.
    ast_min_nodes: AST units with fewer normalised nodes (either side) are not compared
      (0 = compare all, the paper's measure; tiny functions match anything alike).
    examples_per_tau: example pairs per match-rate band in the report (Appendix C).
    max_listed: bad lines / unparsable records listed by name in the report.
    seed: the random-init embedder's seed.
    prune: the recipe's tokenizer and datasets read the kept records of the datasets
      in `prune_datasets` instead of the records as they are (pruning before training).
      False (the paper's phi-1, configs/phi1.py): the checks are an analysis (the
      report's similar problems and Table 3) and the training data is unpruned.
    prune_datasets: the datasets pruned when `prune` is on, names of
      data_pipeline/catalog.py's DATASETS (phi1_exercises: CodeExercises, as the paper's
      Section 5); () = every dataset the training data is built from.
  """
  benchmarks: tuple[str, ...] = setting(
      ("humaneval", "mbpp"), "the benchmarks checked against (the evaluator's registry, "
      "eval/benchmarks; their files: config.eval's paths)")
  checks: tuple[str, ...] = CHECKS
  taus: tuple[float, ...] = (0.95, 0.9, 0.85, 0.8)
  prune_tau: float = 0.95
  ngram_n: int = 13
  ngram_unit: str = "words"
  ngram_fields: tuple[str, ...] = FIELDS
  ngram_min_matches: int = 1
  embed_model: str = ""
  embed_threshold: float = 0.1
  embed_decides: str = "auto"
  embed_max_len: int = 512
  embed_batch_size: int = setting(32, kind=OPERATIONAL)
  ast_min_nodes: int = 0
  examples_per_tau: int = 2
  max_listed: int = 50
  seed: int = 0
  prune: bool = setting(
      False, "the recipe's tokenizer and datasets read the kept records of prune_datasets "
      "(pruning before training); False: the checks are an analysis and the training data "
      "is unpruned, as the paper's phi-1 (docs/decontamination.md)")
  prune_datasets: tuple[str, ...] = setting(
      (), "the datasets pruned when prune is on (data_pipeline/catalog.py's names, e.g. "
      "phi1_exercises: CodeExercises, as the paper's Section 5); () = all of them")

  def __post_init__(self):
    for name in ("benchmarks", "checks", "taus", "ngram_fields", "prune_datasets"):
      value = getattr(self, name)
      if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
      object.__setattr__(self, name, tuple(value))
    object.__setattr__(self, "taus", tuple(float(t) for t in self.taus))
    self.validate()

  def validate(self) -> None:
    def fail(field: str, message: str):
      raise DecontConfigError(f"decontaminate: {field}: {message}")

    from eval.benchmarks import BENCHMARKS  # pylint: disable=g-import-not-at-top
    unknown = sorted(set(self.benchmarks) - set(BENCHMARKS))
    if not self.benchmarks or unknown:
      fail("benchmarks", f"must name benchmarks of {sorted(BENCHMARKS)}, got "
           f"{list(self.benchmarks)}")
    if not self.checks or any(c not in CHECKS for c in self.checks):
      fail("checks", f"must be a non-empty list of {CHECKS}, got {list(self.checks)}")
    for tau in self.taus + (self.prune_tau,):
      if not 0.0 < tau <= 1.0:
        fail("taus/prune_tau", f"match rates are in (0, 1], got {tau}")
    if self.ngram_unit not in UNITS:
      fail("ngram_unit", f"must be one of {UNITS}, got {self.ngram_unit!r}")
    if not self.ngram_fields or any(f not in FIELDS for f in self.ngram_fields):
      fail("ngram_fields", f"must be among {FIELDS}, got {list(self.ngram_fields)}")
    if self.embed_decides not in EMBED_DECIDES:
      fail("embed_decides", f"must be one of {EMBED_DECIDES}, got {self.embed_decides!r}")
    if not 0.0 <= self.embed_threshold <= 2.0:
      fail("embed_threshold", f"an L2 distance of unit vectors is in [0, 2], got "
           f"{self.embed_threshold}")
    for name in ("ngram_n", "ngram_min_matches", "embed_max_len", "embed_batch_size"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fail(name, f"must be a positive integer, got {value!r}")
    from data_pipeline.catalog import DATASETS  # pylint: disable=g-import-not-at-top
    unknown = sorted(set(self.prune_datasets) - set(DATASETS))
    if unknown:
      fail("prune_datasets", f"unknown dataset(s) {unknown}; datasets: {sorted(DATASETS)}")
    if not isinstance(self.prune, bool):
      fail("prune", f"must be True or False, got {self.prune!r}")
    for name in ("ast_min_nodes", "examples_per_tau", "max_listed", "seed"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        fail(name, f"must be a non-negative integer, got {value!r}")

  def inert(self) -> set[str]:
    """The fields of checks that do not run (phi_jax/settings.py)."""
    inert = set()
    if "embedding" not in self.checks:
      inert |= {"embed_model", "embed_threshold", "embed_decides", "embed_max_len",
                "embed_batch_size", "seed"}
    if "ngram" not in self.checks:
      inert |= {"ngram_n", "ngram_unit", "ngram_fields", "ngram_min_matches"}
    if "ast" not in self.checks:
      inert |= {"ast_min_nodes", "taus", "prune_tau", "examples_per_tau"}
    if not self.prune:
      inert.add("prune_datasets")
    return inert

  def pruned(self, datasets) -> list[str]:
    """Which of `datasets` the training data reads pruned: none unless `prune` is on;
    then those of `prune_datasets`, or all of them when it is empty."""
    if not self.prune:
      return []
    return [d for d in datasets if not self.prune_datasets or d in self.prune_datasets]

  @property
  def report_taus(self) -> tuple[float, ...]:
    """The report's taus, descending, with prune_tau among them."""
    return tuple(sorted(set(self.taus) | {self.prune_tau}, reverse=True))

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any], where: str = "decontaminate") -> DecontConfig:
    """From a mapping (a ConfigDict's to_dict()); an unknown key is an error naming it."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise DecontConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    return cls(**dict(values))
