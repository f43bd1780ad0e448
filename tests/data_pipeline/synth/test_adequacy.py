"""data_pipeline.synth.adequacy: exercises whose tests kill too few mutants of their
solution are rejected as weak_tests (in the sandbox, end to end through synthesize),
real tests pass, timeouts and crashes are left out of the score, and no mutant reaches
the host."""

import json
import os

import pytest

from data_pipeline.synth import ExerciseOptions, adequacy, gates, mutants, sandbox_for
from data_pipeline.synth import prompts, synthesize, topics
from data_pipeline.synth.generate import sample_id
from phi_jax.llm import LLMClient, LLMConfig
from tests.data_pipeline.synth.teacher import asked_name, user_text
from tests.fake_openai import FakeOpenAI, Reply
from tests.fake_openai import TEST_KEY_ENV as KEY_ENV

pytestmark = pytest.mark.usefixtures("api_key")

FUNCTION = '''def {name}(values: list[int], limit: int) -> int:
    """Sum the positive values of `values`, but return at most `limit`.
{doctests}    """
    total = 0
    for v in values:
        if v > 0:
            total += v
    return min(total, limit)
'''
DOCTESTS = "\n    >>> {name}([1, 2], 10)\n    3\n    >>> {name}([5, 7], 10)\n    10\n"
REAL_ASSERTS = ("assert {name}([3, -4, 2], 100) == 5\nassert {name}([], 3) == 0\n"
                "assert {name}([4, 4], 8) == 8\nassert {name}([0, 1], 5) == 1\n")
WEAK_ASSERTS = ("assert {name}([1], 1) is not None\nassert isinstance({name}([], 2), int)\n"
                "assert {name}([2], 5) >= 0\n")
MARKER = "/tmp/phi_jax_mutant_escape_marker"


def exercise(name: str, strong: bool) -> str:
  doctests = DOCTESTS.format(name=name) if strong else ""
  asserts = (REAL_ASSERTS if strong else WEAK_ASSERTS).format(name=name)
  return f"```python\n{FUNCTION.format(name=name, doctests=doctests)}\n{asserts}```\n"


def is_strong(messages) -> bool:
  return len(user_text(messages)) % 2 == 0


def respond(request):
  messages = request.body["messages"]
  return Reply(exercise(asked_name(messages), is_strong(messages)))


@pytest.fixture(scope="module")
def sandbox():
  return sandbox_for(ExerciseOptions(timeout_s=3.0))


def test_weak_tests_are_rejected_real_tests_pass_and_the_report_summarises_them(
    sandbox, tmp_path):
  cfg = {"seed": 5, "exercises": {"count": 6, "timeout_s": 3.0, "mutants": 8,
                                  "min_mutation_score": 0.6, "mutant_timeout_s": 1.0}}
  strong = {}
  for index in range(6):
    messages = prompts.messages("exercises", topics.draw("exercises", 5, index))
    strong[sample_id("exercises", 5, index)] = is_strong(messages)
  assert set(strong.values()) == {True, False}  # the seed plants both kinds
  with FakeOpenAI(respond) as server:
    client = LLMClient(LLMConfig(model="teacher", base_url=server.url, api_key_env=KEY_ENV,
                                 max_concurrency=4, cache_dir=str(tmp_path / "cache")))
    out = str(tmp_path / "out")
    summary = synthesize(cfg, out, client, sandbox, progress=False)
  accepted = {json.loads(line)["id"]: json.loads(line)
              for line in open(os.path.join(out, "exercises.jsonl"))}
  rejected = {json.loads(line)["id"]: json.loads(line)
              for line in open(os.path.join(out, "rejected.jsonl"))}
  for sample, good in strong.items():
    if good:
      assert sample in accepted, rejected.get(sample)
      mutation = accepted[sample]["meta"]["mutation"]
      assert mutation["score"] >= 0.6 and mutation["control"] == "survived"
      assert mutation["killed"] + mutation["survived"] <= mutation["mutants"] <= 8
    else:
      assert rejected[sample]["gate"] == "weak_tests", rejected.get(sample)
      assert "surviving:" in rejected[sample]["reason"]
      assert rejected[sample]["meta"]["mutation"]["score"] < 0.6
  assert summary["exercises"]["rejected_by_gate"] == {
      "weak_tests": sum(not good for good in strong.values())}
  report = json.load(open(os.path.join(out, "diversity.json")))["generators"]["exercises"]
  adequacy_report = report["test_adequacy"]
  assert adequacy_report["tested"] == 6 == adequacy_report["measured"]
  assert adequacy_report["weak_tests"] == sum(not good for good in strong.values())
  assert "Test adequacy: 6 exercises mutation-tested" in open(
      os.path.join(out, "diversity.md")).read()
  # a rerun takes the stored results: no mutant runs again
  stored = open(os.path.join(out, "raw", "mutation.jsonl")).read()
  with FakeOpenAI(respond) as server:
    client = LLMClient(LLMConfig(model="teacher", base_url=server.url, api_key_env=KEY_ENV,
                                 cache_dir=str(tmp_path / "cache")))
    assert synthesize(cfg, out, client, sandbox, progress=False)["exercises"] == {
        k: summary["exercises"][k] for k in summary["exercises"]}
  assert open(os.path.join(out, "raw", "mutation.jsonl")).read() == stored


