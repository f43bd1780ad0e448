"""HumanEval+ / MBPP+ on small files in EvalPlus's released format, written here."""

import dataclasses
import json

import pytest

from eval.benchmarks import HumanEvalPlus, MBPPPlus, MBPPPlusBase, get_benchmark
from eval.benchmarks import _evalplus_check
from eval.sandbox import Sandbox
from tests.eval.benchmarks.helpers import (LIMITS, assert_right_pass_and_wrong_fail, score,
                                           write_jsonl)


HUMANEVAL_PLUS = [
    {"task_id": "HumanEval/0", "entry_point": "has_close_elements",
     "prompt": ("from typing import List\n\n\ndef has_close_elements(numbers: List[float], "
                "threshold: float) -> bool:\n    \"\"\"Whether any two numbers are closer "
                "than threshold.\"\"\"\n"),
     "canonical_solution": ("    s = sorted(numbers)\n"
                            "    return any(b - a < threshold for a, b in zip(s, s[1:]))\n"),
     "base_input": [[[1.0, 2.0, 3.0], 0.5], [[1.0, 2.8, 3.0, 4.0], 0.3]],
     "plus_input": [[[], 1.0], [[5.0, 1.0, 5.05], 0.1]], "atol": 0, "contract": ""},
    {"task_id": "HumanEval/2", "entry_point": "truncate_number",
     "prompt": "def truncate_number(number: float) -> float:\n    \"\"\"Decimal part.\"\"\"\n",
     "canonical_solution": "    return number % 1.0\n",
     "base_input": [[3.5], [1.33]], "plus_input": [[123.456]], "atol": 1e-6},
    {"task_id": "HumanEval/32", "entry_point": "find_zero",
     "prompt": ("import math\n\n\ndef poly(xs: list, x: float):\n    return sum(c * math.pow(x, i) "
                "for i, c in enumerate(xs))\n\n\ndef find_zero(xs: list):\n"),
     "canonical_solution": ("    lo, hi = -1.0, 1.0\n    while poly(xs, lo) * poly(xs, hi) > 0:\n"
                            "        lo, hi = 2 * lo, 2 * hi\n    for _ in range(200):\n"
                            "        mid = (lo + hi) / 2\n"
                            "        if poly(xs, mid) * poly(xs, lo) > 0:\n            lo = mid\n"
                            "        else:\n            hi = mid\n    return lo\n"),
     "base_input": [[[1, 2]], [[-6, 11, -6, 1]]], "plus_input": [[[-3, 0, 0, 1]]], "atol": 1e-4},
]

MBPP_PLUS = [
    {"task_id": "Mbpp/2", "entry_point": "similar_elements",
     "prompt": ('"""\nWrite a function to find the shared elements from the given two lists.\n'
                'assert set(similar_elements((3, 4, 5, 6),(5, 7, 4, 10))) == set((4, 5))\n"""\n'),
     "canonical_solution": ("def similar_elements(test_tup1, test_tup2):\n"
                            "  return tuple(set(test_tup1) & set(test_tup2))\n"),
     "base_input": [[[3, 4, 5, 6], [5, 7, 4, 10]], [[1, 2, 3, 4], [5, 4, 3, 7]]],
     "plus_input": [[[11, 12, 14, 13], [17, 15, 14, 13]]], "atol": 0},
    {"task_id": "Mbpp/3", "entry_point": "is_not_prime",
     "prompt": '"""\nWrite a python function to identify non-prime numbers.\n'
               'assert is_not_prime(2) == False\n"""\n',
     "canonical_solution": ("import math\ndef is_not_prime(n):\n  if n == 1:\n    return True\n"
                            "  return any(n % i == 0 for i in range(2, int(math.sqrt(n)) + 1))\n"),
     "base_input": [[2], [10], [35]], "plus_input": [[1], [7919], [49]], "atol": 0},
]

HUMANEVAL_WRONG = {  # task -> a wrong completion
    "HumanEval/0": "    return False\n",
    "HumanEval/2": "    return number - int(number) + 0.01\n",
    "HumanEval/32": "    return 0.5\n",
}
MBPP_RIGHT = {  # written independently of the reference: the order of the tuple differs
    "Mbpp/2": "def similar_elements(a, b):\n  return tuple(sorted(x for x in a if x in b))\n",
    "Mbpp/3": ("def is_not_prime(n):\n  if n < 2:\n    return True\n"
               "  return any(n % d == 0 for d in range(2, n))\n"),
}
# right on the base inputs (2, 10, 35), wrong on plus input 1: MBPP+ catches it
MBPP_BASE_ONLY = "def is_not_prime(n):\n  return any(n % d == 0 for d in range(2, n))\n"




def test_humaneval_plus_right_and_wrong_solutions(tmp_path):
  data = write_jsonl(tmp_path / "HumanEvalPlus.jsonl", HUMANEVAL_PLUS)
  right = [{"task_id": p["task_id"], "completion": p["canonical_solution"]}
           for p in HUMANEVAL_PLUS]
  # an independent right answer: any root of the polynomial passes find_zero's oracle
  right.append({"task_id": "HumanEval/32", "completion": (
      "    import numpy\n    roots = numpy.roots(list(reversed(xs)))\n"
      "    return float(min(r.real for r in roots if abs(r.imag) < 1e-9))\n")})
  assert len(right) == 4
  assert_right_pass_and_wrong_fail(tmp_path, "humaneval+", data, right, HUMANEVAL_WRONG)


