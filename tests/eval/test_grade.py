"""eval.grade: the problems file, verdict parsing, and grading against a fake server."""

import doctest
import json
import os

import pytest

from eval import grade as grade_lib
from eval.grade import ProblemsError
from phi_jax.llm import LLMClient, LLMConfig
from tests.fake_openai import CHAT_PATH
from tests.fake_openai import TEST_KEY_ENV as KEY_ENV
from tests.fake_openai import TEST_SECRET as SECRET

pytestmark = pytest.mark.usefixtures("api_key")  # `server`: a FakeOpenAI (tests/fake_openai.py)


def grader(server, tmp_path, **fields):
  values = dict(base_url=server.url, model="grader-model", api_key_env=KEY_ENV,
                max_retries=1, backoff_initial_s=0.01, timeout_s=5,
                cache_dir=str(tmp_path / "cache"), parse_retries=2)
  values.update(fields)
  return LLMClient(LLMConfig(**values))


# -- the problems file ------------------------------------------------------------------


def test_the_bundled_problems_are_valid_and_their_references_pass_their_examples():
  problems = grade_lib.load_problems()
  assert len(problems) >= 12
  assert len({p.task_id for p in problems}) == len(problems)
  for problem in problems:
    assert list(problem.rubric)[:1] == ["10"] and {"10", "5", "0"} <= set(problem.rubric)
    assert problem.reference and problem.entry_point
    assert problem.prompt.startswith(f"def {problem.entry_point}(")
    assert ">>> " in problem.prompt, f"{problem.task_id}: the docstring shows no example"
    namespace = {}
    exec(problem.reference, namespace)  # pylint: disable=exec-used
    tests = doctest.DocTestFinder().find(namespace[problem.entry_point], globs=namespace)
    runner = doctest.DocTestRunner()
    for test in tests:
      runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.attempted and not results.failed, problem.task_id


GOOD = {"task_id": "t/0", "prompt": "def f():\n", "rubric": {"10": "a", "5": "b", "0": "c"}}


@pytest.mark.parametrize("line, message", [
    ("{not json", r":2: invalid JSON"),
    ("[1, 2]", r":2: expected a JSON object"),
    (json.dumps({**GOOD, "task_id": ""}), r":2: field 'task_id'"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "prompt"}), r":2: field 'prompt'"),
    (json.dumps({**GOOD, "rubric": "be nice"}), r":2: field 'rubric': required"),
    (json.dumps({**GOOD, "rubric": {"10": "a", "0": "c"}}), r":2: field 'rubric'.*\['5'\]"),
    (json.dumps({**GOOD, "rubric": {**GOOD["rubric"], "11": "x"}}), r":2: field 'rubric'.*'11'"),
    (json.dumps({**GOOD, "rubric": {**GOOD["rubric"], "5": ""}}), r":2: field 'rubric.5'"),
    (json.dumps({**GOOD, "refrence": "x"}), r":2: unknown field\(s\) \['refrence'\]"),
    (json.dumps({**GOOD, "reference": "def g(): pass"}), r":2: field 'reference'"),
    (json.dumps(GOOD), r":2: field 'task_id': 't/0' already used on line 1"),
])
def test_bad_problem_lines_are_named_by_file_line_and_field(tmp_path, line, message):
  path = tmp_path / "problems.jsonl"
  path.write_text(json.dumps(GOOD) + "\n" + line + "\n")
  with pytest.raises(ProblemsError, match=r"problems\.jsonl" + message):
    grade_lib.load_problems(str(path))


def test_empty_problem_file_and_bad_solution_lines(tmp_path):
  (tmp_path / "empty.jsonl").write_text("\n")
  with pytest.raises(ProblemsError, match="no problems"):
    grade_lib.load_problems(str(tmp_path / "empty.jsonl"))
  (tmp_path / "samples.jsonl").write_text(
      json.dumps({"task_id": "t/0", "completion": "  pass\n"}) + "\n" +
      json.dumps({"task_id": "t/0", "completion": "x", "solution": "y"}) + "\n")
  with pytest.raises(ProblemsError, match=r"samples\.jsonl:2: needs exactly one of"):
    grade_lib.load_solutions(str(tmp_path / "samples.jsonl"))


# -- verdicts ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, score", [
    ('{"score": 7, "reason": "ok"}', 7),
    ('  {"reason": "perfect", "score": 10}\n', 10),
    ('```json\n{"score": 0, "reason": "wrong problem"}\n```', 0),
])
def test_parse_verdict_accepts_exact_json(text, score):
  assert grade_lib.parse_verdict(text)["score"] == score


@pytest.mark.parametrize("text", [
    "I would give this 8/10.",
    'Score: {"score": 8, "reason": "x"}',
    '{"score": 8}',
    '{"score": 8, "reason": "x", "confidence": 0.9}',
    '{"score": 11, "reason": "x"}',
    '{"score": 7.5, "reason": "x"}',
    '{"score": "8", "reason": "x"}',
    '{"score": true, "reason": "x"}',
    '{"score": 8, "reason": " "}',
    "[8]",
    "",
])
def test_parse_verdict_rejects_anything_else(text):
  with pytest.raises(ValueError):
    grade_lib.parse_verdict(text)


# -- grading ----------------------------------------------------------------------------


def verdict(score, reason="graded"):
  return json.dumps({"score": score, "reason": reason})


