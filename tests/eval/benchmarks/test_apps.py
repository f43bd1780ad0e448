"""APPS on a small file in the release's format (codeparrot/apps JSONL), written here."""

import json

import pytest

from eval.benchmarks import APPS, APPSInterview, get_benchmark
from eval.benchmarks import _apps_check
from eval.sandbox import Sandbox
from tests.eval.benchmarks.helpers import (LIMITS, assert_right_pass_and_wrong_fail, score,
                                           write_jsonl)


STDIN_RIGHT = ("import sys\nfor line in sys.stdin:\n    a, b = map(int, line.split())\n"
               "    print(a + b)\n")
CALL_RIGHT = "def largest(xs):\n    return max(xs), min(xs)\n"
CLASS_RIGHT = ("class Solution:\n    def twoSum(self, nums, target):\n"
               "        seen = {}\n        for i, x in enumerate(nums):\n"
               "            if target - x in seen:\n                return [seen[target - x], i]\n"
               "            seen[x] = i\n")
ROWS = [
    {"problem_id": 0, "difficulty": "introductory", "url": "", "starter_code": "",
     "question": "Print the sum of the two integers on each line.",
     "solutions": json.dumps([STDIN_RIGHT]),
     "input_output": json.dumps({"inputs": ["1 2\n3 4\n", "10 -10\n"],
                                 "outputs": ["3\n7\n", "0\n"]})},
    {"problem_id": 1, "difficulty": "interview", "url": "", "starter_code": "def largest(xs):",
     "question": "Return the largest and smallest element.",
     "solutions": json.dumps([CALL_RIGHT]),
     "input_output": json.dumps({"fn_name": "largest", "inputs": [[[1, 5, 3]], [[-2]]],
                                 "outputs": [[[5, 1]], [[-2, -2]]]})},
    {"problem_id": 2, "difficulty": "competition", "url": "",
     "starter_code": "class Solution:\n    def twoSum(self, nums, target):",
     "question": "Return the indices of the two numbers that add up to target.",
     "solutions": json.dumps([CLASS_RIGHT]),
     "input_output": json.dumps({"fn_name": "twoSum", "inputs": [[[2, 7, 11, 15], 9]],
                                 "outputs": [[0, 1]]})},
]
WRONG = {
    "APPS/0": STDIN_RIGHT.replace("a + b", "a - b"),
    "APPS/1": "def largest(xs):\n    return max(xs), max(xs)\n",
    "APPS/2": "class Solution:\n    def twoSum(self, nums, target):\n        return [1, 0]\n",
}



@pytest.fixture
def data(tmp_path):
  return write_jsonl(tmp_path / "test.jsonl", ROWS)



def test_right_and_wrong_solutions_of_both_formats(tmp_path, data):
  problems = APPS().load(data)
  right = [{"task_id": p.task_id, "completion": p.canonical_solution} for p in problems]
  # stdin read by input() until the end, and exit() ending a test case, also pass
  right.append({"task_id": "APPS/0", "completion": (
      "while True:\n    try:\n        a, b = map(int, input().split())\n"
      "    except EOFError:\n        exit()\n    print(a + b, end='  \\n')\n")})
  assert len(right) == 4
  assert_right_pass_and_wrong_fail(tmp_path, "apps", data, right, WRONG)


def test_the_original_release_folders_read_as_the_jsonl(tmp_path, data):
  for row in ROWS:
    folder = tmp_path / "test" / f"{row['problem_id']:04d}"
    folder.mkdir(parents=True)
    (folder / "question.txt").write_text(row["question"])
    (folder / "input_output.json").write_text(row["input_output"])
    (folder / "solutions.json").write_text(row["solutions"])
    (folder / "metadata.json").write_text(json.dumps({"difficulty": row["difficulty"],
                                                      "url": ""}))
    if row["starter_code"]:
      (folder / "starter_code.py").write_text(row["starter_code"])
  assert APPS().load(str(tmp_path / "test")) == APPS().load(data)
  assert [p.task_id for p in APPSInterview().load(str(tmp_path / "test"))] == ["APPS/1"]
  (tmp_path / "test" / "0002" / "input_output.json").unlink()
  with pytest.raises(ValueError, match="0002: no input_output.json"):
    APPS().load(str(tmp_path / "test"))