def test_mbpp_plus_base_and_plus_inputs(tmp_path):
  data = write_jsonl(tmp_path / "MbppPlus.jsonl", MBPP_PLUS)
  right = [{"task_id": t, "completion": c} for t, c in MBPP_RIGHT.items()]
  report, _ = score(tmp_path, "mbpp+", data, right, "right")
  assert report["num_correct"] == 2
  base_only = [{"task_id": "Mbpp/3", "completion": MBPP_BASE_ONLY}]
  report, _ = score(tmp_path, "mbpp+base", data, base_only, "base")
  assert report["num_correct"] == 1
  report, results = score(tmp_path, "mbpp+", data, base_only, "plus")
  assert report["num_correct"] == 0 and results["Mbpp/3"]["failure"] == "assertion"


def test_time_limits_come_from_the_reference_run(tmp_path):
  data = write_jsonl(tmp_path / "MbppPlus.jsonl", MBPP_PLUS)
  benchmark = MBPPPlus(min_time_limit_s=0.3, time_limit_factor=4.0)
  problem = {p.task_id: p for p in benchmark.load(data)}["Mbpp/3"]
  body = "  return n < 2 or any(n % d == 0 for d in range(2, n))\n"
  slow = "import time\ndef is_not_prime(n):\n  time.sleep(1.0)\n" + body
  quick = "import time\ndef is_not_prime(n):\n  time.sleep(0.05)\n" + body
  outcomes = Sandbox(LIMITS).run_many([benchmark.program(problem, slow),
                                       benchmark.program(problem, quick)], workers=1)
  assert outcomes[0].failure == "exception:TimeLimitExceeded"
  assert outcomes[1].passed
  # EvalPlus's defaults give the slow one 4 s per input: it passes
  assert Sandbox(LIMITS).run(MBPPPlusBase().program(
      {p.task_id: p for p in MBPPPlusBase().load(data)}["Mbpp/3"], slow.replace("1.0", "0.2"))
  ).passed


def test_a_failing_reference_is_named_as_such(tmp_path):
  row = dict(HUMANEVAL_PLUS[1], canonical_solution="    return number / 0\n")
  benchmark = HumanEvalPlus()
  problem = benchmark.load(write_jsonl(tmp_path / "he.jsonl", [row]))[0]
  outcome = Sandbox(LIMITS).run(benchmark.program(problem, "    return number % 1.0\n"))
  assert outcome.failure == "exception:ReferenceFailed"
  assert "the reference fails on input 0" in outcome.stderr_tail


def test_mbpp_inputs_get_the_references_types():
  assert _evalplus_check.mbpp_inputs(2, [[[1, 2], [3]]]) == [[(1, 2), (3,)]]
  assert _evalplus_check.mbpp_inputs(580, [[[1, [2, 3]]]]) == [((1, (2, 3)),)]
  assert _evalplus_check.mbpp_inputs(3, [[7]]) == [[7]]


def test_float_outputs_match_within_tolerance():
  close = _evalplus_check._matches
  assert close("humaneval", "f", (), 0.1 + 0.2, 0.3, 0)  # atol 0 on floats means 1e-6
  assert not close("humaneval", "f", (), 0.3001, 0.3, 0)
  assert close("humaneval", "f", (), [1.0, 2.00001], [1.0, 2.0], 1e-4)
  assert not close("humaneval", "f", (), (1.0, 2.0), [1.0, 2.0], 1e-4)  # types must agree
  assert close("mbpp", "similar_elements", (), (5, 4), (4, 5), 0)


def test_bad_files_are_named(tmp_path):
  row = dict(HUMANEVAL_PLUS[0])
  del row["plus_input"]
  bad = write_jsonl(tmp_path / "bad.jsonl", [row])
  with pytest.raises(ValueError, match=r"bad.jsonl:1: missing field\(s\) \['plus_input'\]"):
    HumanEvalPlus().load(bad)
  with pytest.raises(FileNotFoundError, match="HumanEvalPlus-v0.1.10.jsonl"):
    get_benchmark("humaneval+").load(None)
  with pytest.raises(ValueError, match="time limits must be positive"):
    MBPPPlus(min_time_limit_s=0)


def test_the_sandbox_gives_a_program_every_inputs_time_limit(tmp_path):
  """A solution within its 4 s per input, 3 s in all, passes even where the evaluator's
  per-program timeout is 2 s: the sandbox gets what the reference's and the candidate's
  runs may take (EvalPlus's 60 s per task for each, + 1 s + start-up)."""
  data = write_jsonl(tmp_path / "MbppPlus.jsonl", MBPP_PLUS)
  slow = ("import time\ndef is_not_prime(n):\n  time.sleep(0.5)\n"
          "  return n < 2 or any(n % d == 0 for d in range(2, n))\n")
  assert MBPPPlus().timeout_s(MBPPPlus().load(data)[0]) == 126.0
  report, results = score(tmp_path, "mbpp+", data, [{"task_id": "Mbpp/3", "completion": slow}],
                          "slow", timeout_s=2.0)
  assert results["Mbpp/3"]["passed"], results["Mbpp/3"]
  assert "wall 126.0s" in report["sandbox"]["in_force"]


