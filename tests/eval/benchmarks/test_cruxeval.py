"""CRUXEval: the released file's ground truth scores 800/800 both ways, predictions are
judged as values by executing them in the sandbox, and the prompts are the paper's."""

import json
import os

import pytest

from eval.benchmarks import BENCHMARKS, CRUXEvalInput, CRUXEvalOutput
from eval.benchmarks.base import embedded_source
from eval.sandbox import Sandbox, SandboxLimits
from tests.eval.benchmarks.helpers import score, write_jsonl
from tests.eval.benchmarks.test_benchmarks import REPO_ROOT

CRUXEVAL_PATH = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "cruxeval",
                             "cruxeval.jsonl")
needs_cruxeval = pytest.mark.skipif(not os.path.isfile(CRUXEVAL_PATH),
                                    reason=f"no {CRUXEVAL_PATH}")


def _rows():
  with open(CRUXEVAL_PATH, encoding="utf-8") as f:
    return {row["id"]: row for row in map(json.loads, f)}


def test_registered():
  assert BENCHMARKS["cruxeval-o"] is CRUXEvalOutput
  assert BENCHMARKS["cruxeval-i"] is CRUXEvalInput


@needs_cruxeval
@pytest.mark.parametrize("benchmark", [CRUXEvalOutput(), CRUXEvalInput()],
                         ids=["output", "input"])
def test_prompt_is_the_papers_two_shot_format(benchmark):
  rows = _rows()
  problems = benchmark.load(CRUXEVAL_PATH)
  assert [p.task_id for p in problems] == [f"sample_{i}" for i in range(800)]
  problem, row = problems[5], rows["sample_5"]
  question = (f"assert f({row['input']}) == ??" if benchmark.mode == "output"
              else f"assert f(??) == {row['output']}")
  # the problem's block ends the prompt, where the model writes the answer line
  assert problem.prompt.endswith(f"[PYTHON]\n{row['code']}\n{question}\n[/PYTHON]\n[ANSWER]\n")
  # two worked examples before it, each closed by [/ANSWER]
  assert (problem.prompt.count("\n[PYTHON]\n") == 3
          and problem.prompt.count("\n[/ANSWER]\n") == 2)
  assert problem.prompt.startswith("You ")
  assert problem.canonical_solution == f"assert f({row['input']}) == {row['output']}"
  assert "[/ANSWER]" in benchmark.stop


@needs_cruxeval
def test_ground_truth_scores_800_of_800_both_ways():
  """Every released output as an output prediction, every released input as an input
  prediction, and every answer line, judged by the same checker the benchmark's
  programs embed: 800 checks per sandbox program (one program per sample is
  test_ground_truth_through_the_evaluator, slow)."""
  rows = _rows()
  sandbox = Sandbox(SandboxLimits(timeout_s=60.0, cpu_s=60))
  for benchmark, field in ((CRUXEvalOutput(), "output"), (CRUXEvalInput(), "input")):
    problems = benchmark.load(CRUXEVAL_PATH)
    calls = []
    for problem in problems:
      for prediction in (rows[problem.task_id][field], problem.canonical_solution):
        calls.append(f"check(code={problem.setup!r}, given={problem.test!r}, "
                     f"prediction={prediction!r}, mode={benchmark.mode!r})\nchecked += 1\n")
    program = (embedded_source("_cruxeval_check.py") + "\nchecked = 0\n" + "".join(calls)
               + f"assert checked == {2 * len(problems)}\n")
    result = sandbox.run(program)
    assert result.passed, (benchmark.name, result.failure, result.stderr_tail[-2000:])


@pytest.mark.slow
@needs_cruxeval
def test_ground_truth_through_the_evaluator(tmp_path):
  """800/800 on CRUXEval-O and CRUXEval-I through eval.run, one program per sample."""
  rows = _rows()
  for name, field in (("cruxeval-o", "output"), ("cruxeval-i", "input")):
    samples = [{"task_id": i, "completion": row[field]} for i, row in rows.items()]
    report, results = score(tmp_path, name, CRUXEVAL_PATH, samples, name)
    failed = {t: r["failure"] for t, r in results.items() if not r["passed"]}
    assert report["num_problems"] == 800 and report["num_correct"] == 800, failed