def test_timeouts_and_crashes_are_left_out_and_mutants_never_escape_the_sandbox(sandbox):
  if os.path.exists(MARKER):
    os.remove(MARKER)
  source = f'''def walk(n: int) -> int:
    """Count up to n, one step at a time.

    >>> walk(3)
    3
    """
    import os
    if n < -10 ** 6:
        os._exit(3)
    if n > 10 ** 6:
        with open({MARKER!r}, "w") as f:
            f.write("escaped")
        return 0
    i = 0
    while i < n:
        i += 1
    return i
'''
  text = f"```python\n{source}\nassert walk(5) == 5\nassert walk(0) == 0\n```"
  checked = gates.check_exercise(text, "stop")
  made = mutants.mutants(checked.parts.function, seed=0, limit=100)
  descriptions = [m.description for m in made]
  assert "condition line 8: condition negated" in descriptions  # os._exit: a crash
  assert "condition line 10: condition negated" in descriptions  # writes the marker
  assert "operator line 16: + -> -" in descriptions  # an endless loop
  result, = adequacy.mutation_scores(sandbox, [(checked.parts.function, checked.program())],
                                     seed=0, limit=100, mutant_timeout_s=0.5)
  assert result.mutants == len(made) and sum(result.counts.values()) == len(made)
  assert result.counts["crashed"] >= 1 and result.counts["timeout"] >= 1
  assert result.control == "survived" and result.ran == len(made) - sum(
      result.counts.get(s, 0) for s in ("timeout", "memory", "crashed"))
  assert result.score == result.counts["killed"] / result.ran
  if sandbox.isolation in ("bwrap", "unshare"):  # private /tmp
    assert not os.path.exists(MARKER)


def test_an_exercise_whose_tests_fail_in_the_driver_is_not_measured(sandbox):
  # passes on its own, fails in the driver (whose timer it finds):
  # the control fails, so no mutant is credited with a kill it did not make
  text = ('```python\ndef first(values: list[int]) -> int:\n    """Return the first value '
          'of a non-empty list.\n\n    >>> first([4, 5])\n    4\n    """\n'
          '    import signal\n    if signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL:\n'
          '        raise RuntimeError("a timer is set")\n    return values[0] + 0\n\n'
          'assert first([7]) == 7\n```')
  checked = gates.check_exercise(text, "stop", min_tests=2)
  assert gates.verify_exercises(sandbox, [checked]) == [None]
  result, = adequacy.mutation_scores(sandbox, [(checked.parts.function, checked.program())],
                                     seed=0, limit=4, mutant_timeout_s=1.0)
  assert result.control == "killed" and result.score is None and not result.counts
  assert adequacy.weak_tests(result, 1.0) is None
  # a function with no mutation site: nothing runs, nothing is measured
  bare = gates.check_exercise('```python\ndef reset(record: dict) -> None:\n    """Remove '
                              'every field of a record, in place.\n\n    >>> r = {"a": 1}\n'
                              '    >>> reset(r)\n    >>> r\n    {}\n    """\n'
                              '    record.clear()\n\nassert reset({"b": 2}) is None\n```',
                              "stop")
  assert mutants.site_count(bare.parts.function) == 0
  result, = adequacy.mutation_scores(sandbox, [(bare.parts.function, bare.program())],
                                     seed=0, limit=4, mutant_timeout_s=1.0)
  assert (result.mutants, result.control, result.score) == (0, adequacy.NOT_RUN, None)