def test_the_task_time_limit_bounds_the_inputs_together(tmp_path):
  data = write_jsonl(tmp_path / "MbppPlus.jsonl", MBPP_PLUS)
  benchmark = MBPPPlus(task_time_limit_s=1.0)  # all 6 inputs in min(1 s, 6 x 4 s) + 1 s
  problem = {p.task_id: p for p in benchmark.load(data)}["Mbpp/3"]
  body = "  return n < 2 or any(n % d == 0 for d in range(2, n))\n"
  outcomes = Sandbox(LIMITS).run_many([
      benchmark.program(problem, f"import time\ndef is_not_prime(n):\n  time.sleep({t})\n"
                        + body) for t in (0.5, 0.1)], workers=1)
  assert outcomes[0].failure == "exception:TimeLimitExceeded"
  assert "over the task's 2 s for all inputs" in outcomes[0].stderr_tail
  assert outcomes[1].passed
  # a reference slower than the task limit cannot judge anything: named as such
  slow_reference = dict(MBPP_PLUS[1], canonical_solution=(
      "import time\ndef is_not_prime(n):\n  time.sleep(0.1)\n" + body))
  benchmark = MBPPPlus(task_time_limit_s=0.2)
  problem = benchmark.load(write_jsonl(tmp_path / "slow.jsonl", [slow_reference]))[0]
  outcome = Sandbox(LIMITS).run(benchmark.program(problem, MBPP_RIGHT["Mbpp/3"]))
  assert outcome.failure == "exception:ReferenceFailed"
  assert "the reference takes over 0.2 s" in outcome.stderr_tail


def _oracle_of(program):
  """(expected, limits) of the oracle a candidate's program carries, or None."""
  import ast
  import base64
  import pickle
  call = ast.parse(program).body[-1].value
  oracle = next(k.value.value for k in call.keywords if k.arg == "oracle")
  return pickle.loads(base64.b64decode(oracle)) if oracle else None


def test_the_reference_runs_once_per_problem_and_the_samples_reuse_its_outputs(tmp_path):
  """`prepare` runs each reference once in the sandbox; every sample's program carries
  its outputs (equal to the reference run here) and runs no reference: a program whose
  reference source is broken still judges with the oracle."""
  data = write_jsonl(tmp_path / "MbppPlus.jsonl", MBPP_PLUS)
  benchmark = MBPPPlus()
  problems = benchmark.load(data)
  assert _oracle_of(benchmark.program(problems[1], MBPP_RIGHT["Mbpp/3"])) is None
  benchmark.prepare(problems, Sandbox(LIMITS), workers=2)
  for problem, row in zip(problems, MBPP_PLUS):
    expected, limits = _oracle_of(benchmark.program(problem, MBPP_RIGHT[problem.task_id]))
    inputs = _evalplus_check.mbpp_inputs(int(problem.task_id.split("/")[1]),
                                         row["base_input"] + row["plus_input"])
    here, _ = _evalplus_check.reference_outputs(
        dataset="mbpp", task_id=problem.task_id, entry_point=row["entry_point"],
        reference=row["prompt"] + row["canonical_solution"], inputs=inputs,
        min_time_limit_s=4.0, time_limit_factor=4.0, task_time_limit_s=60.0)
    assert expected == here and len(limits) == len(inputs)
    assert all(limit >= 4.0 for limit in limits)
  # a reference that ran would end the program early (SystemExit)
  broken = dataclasses.replace(problems[1], canonical_solution="raise SystemExit('never')\n")
  right, wrong = (benchmark.program(broken, c) for c in (MBPP_RIGHT["Mbpp/3"], MBPP_BASE_ONLY))
  outcomes = Sandbox(LIMITS).run_many([right, wrong], workers=2)
  assert outcomes[0].passed and outcomes[1].failure == "assertion"


def test_a_problem_whose_reference_fails_gets_no_oracle_and_says_why(tmp_path):
  row = dict(HUMANEVAL_PLUS[1], canonical_solution="    return number / 0\n")
  data = write_jsonl(tmp_path / "he.jsonl", [row, HUMANEVAL_PLUS[0]])
  samples = [{"task_id": "HumanEval/2", "completion": "    return number % 1.0\n"},
             {"task_id": "HumanEval/0", "completion": HUMANEVAL_PLUS[0]["canonical_solution"]}]
  report, results = score(tmp_path, "humaneval+", data, samples, "failing")
  assert results["HumanEval/2"]["failure"] == "exception:ReferenceFailed"
  assert "the reference fails on input 0" in results["HumanEval/2"]["stderr_tail"]
  assert results["HumanEval/0"]["passed"] and report["num_correct"] == 1
