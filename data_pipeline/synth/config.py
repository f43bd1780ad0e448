"""The synthesis settings (`config.synth`): the teacher, the generators' counts and
gates, and the sandbox that verifies exercises; typed schemas (phi_jax/settings.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from phi_jax import settings as settings_lib
from phi_jax.config import known_fields
from phi_jax.llm.config import LLMConfig
from phi_jax.settings import OPERATIONAL, setting


def _check(where: str, field: str, value: Any, ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(f"{where}.{field} = {value!r}: {message}")


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_ints(where: str, options: Any, fields: Sequence[str], low: int) -> None:
  """Each of `fields` of `options` is an integer >= low (the error names the field)."""
  for field in fields:
    value = getattr(options, field)
    _check(where, field, value, _is_int(value) and value >= low, f"must be an integer >= {low}")


@dataclasses.dataclass(frozen=True)
class TextbookOptions:
  """config.synth.textbooks: synthetic textbook sections."""
  count: int = setting(0, "generation requests (the paper: under 1B tokens, i.e. ~650k "
                       "sections of ~1.5k tokens); each ends as one record, accepted or "
                       "rejected")
  max_tokens: int = setting(2048, "completion tokens per section at most (cut ones are "
                            "rejected)")
  min_code_blocks: int = setting(1, "Python blocks a section must hold")
  min_words: int = setting(50, "words of prose outside code a section must hold")
  grounding_chars: int = setting(0, "grounded textbooks (beyond the paper): each request "
                                 "carries an extract of at most this many characters of "
                                 "the filtered code as a seed, as Cosmopedia's carry web "
                                 "extracts (data_pipeline/synth/grounding.py); 0 = off "
                                 "(the paper)")

  def __post_init__(self):
    self.validate()

  def validate(self, where: str = "config.synth.textbooks") -> None:
    _check_ints(where, self, ("count", "min_code_blocks", "min_words", "grounding_chars"), 0)
    _check_ints(where, self, ("max_tokens",), 1)


@dataclasses.dataclass(frozen=True)
class ExerciseOptions:
  """config.synth.exercises: synthetic CodeExercises, verified in the sandbox."""
  count: int = setting(0, "generation requests (the paper's CodeExercises: 879.5K "
                       "exercises, about 180M tokens, §2.2)")
  max_tokens: int = setting(1024, "completion tokens per exercise at most")
  min_tests: int = setting(2, "doctest examples + asserts an exercise must carry")
  min_docstring_chars: int = setting(16, "shorter docstrings say too little to be a task")
  timeout_s: float = setting(5.0, "sandbox wall-clock (and CPU) limit per exercise's tests")
  memory_mb: int = setting(1024, "sandbox address-space limit per exercise")
  isolation: str = setting("auto", "sandbox: auto (strongest available), bwrap, unshare, "
                           "rlimits", kind=OPERATIONAL)
  workers: int = setting(0, "parallel sandbox runs (0 = one per core)", kind=OPERATIONAL)
  mutants: int = setting(0, "test adequacy (beyond the paper): mutants of each reference "
                         "solution run against its own tests in the sandbox (seeded by "
                         "`seed`); an exercise whose tests kill fewer than "
                         "min_mutation_score of those that run is rejected as weak_tests. "
                         "0 = off (the paper)")
  min_mutation_score: float = setting(0.5, "share of the mutants that ran to a verdict the "
                                      "tests must kill (in [0, 1])")
  mutant_timeout_s: float = setting(2.0, "wall-clock limit per mutant (a mutant still "
                                    "running is a timeout, left out of the score)")

  def __post_init__(self):
    self.validate()

  def inert(self) -> set[str]:
    """Without mutants the mutation settings have no effect."""
    return set() if self.mutants else {"min_mutation_score", "mutant_timeout_s"}

  def validate(self, where: str = "config.synth.exercises") -> None:
    _check_ints(where, self, ("count", "min_tests", "min_docstring_chars", "workers",
                              "mutants"), 0)
    _check(where, "min_mutation_score", self.min_mutation_score,
           _is_number(self.min_mutation_score) and 0 <= self.min_mutation_score <= 1,
           "must be in [0, 1]")
    _check(where, "mutant_timeout_s", self.mutant_timeout_s,
           _is_number(self.mutant_timeout_s) and self.mutant_timeout_s > 0,
           "must be a positive number")
    _check_ints(where, self, ("max_tokens", "memory_mb"), 1)
    _check(where, "timeout_s", self.timeout_s,
           _is_number(self.timeout_s) and self.timeout_s > 0, "must be a positive number")
    _check(where, "isolation", self.isolation,
           self.isolation in ("auto", "bwrap", "unshare", "rlimits"),
           "must be auto, bwrap, unshare or rlimits")


PROXIMITY_CHECKS = ("ngram", "ast")


@dataclasses.dataclass(frozen=True)
class ProximityOptions:
  """config.synth.proximity: benchmark proximity at generation time (beyond the paper,
  data_pipeline/synth/proximity.py). A sample that a check flags against a benchmark
  problem is rejected as benchmark_proximity. The indexes are the decontamination's:
  config.decontaminate's benchmarks, n-gram n, unit and fields and ast_min_nodes."""
  checks: tuple[str, ...] = setting((), "which checks reject: 'ngram', 'ast'; () = off "
                                    "(the paper: phi-1 pruned after the fact, §5)")
  ngram_min_matches: int = setting(1, "distinct n-grams shared with one benchmark problem "
                                   "that reject a sample (>= 1)")
  ast_tau: float = setting(0.9, "AST match rate with a benchmark problem's function at or "
                           "above which a sample is rejected (in (0, 1])")

  def __post_init__(self):
    value = self.checks
    if isinstance(value, str):
      value = [v.strip() for v in value.split(",") if v.strip()]
    object.__setattr__(self, "checks", tuple(value))
    self.validate()

  def inert(self) -> set[str]:
    """The thresholds of checks that do not run."""
    inert = set()
    if "ngram" not in self.checks:
      inert.add("ngram_min_matches")
    if "ast" not in self.checks:
      inert.add("ast_tau")
    return inert

  def validate(self, where: str = "config.synth.proximity") -> None:
    _check(where, "checks", self.checks,
           all(c in PROXIMITY_CHECKS for c in self.checks) and
           len(set(self.checks)) == len(self.checks),
           f"must be distinct names among {PROXIMITY_CHECKS}")
    _check_ints(where, self, ("ngram_min_matches",), 1)
    _check(where, "ast_tau", self.ast_tau,
           _is_number(self.ast_tau) and 0 < self.ast_tau <= 1, "must be in (0, 1]")


