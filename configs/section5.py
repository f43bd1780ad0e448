"""The paper's Section 5 experiment (Table 3): is phi-1's HumanEval score contamination?

    python -m recipe.section5 --config=configs/section5.py --workdir=DIR

One run of configs/phi1.py (unpruned data: phi-1-base and phi-1) in DIR/base, then for
each tau of config.section5.taus (Table 3: 0.95, 0.9, 0.85, 0.8) a run in DIR/tau_<tau>
that prunes CodeExercises (the phi1_exercises dataset) against HumanEval at AST match
rate tau (and by embedding distance, with a pretrained embedder, §5.2) and finetunes
again from the base run's phi-1-base (config.finetune.model, resolved in DIR/base), then
evaluates HumanEval. DIR/table3.md and DIR/table3.json lay the result out as the
paper's Table 3: for each tau, the HumanEval problems similar / non-similar to some
exercise of the unpruned CodeExercises (the base run's decontaminate stage), with the
pass@1 on each part of phi-1 and of the model retrained on the data pruned at tau, and
the paper's rows beside them.

Each tau's run is a whole run of the one runner (skipped when complete, resumed when
interrupted): it reuses the base run's tokenizer (the phi-1-base vocabulary) and
starts from a copy of the base run's curated data and synthetic data (hard links where
possible), whose steps the runner then skips because their inputs are the same; it
checks and prunes the corpora again at its tau, rebuilds the datasets, finetunes and
evaluates. At the paper's scale the checks of the filtered code run once per tau
(hours of CPU each, docs/decontamination.md); the finetunings are the main cost.

`--config=configs/section5.py:tiny` is the CPU variant (configs/tiny.py's sizes;
tests/recipe/test_section5.py runs it on exercises planted close to HumanEval
problems, so both parts of the split are non-empty).
"""

import ml_collections

from configs import phi1
from configs import tiny

# the AST match rates of Table 3 (§5.2)
TAUS = (0.95, 0.9, 0.85, 0.8)


def _section5(config):
  config.workdir = "workdir/section5"
  config.section5 = ml_collections.ConfigDict(dict(
      # the match rates to prune at, one finetuning each (Table 3's taus)
      taus=TAUS,
      # the datasets pruned: CodeExercises, as §5.2 (data_pipeline/catalog.py's names)
      prune_datasets=("phi1_exercises",),
  ))
  # similarity to HumanEval (§5.2: Table 3 is HumanEval's), by AST match rate and by
  # embedding distance (deciding with a pretrained embedder: embed_decides 'auto');
  # the taus the report lays out are the experiment's
  config.decontaminate.update(dict(benchmarks=("humaneval",), checks=("embedding", "ast"),
                                   taus=TAUS))
  config.eval.benchmarks = ("humaneval",)
  return config


def get_config(variant: str | None = None):
  """At the paper's scale, configs/phi1.py's runs (GPUs/TPUs, an LLM endpoint); with
  `--config=configs/section5.py:tiny`, the CPU variant."""
  if variant == "tiny":
    return section5_tiny()
  if variant:
    raise ValueError(f"configs/section5.py: unknown variant {variant!r}; variants: tiny")
  return _section5(phi1.get_config())


def section5_tiny():
  """The CPU variant: configs/tiny.py's model and data. The checks are AST only (a
  random-init embedder is uninformative, and embedding every corpus on a CPU costs
  minutes per run)."""
  config = _section5(tiny.get_config())
  config.workdir = "workdir/section5_tiny"
  config.decontaminate.checks = ("ast",)
  config.stages = ("data", "decontaminate", "init", "pretrain", "finetune", "eval", "report")
  config.eval.checkpoints = ()
  return config


def tau_overrides(tau: float, prune_datasets, base_model: str, base_tokenizer: str | None,
                  stages) -> dict:
  """The config fields the run of one tau sets: {dotted field: value}. The pruning, the
  starting model (phi-1-base of the base run) and, when the base run trained its
  tokenizer, that tokenizer; nothing else changes."""
  overrides = {"decontaminate.prune": True,
               "decontaminate.prune_datasets": tuple(prune_datasets),
               "decontaminate.prune_tau": float(tau),
               "finetune.model": base_model,
               # the retrained model alone: the base run sweeps the others
               "eval.checkpoints": (),
               "eval.model": "finetune",
               "stages": tuple(s for s in stages if s not in ("init", "pretrain"))}
  if base_tokenizer is not None:
    overrides["data.tokenizer.spec"] = base_tokenizer
  return overrides
