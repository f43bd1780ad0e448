"""The paper's numbers (Gunasekar et al. 2023, "Textbooks Are All You Need", arXiv
2306.11644), for the reports to print beside a run's own, labelled as the paper's.

Only values the paper states are here, each with its table or section. The paper's
models are 1.3B (phi-1, phi-1-base) and 350M (phi-1-small) parameters trained on ~51B
tokens; a run of another size or budget compares trends with them, not values.
"""

from __future__ import annotations

CITATION = "Gunasekar et al. 2023, arXiv 2306.11644"

# Table 1: pass@1 (%) of the paper's models; None where the brief table gives no value
# the recipe reproduces. params: the architecture's count with the CodeGen vocabulary
# padded to 51200 (configs/phi1.py, configs/phi1_small.py).
MODELS = (
    {"model": "phi-1", "params": 1_418_270_720, "size": "1.3B", "stage": "finetune",
     "humaneval": 50.6, "mbpp": 55.5, "source": "Table 1"},
    {"model": "phi-1-base", "params": 1_418_270_720, "size": "1.3B", "stage": "pretrain",
     "humaneval": 29.0, "mbpp": None, "source": "Table 1 (phi-1 before finetuning)"},
    {"model": "phi-1-small", "params": 356_794_368, "size": "350M", "stage": "finetune",
     "humaneval": 45.0, "mbpp": None, "source": "Table 1"},
)

# Table 3 (Section 5.2): HumanEval problems similar / non-similar to some CodeExercises
# record at AST match rate tau, and the pass@1 (%) on each part of phi-1 (trained on
# the unpruned data), phi-1 retrained on CodeExercises pruned at tau, and
# StarCoder-Prompted. Totals over all 164 problems: phi-1 50.6% at every tau; the
# others follow from the parts (problems solved in each part over 164).
TABLE3_MODELS = ("phi-1", "phi-1 retrained on pruned data", "StarCoder-Prompted")
TABLE3 = {
    0.95: {"similar": (71, (81.7, 74.6, 57.7)), "non-similar": (93, (26.9, 32.3, 29.0))},
    0.9: {"similar": (93, (63.4, 51.6, 48.4)), "non-similar": (71, (33.8, 36.6, 32.4))},
    0.85: {"similar": (106, (62.3, 52.8, 47.2)), "non-similar": (58, (29.3, 34.5, 31.0))},
    0.8: {"similar": (116, (59.5, 52.6, 45.7)), "non-similar": (48, (29.2, 27.1, 31.2))},
}
# Section 5.2: CodeExercises records removed by the pruning at tau 0.95 and 0.8 (of 879.5k)
PRUNED_EXERCISES = {0.95: 42_500, 0.8: 354_000}
EXERCISES = 879_500


def table3_rows(tau: float) -> list[tuple[str, int, tuple[float, ...]]]:
  """The paper's Table 3 rows at `tau`: (set, problems, pass@1 % per TABLE3_MODELS),
  similar, non-similar and total; [] for a tau the paper does not list."""
  parts = TABLE3.get(round(tau, 4))
  if parts is None:
    return []
  rows = [(name, count, rates) for name, (count, rates) in parts.items()]
  total = sum(count for _, count, _ in rows)
  # each printed rate is a whole number of problems solved out of its part
  rates = tuple(round(100 * sum(round(count * r[i] / 100) for _, count, r in rows) / total, 1)
                for i in range(len(TABLE3_MODELS)))
  return rows + [("total", total, rates)]


def models_for(params: int | None) -> list[dict]:
  """The paper's models of the run's size (within 5% of their parameter count), or, for
  a model of another size, all of them (the recipe it scales down)."""
  if params:
    same = [m for m in MODELS if abs(m["params"] - params) <= 0.05 * m["params"]]
    if same:
      return same
  return list(MODELS)


def scale_note(params: int | None) -> str:
  """One sentence on how the run's model compares with the paper's."""
  if not params:
    return ("The run's model size is unknown (no init stage): the paper's models are "
            "1.3B and 350M parameters.")
  same = [m for m in MODELS if abs(m["params"] - params) <= 0.05 * m["params"]]
  if same:
    return (f"This run's model has {params:,} parameters, the size of the paper's "
            f"{same[0]['size']} models; its data and training budget decide how close "
            "its scores come.")
  return (f"This run's model has {_human(params)} parameters, not the paper's 1.3B "
          "(phi-1) or 350M (phi-1-small), and trains on far fewer tokens: compare "
          "trends, not values.")


def _human(n: int) -> str:
  for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
    if n >= scale:
      return f"{n / scale:.1f}{unit}"
  return str(n)