def scripted_grader(request):
  """Grades by markers in the student's code; PROSE never answers in the format, FLAKY
  only on the second try."""
  student = request.user_text.split("## The student's solution", 1)[1]
  if "# PROSE" in student:
    return "This solution deserves about a 6 out of 10."
  if "# FLAKY" in student and request.nth == 0:
    return "Score: 5"
  if "# FLAKY" in student:
    return verdict(5, "right idea, an off-by-one")
  if "# WRONG" in student:
    return verdict(1, "solves another problem")
  return verdict(10, "correct")


def test_grade_end_to_end(server, tmp_path, capsys):
  server.responder = scripted_grader
  problems = grade_lib.load_problems()[:3]
  solutions = grade_lib.reference_solutions(problems) + [
      {"task_id": problems[0].task_id, "completion": "    return text  # WRONG\n"},
      {"task_id": problems[1].task_id, "completion": "    return []  # FLAKY\n"},
      {"task_id": problems[2].task_id, "completion": "    return amounts  # PROSE\n"},
  ]
  out = str(tmp_path / "grades" / "grades.jsonl")
  report = grade_lib.grade(problems, solutions, grader(server, tmp_path), out, progress=False)

  t0, t1, t2 = (p.task_id for p in problems)
  assert report["num_samples"] == 6 and report["graded"] == 5 and report["ungraded"] == 1
  assert report["per_problem"][t0]["scores"] == [10, 1]
  assert report["per_problem"][t1]["scores"] == [10, 5]
  assert report["per_problem"][t2] == {"samples": 2, "graded": 1, "ungraded": 1,
                                       "scores": [10], "mean": 10.0}
  assert report["mean_score"] == pytest.approx(36 / 5)
  assert report["mean_problem_score"] == pytest.approx((5.5 + 7.5 + 10) / 3, abs=1e-4)
  (ungraded,) = report["ungraded_samples"]
  assert ungraded["task_id"] == t2 and "unusable answer after 3 attempt(s)" in ungraded["error"]
  # 6 samples; FLAKY asked twice, PROSE three times (parse_retries=2).
  assert server.count(CHAT_PATH) == 6 + 1 + 2

  with open(out) as f:
    lines = [json.loads(line) for line in f]
  assert len(lines) == 6
  by_sample = {(r["task_id"], r["sample"]): r for r in lines}
  assert by_sample[(t0, 1)]["result"] == {"score": 1, "reason": "solves another problem"}
  assert by_sample[(t2, 1)]["raw"].startswith("This solution deserves")
  assert "result" not in by_sample[(t2, 1)] and "error" in by_sample[(t2, 1)]

  with open(str(tmp_path / "grades" / "grades.summary.json")) as f:
    assert json.load(f) == report
  assert report["grader"] == {"model": "grader-model", "base_url": server.url}
  table = capsys.readouterr().out
  assert t0 in table and "all" in table and "5.50" in table and "1 0" not in table

  # The grader saw the problem, the rubric, the reference and the candidate.
  first = server.requests[0].body["messages"]
  assert first[0]["role"] == "system" and '"score"' in first[0]["content"]
  assert "## Rubric" in first[1]["content"] and "## A reference solution" in first[1]["content"]

  # A rerun pays nothing: every sample is in grades.jsonl (ungraded ones included).
  again = grade_lib.grade(problems, solutions, grader(server, tmp_path), out,
                          progress=False, print_table=False)
  assert again == report and server.count() == 9
  # A new results file is free from the cache, except for the ungraded sample: its
  # cached answer is malformed, so its two retries (which bypass the cache) are paid.
  grade_lib.grade(problems, solutions, grader(server, tmp_path), str(tmp_path / "b.jsonl"),
                  progress=False, print_table=False)
  assert server.count() == 9 + 2


def test_grade_resumes_and_regrades_changed_solutions(server, tmp_path):
  server.responder = scripted_grader
  problems = grade_lib.load_problems()[:2]
  solutions = [{"task_id": problems[0].task_id, "completion": "    pass\n"},
               {"task_id": problems[1].task_id, "completion": "    pass  # WRONG\n"}]
  out = str(tmp_path / "grades.jsonl")
  client = grader(server, tmp_path, cache_dir=None)
  grade_lib.grade(problems, solutions, client, out, progress=False, print_table=False)
  assert server.count() == 2
  solutions[1] = {"task_id": problems[1].task_id, "completion": "    return []\n"}
  report = grade_lib.grade(problems, solutions, client, out, progress=False, print_table=False)
  assert server.count() == 3  # only the changed sample was graded again
  assert [e["scores"] for e in report["per_problem"].values()] == [[10], [10]]


def test_grade_rejects_solutions_of_unknown_tasks(server, tmp_path):
  problems = grade_lib.load_problems()[:1]
  with pytest.raises(ProblemsError, match=r"solutions\[0\]: field 'task_id': 'nope'"):
    grade_lib.grade(problems, [{"task_id": "nope", "completion": ""}],
                    grader(server, tmp_path), str(tmp_path / "g.jsonl"), progress=False)
  assert server.count() == 0


def test_grade_writes_no_key(server, tmp_path):
  server.responder = scripted_grader
  problems = grade_lib.load_problems()[:2]
  grade_lib.grade(problems, grade_lib.reference_solutions(problems), grader(server, tmp_path),
                  str(tmp_path / "out" / "g.jsonl"), progress=False, print_table=False,
                  json_mode=True)
  assert server.requests[0].body["response_format"] == {"type": "json_object"}
  for root, _, names in os.walk(tmp_path):
    for name in names:
      with open(os.path.join(root, name), encoding="utf-8") as f:
        assert SECRET not in f.read(), os.path.join(root, name)