def test_difficulty_splits(data):
  assert [p.task_id for p in get_benchmark("apps-introductory").load(data)] == ["APPS/0"]
  assert [p.task_id for p in APPSInterview().load(data)] == ["APPS/1"]
  assert [p.task_id for p in get_benchmark("apps-competition").load(data)] == ["APPS/2"]
  assert len(APPS().load(data)) == 3


def test_prompt_is_the_papers(data):
  stdin, call, _ = APPS().load(data)
  assert stdin.prompt == ("\nQUESTION:\nPrint the sum of the two integers on each line."
                          "\nUse Standard Input format\nANSWER:\n")
  assert call.prompt.endswith("\ndef largest(xs):\nUse Call-Based format\nANSWER:\n")


def test_the_time_limit_applies_per_test_case(data):
  problem = APPS().load(data)[0]
  slow = "import time\ntime.sleep(1.0)\n" + STDIN_RIGHT
  quick = "import time\ntime.sleep(0.05)\n" + STDIN_RIGHT
  outcomes = Sandbox(LIMITS).run_many([APPS(time_limit_s=0.4).program(problem, slow),
                                       APPS(time_limit_s=0.4).program(problem, quick),
                                       APPS().program(problem, slow)], workers=1)
  assert outcomes[0].failure == "exception:TimeLimitExceeded"
  assert outcomes[1].passed and outcomes[2].passed  # APPS's 4 s default


def test_output_comparison():
  assert _apps_check.stdout_matches("1 2\n3\n\n", "1 2  \n3")
  assert _apps_check.stdout_matches("1  2 3", "1 2\n3")  # token by token
  assert _apps_check.stdout_matches("0.3333333", "0.33333333")  # as numbers
  assert not _apps_check.stdout_matches("0.34", "0.33")
  assert not _apps_check.stdout_matches("1 2", "1 2 3")
  assert _apps_check.return_matches((5, 1), [5, 1])  # tuples compare as lists
  assert _apps_check.return_matches(7, [7])  # outputs stored wrapped in a list
  assert not _apps_check.return_matches(6, [7])


def test_bad_rows_are_named(tmp_path):
  bad = write_jsonl(tmp_path / "bad.jsonl", [dict(ROWS[0], input_output="{oops")])
  with pytest.raises(ValueError, match="bad.jsonl:1: input_output is not valid JSON"):
    APPS().load(bad)
  bad = write_jsonl(tmp_path / "bad.jsonl", [dict(ROWS[0], difficulty="easy")])
  with pytest.raises(ValueError, match="bad.jsonl:1: difficulty 'easy'"):
    APPS().load(bad)
  bad = write_jsonl(tmp_path / "bad.jsonl", [dict(ROWS[0], input_output=json.dumps(
      {"inputs": ["1 2"], "outputs": []}))])
  with pytest.raises(ValueError, match="equally long"):
    APPS().load(bad)


def test_the_sandbox_gives_a_program_every_test_cases_time_limit(tmp_path):
  """A solution within the 4 s limit on each of 8 test cases, 3.2 s in all, passes even
  where the evaluator's per-program timeout is 2 s: the sandbox gets what the test cases
  may take, (4 s + 1 s) per case + 5 s."""
  row = dict(ROWS[0], input_output=json.dumps({"inputs": ["1 2\n"] * 8,
                                               "outputs": ["3\n"] * 8}))
  data = write_jsonl(tmp_path / "test.jsonl", [row])
  problem = APPS().load(data)[0]
  assert APPS().timeout_s(problem) == 45.0
  slow = "import time\ntime.sleep(0.4)\n" + STDIN_RIGHT
  report, results = score(tmp_path, "apps", data, [{"task_id": "APPS/0", "completion": slow}],
                          "slow", timeout_s=2.0)
  assert results["APPS/0"]["passed"], results["APPS/0"]
  assert "wall 45.0s" in report["sandbox"]["in_force"]