@needs_cruxeval
def test_predictions_are_judged_as_values(tmp_path):
  """Equal values written differently pass; wrong values, strings of the right value,
  malformed predictions and predictions that call f fail."""
  output_cases = {  # (task_id, completion) -> passes
      ("sample_104", "{'a': 1}"): True,
      ("sample_104", "dict(a=1)"): True,
      ("sample_104", "{'a':1}"): True,
      ("sample_5", "(0, 'xxxxxxxxxxxxxxxxxx', )"): True,
      ("sample_104", "assert f(\"a\") == dict(a=1)"): True,  # the paper's answer line
      ("sample_104", "assert f(\"a\") == {'a': 1}\n[/ANSWER]\n"): True,  # with its stop word
      ("sample_104", "{'a': 2}"): False,
      ("sample_104", "\"{'a': 1}\""): False,  # the text of the value, as a string
      ("sample_5", "[0, 'xxxxxxxxxxxxxxxxxx']"): False,  # a list is not the tuple
      ("sample_104", "f(\"a\")"): False,  # calling f is not a prediction
      ("sample_104", "{'a': 1}) or (1"): False,  # one expression only
      ("sample_104", "assert f(\"b\") == {'a': 1} == {'a': 1}"): False,
  }
  input_cases = {
      ("sample_1", "(1, ), (1, ), (1, 2)"): True,
      ("sample_1", "(1,), (1,), (1, 2)"): True,  # the same tuples written differently
      ("sample_3", "'bcksru', 'tq'"): True,  # another input with the same output
      ("sample_3", "assert f('bcks', 'rutq') == 'bcksrutq'"): True,
      ("sample_3", "'bcksrut', 'x'"): False,
      ("sample_3", "\"'bcksrut', 'q'\""): False,  # the text of the arguments, as a string
      ("sample_3", "'bcksrut', 'q') or f('x', 'y'"): False,  # one argument list only
      ("sample_104", "\"aa\""): True,  # f counts repeats as 1: another right input
      ("sample_104", "\"ab\""): False,
  }
  for name, cases in (("cruxeval-o", output_cases), ("cruxeval-i", input_cases)):
    samples = [{"task_id": t, "completion": c} for t, c in cases]
    score(tmp_path, name, CRUXEVAL_PATH, samples, name)
    with open(tmp_path / name / "results.jsonl", encoding="utf-8") as f:
      rows = [json.loads(line) for line in f]
    assert len(rows) == len(cases)
    verdicts = {(r["task_id"], r["completion"]): r["passed"] for r in rows}
    assert verdicts == cases, {k: (r["failure"], r["stderr_tail"][-300:])
                               for k, r in zip(cases, rows) if r["passed"] != cases[k]}


ALWAYS_EQUAL = "type('A', (), {'__eq__': lambda self, other: True})()"


def test_a_predictions_own_eq_is_not_trusted(tmp_path):
  """A predicted value whose `__eq__` always returns True (a class of its own, a
  subclass of the right type, or one nested inside the right structure) fails both ways,
  as does a prediction that rebinds the checker's comparison; values equal as plain
  values still pass, with CRUXEval's `==` (1.0 for 1)."""
  data = write_jsonl(tmp_path / "cruxeval.jsonl", [
      {"id": "identity", "code": "def f(x):\n    return x", "input": "1", "output": "1"},
      {"id": "pair", "code": "def f(x):\n    return [x, (x, 'a')]", "input": "{'k': 2}",
       "output": "[{'k': 2}, ({'k': 2}, 'a')]"}])
  output_cases = {  # (task_id, completion) -> passes
      ("identity", "1"): True,
      ("identity", "1.0"): True,
      ("identity", "2"): False,
      ("identity", ALWAYS_EQUAL): False,
      ("identity", "type('I', (int,), {'__eq__': lambda self, other: True})(5)"): False,
      ("pair", "[dict(k=2), ({'k': 2}, 'a')]"): True,
      ("pair", f"[{{'k': 2}}, ({{'k': 2}}, {ALWAYS_EQUAL})]"): False,
      ("pair", f"[{{'k': {ALWAYS_EQUAL}}}, ({{'k': 2}}, 'a')]"): False,
      ("identity", "(setattr(__import__('sys').modules['__main__'], '_same', "
                   "lambda *a: True), 2)[1]"): False,
  }
  input_cases = {
      ("identity", "1"): True,
      ("identity", ALWAYS_EQUAL): False,
      ("pair", "type('D', (dict,), {'__eq__': lambda self, other: True})()"): False,
      ("pair", "{'k': 2}"): True,
  }
  for name, cases in (("cruxeval-o", output_cases), ("cruxeval-i", input_cases)):
    samples = [{"task_id": t, "completion": c} for t, c in cases]
    _, results = score(tmp_path, name, data, samples, name)
    with open(tmp_path / name / "results.jsonl", encoding="utf-8") as f:
      rows = [json.loads(line) for line in f]
    verdicts = {(r["task_id"], r["completion"]): r["passed"] for r in rows}
    assert verdicts == cases, {k: (r["failure"], r["stderr_tail"][-300:])
                               for k, r in zip(cases, rows) if r["passed"] != cases[k]}
    assert all(r["failure"] == "assertion" for r in rows if not r["passed"]), rows


def test_a_missing_file_is_a_clear_error():
  with pytest.raises(FileNotFoundError, match="cruxeval.jsonl"):
    CRUXEvalOutput().load(None)
  with pytest.raises(FileNotFoundError, match="no file"):
    CRUXEvalInput().load("/nonexistent/cruxeval.jsonl")
