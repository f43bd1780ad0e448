"""data_pipeline.synth.gates: textbook and exercise gates, the sandboxed verification of
an exercise's own tests, and exact/near duplicates (checked by brute-force Jaccard)."""

import os

import pytest

from data_pipeline.dedup import jaccard, shingles
from data_pipeline.synth import gates
from data_pipeline.synth.parse import Rejected
from eval.sandbox import Sandbox, SandboxLimits

PROSE = " ".join(f"word{i}" for i in range(60))
EXERCISE = '''```python
def clamp_scores(values: list[int], low: int, high: int) -> list[int]:
    """Clamp every score into [low, high], keeping the order.

    >>> clamp_scores([5, -2, 12], 0, 10)
    [5, 0, 10]
    >>> clamp_scores([], 0, 1)
    []
    """
    return [min(max(v, low), high) for v in values]

assert clamp_scores([1], 2, 3) == [2]
assert clamp_scores([4, 9], 0, 5) == [4, 5]
```'''
MARKER = "/tmp/phi_jax_synth_gate_marker"


@pytest.fixture(scope="module")
def sandbox():
  return Sandbox(SandboxLimits(timeout_s=3.0, cpu_s=3, memory_mb=1024))


def rejection(call, *args, **kwargs) -> Rejected:
  with pytest.raises(Rejected) as info:
    call(*args, **kwargs)
  return info.value


def test_textbook_gates():
  good = f"{PROSE}\n\n```python\nprint(sum([1, 2]))\n```\n\n```\n3\n```\n"
  gates.check_textbook(good, "stop")  # an untagged output block is not code
  assert rejection(gates.check_textbook, good, "length").gate == "truncated"
  assert rejection(gates.check_textbook, PROSE, "stop").gate == "no_code"
  broken = rejection(gates.check_textbook, good.replace("print(sum([1, 2]))", "def f(:"),
                     "stop")
  assert broken.gate == "syntax" and "the code block at line 3" in broken.reason
  short = rejection(gates.check_textbook, "A few words.\n```python\nx = 1\n```", "stop")
  assert short.gate == "too_short" and "3 words of prose" in short.reason
  repl = f"{PROSE}\n```python\n>>> x = 2\n>>> x * 3\n6\n```\n"
  gates.check_textbook(repl, "stop")  # a REPL transcript is checked as what it runs


def test_exercise_static_gates_split_into_prompt_and_solution():
  checked = gates.check_exercise(EXERCISE, "stop")
  assert checked.prompt.startswith("def clamp_scores(") and checked.prompt.endswith('"""\n')
  assert checked.solution == "    return [min(max(v, low), high) for v in values]\n"
  assert checked.parts.tests == 4
  assert rejection(gates.check_exercise, EXERCISE, "length").gate == "truncated"
  outside = EXERCISE.replace("return [", "return sorted_by_key(values) or [")
  assert rejection(gates.check_exercise, outside, "stop").reason == \
      "not_self_contained:sorted_by_key"
  trivial = EXERCISE.replace("return [min(max(v, low), high) for v in values]", "pass")
  assert rejection(gates.check_exercise, trivial, "stop").reason == "trivial_body"
  undocumented = ("```python\ndef f(x):\n    return x + 1\n\nassert f(1) == 2\n"
                  "assert f(2) == 3\n```")
  assert rejection(gates.check_exercise, undocumented, "stop").reason == "no_docstring"
  untested = rejection(gates.check_exercise, EXERCISE, "stop", min_tests=5)
  assert untested.gate == "tests" and "2 doctest example(s) and 2 assert(s)" in untested.reason


def test_an_exercise_passing_its_own_tests_is_accepted(sandbox):
  assert gates.verify_exercises(sandbox, [gates.check_exercise(EXERCISE, "stop")]) == [None]


def test_failing_doctests_asserts_loops_and_escapes_are_rejected_with_their_reason(sandbox):
  if os.path.exists(MARKER):
    os.remove(MARKER)
  doctest_fail = EXERCISE.replace("[5, 0, 10]", "[5, 0, 11]")
  assert_fail = EXERCISE.replace("== [4, 5]", "== [4, 9]")
  loops = EXERCISE.replace("    return [", "    while True:\n        pass\n    return [")
  escapes = EXERCISE.replace(
      "    return [",
      f"    import os\n    with open({MARKER!r}, 'w') as f:\n        f.write('out')\n"
      f"    os._exit(0)\n    return [")
  crashes = EXERCISE.replace("return [", "return 1 / 0 or [")
  programs = [gates.check_exercise(text, "stop")
              for text in (doctest_fail, assert_fail, loops, escapes, crashes)]
  found = gates.verify_exercises(sandbox, programs)
  assert found[0].gate == "doctest"
  assert "clamp_scores([5, -2, 12], 0, 10)" in found[0].reason
  assert "Expected: | [5, 0, 11] | Got: | [5, 0, 10]" in found[0].reason
  assert found[1].gate == "asserts" and "assert clamp_scores([4, 9], 0, 5) == [4, 9]" in \
      found[1].reason
  assert found[2].gate == "execution" and found[2].reason.startswith("timeout")
  # The doctest run catches the exception of the open() or os._exit ends the process
  # early: either way it is not a pass, and nothing was written outside the sandbox.
  assert found[3] is not None and found[3].gate in ("doctest", "execution")
  if sandbox.isolation in ("bwrap", "unshare"):  # private /tmp
    assert not os.path.exists(MARKER)
  assert found[4].gate == "doctest" and "ZeroDivisionError" in found[4].reason


def test_duplicates_exact_near_and_against_curated_match_brute_force_jaccard():
  base = " ".join(f"token{i}" for i in range(200))
  near = base.replace("token100", "changed")  # 5 of 196 shingles differ
  far = " ".join(f"other{i}" for i in range(200))
  assert jaccard(shingles(base), shingles(near)) > 0.9
  gate = gates.DuplicateGate(threshold=0.8, num_perm=128)
  assert gate.check("a", base) is None
  exact = gate.check("b", "  " + base.replace(" ", "\n") + "\n")
  assert exact.gate == "duplicate" and exact.reason == "exact duplicate of a"
  near_dup = gate.check("c", near)
  assert near_dup.reason.startswith("near duplicate (Jaccard 0.9") and near_dup.reason.endswith(
      "of a")
  assert gate.check("d", far) is None
  curated = [("cur/1", "unrelated words " * 30), ("cur/2", far + " tail"), ("cur/3", base)]
  found = gate.against(iter(curated))
  assert set(found) == {"a", "d"}
  assert found["a"].reason == "exact duplicate of curated cur/3"
  assert found["d"].reason.startswith("near duplicate") and found["d"].reason.endswith(
      "of curated cur/2")
