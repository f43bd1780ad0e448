"""The benchmarks, by name."""

from eval.benchmarks.apps import APPS, APPSCompetition, APPSInterview, APPSIntroductory
from eval.benchmarks.base import Benchmark, Problem, truncate_at_stop
from eval.benchmarks.cruxeval import CRUXEvalInput, CRUXEvalOutput
from eval.benchmarks.evalplus import HumanEvalPlus, HumanEvalPlusBase, MBPPPlus, MBPPPlusBase
from eval.benchmarks.humaneval import HumanEval
from eval.benchmarks.humaneval_infilling import (HumanEvalInfillMulti, HumanEvalInfillSingle,
                                                 HumanEvalInfillSpan)
from eval.benchmarks.long_context import LongContext
from eval.benchmarks.mbpp import MBPP
from eval.benchmarks.multipl_e import BENCHMARKS as MULTIPL_E
from eval.benchmarks.multipl_e import MultiPLE

BENCHMARKS = {b.name: b for b in (
    HumanEval, MBPP, HumanEvalInfillSingle, HumanEvalInfillMulti, HumanEvalInfillSpan,
    HumanEvalPlus, HumanEvalPlusBase, MBPPPlus, MBPPPlusBase, APPS, APPSIntroductory,
    APPSInterview, APPSCompetition, CRUXEvalOutput, CRUXEvalInput, LongContext,
    *MULTIPL_E)}


def get_benchmark(name: str, **options) -> Benchmark:
  """The benchmark `name`, built with its options (MBPP: prompt_format; long-context:
  lengths, depths, per_cell, seed)."""
  try:
    cls = BENCHMARKS[name]
  except KeyError:
    raise ValueError(f"unknown benchmark {name!r}; available: {sorted(BENCHMARKS)}") from None
  return cls(**options)


__all__ = ["APPS", "APPSCompetition", "APPSInterview", "APPSIntroductory", "BENCHMARKS",
           "Benchmark", "CRUXEvalInput", "CRUXEvalOutput", "HumanEval", "HumanEvalInfillMulti",
           "HumanEvalInfillSingle", "HumanEvalInfillSpan", "HumanEvalPlus", "HumanEvalPlusBase",
           "LongContext", "MBPP", "MBPPPlus", "MBPPPlusBase", "MULTIPL_E", "MultiPLE", "Problem",
           "get_benchmark", "truncate_at_stop"]