def _teacher_defaults() -> LLMConfig:
  # long answers at a high temperature: the topic draw and the sampling give diversity
  return LLMConfig(max_concurrency=32, timeout_s=300.0, temperature=1.0, top_p=0.95)


@dataclasses.dataclass(frozen=True)
class SynthConfig:
  """config.synth: synthetic textbooks and CodeExercises (docs/synthetic.md). The data is
  only as good as the teacher: point `teacher` at a strong model."""
  teacher: LLMConfig = setting(
      doc="the teacher: an LLM client of config.llm's schema (any OpenAI-compatible "
      "endpoint: OpenAI, vLLM, SGLang, phi_jax's own server)", factory=_teacher_defaults)
  local_teacher: str = setting(
      "", "'' = the teacher endpoint above; else phi_jax's own server on loopback, started "
      "for the stage, serves it: 'random' (a random model of config.model's shape, seeded "
      "by `seed`, with the byte-level tokenizer: offline, nearly every sample is rejected) "
      "or a checkpoint / transformers dir. Set together with teacher.model or "
      "teacher.base_url it is refused")
  local_max_batch: int = setting(16, "the local server's decode batch (>= 1)",
                                 kind=OPERATIONAL)
  seed: int = setting(0, "seeds the topic draw (request i's topic and prompt depend on "
                      "(seed, i) only) and the random local teacher")
  near_dup_threshold: float = setting(0.8, "MinHash Jaccard (word 5-grams) of near-duplicates")
  num_perm: int = setting(128, "MinHash permutations")
  textbooks: TextbookOptions = setting(doc="textbooks", factory=TextbookOptions)
  exercises: ExerciseOptions = setting(doc="exercises", factory=ExerciseOptions)
  proximity: ProximityOptions = setting(doc="benchmark proximity at generation time",
                                        factory=ProximityOptions)

  def inert(self) -> set[str]:
    """Each request carries its generator's max_tokens and its own seed (`request_seed`),
    so the teacher's defaults of those two have no effect here."""
    return {"teacher.max_tokens", "teacher.seed"}

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any], where: str = "config.synth") -> SynthConfig:
    """From config.synth (dict or ConfigDict); unknown or invalid fields are named."""
    values = dict(values.to_dict() if hasattr(values, "to_dict") else values)
    values = known_fields(cls, values, where)
    if "teacher" in values and not isinstance(values["teacher"], LLMConfig):
      teacher = {**settings_lib.to_dict(_teacher_defaults()), **values["teacher"]}
      try:
        values["teacher"] = LLMConfig.from_mapping(teacher, where=f"{where}.teacher")
      except ValueError as e:
        raise ValueError(str(e)) from None
    for name, options in (("textbooks", TextbookOptions), ("exercises", ExerciseOptions),
                          ("proximity", ProximityOptions)):
      if name in values and not isinstance(values[name], options):
        values[name] = options(**known_fields(options, values[name], f"{where}.{name}"))
    config = cls(**values)
    config.validate(where)
    return config

  def validate(self, where: str = "config.synth") -> None:
    _check(where, "seed", self.seed, _is_int(self.seed), "must be an integer")
    _check(where, "near_dup_threshold", self.near_dup_threshold,
           _is_number(self.near_dup_threshold) and 0 < self.near_dup_threshold <= 1,
           "must be in (0, 1]")
    _check_ints(where, self, ("num_perm",), 2)
    _check(where, "local_max_batch", self.local_max_batch,
           _is_int(self.local_max_batch) and self.local_max_batch >= 1, "must be >= 1")
    if self.local_teacher and (self.teacher.model or self.teacher.base_url):
      field = "teacher.model" if self.teacher.model else "teacher.base_url"
      raise ValueError(f"{where}.local_teacher = {self.local_teacher!r} and {where}.{field} = "
                       f"{getattr(self.teacher, field.split('.')[1])!r} name two teachers: "
                       f"set {where}.local_teacher = '' to use the endpoint, or leave "
                       f"{where}.{field} unset to serve the local model")
    if self.local_teacher and self.teacher.mode == "batch":
      raise ValueError(f"{where}.local_teacher = {self.local_teacher!r} and "
                       f"{where}.teacher.mode = 'batch': phi_jax's own server has no Batch "
                       f"API; set {where}.teacher.mode = 'online' for a local teacher")
    self.textbooks.validate(f"{where}.textbooks")
    self.exercises.validate(f"{where}.exercises")
    self.proximity.validate(f"{where}.proximity")

  def options(self, generator: str) -> TextbookOptions | ExerciseOptions:
    return self.textbooks if generator == "textbooks" else self.exercises


