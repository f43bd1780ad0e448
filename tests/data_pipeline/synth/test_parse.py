"""data_pipeline.synth.parse: code out of prose, fences and bare answers; exercise parts."""

import pytest

from data_pipeline.synth import parse
from data_pipeline.synth.parse import Rejected

FUNCTION = '''def add(a: int, b: int) -> int:
    """Return a + b.

    >>> add(1, 2)
    3
    >>> add(-1, 1)
    0
    """
    return a + b
'''


def test_fenced_blocks_of_every_kind_are_found_in_order():
  text = ("Intro.\n\n```python\nx = 1\n```\nMore.\n~~~py\ny = 2\n~~~\n\n```\nz = 3\n```\n"
          "Output:\n```\n3 apples\n```\n````text\n```python\nnot a block\n```\n````\n"
          "```python\ndef cut(")
  blocks = parse.code_blocks(text)
  assert [(b.language, b.code) for b in blocks] == [
      ("python", "x = 1\n"), ("py", "y = 2\n"), ("", "z = 3\n"), ("", "3 apples\n"),
      ("text", "```python\nnot a block\n```\n"), ("python", "def cut(\n")]
  assert [b.line for b in blocks] == [3, 7, 11, 15, 18, 23]
  assert [b.closed for b in blocks] == [True] * 5 + [False]  # a truncated last fence
  # Untagged blocks count as Python only when they parse; tagged ones always do.
  python = parse.python_blocks(text)
  assert [b.code for b in python] == ["x = 1\n", "y = 2\n", "z = 3\n", "def cut(\n"]


def test_a_repl_transcript_block_is_the_statements_it_runs():
  block = parse.CodeBlock("pycon", ">>> x = [3, 1]\n>>> sorted(x)\n[1, 3]\n>>> for i in x:\n"
                          "...     print(i)\n3\n1\n", 1, True)
  assert parse.block_source(block) == "x = [3, 1]\nsorted(x)\nfor i in x:\n    print(i)\n"
  assert parse.parses(parse.block_source(block))


def test_bare_code_is_the_longest_parsing_run_from_the_first_code_line():
  text = "Here you go:\n\n" + FUNCTION + "\nassert add(2, 2) == 4\n\nThis adds numbers."
  assert parse.bare_code(text) == FUNCTION + "\nassert add(2, 2) == 4\n"
  assert parse.bare_code("No code here, only words.") is None
  assert parse.bare_code("def broken(:\n  pass\n") is None


def test_an_exercise_is_one_function_its_doctests_and_asserts():
  answer = (f"Sure!\n\n```python\n{FUNCTION}```\n\nAnd tests:\n\n```python\n"
            f"assert add(2, 2) == 4\nassert add(0, 0) == 0\n\nif __name__ == '__main__':\n"
            f"    import doctest\n    doctest.testmod()\n    assert add(1, 1) == 2\n```\n")
  parts = parse.extract_exercise(answer)
  assert parts.function == FUNCTION and parts.name == "add"
  assert parts.doctests == 2
  assert parts.asserts == ("assert add(2, 2) == 4", "assert add(0, 0) == 0",
                           "assert add(1, 1) == 2")
  assert parts.tests == 5
  bare = parse.extract_exercise(FUNCTION + "\nassert add(2, 2) == 4\n")
  assert bare.function == FUNCTION and bare.asserts == ("assert add(2, 2) == 4",)


@pytest.mark.parametrize("answer, gate, message", [
    ("Just add them together.", "no_code", "no Python code"),
    ("```python\ndef f(:\n    pass\n```", "syntax", "does not parse: line 1"),
    ("```python\nprint(1)\n```", "structure", "line 1: a top-level Expr"),
    (f"```python\n{FUNCTION}\nx = add(1, 2)\n```", "structure", "top-level Assign"),
    (f"```python\n{FUNCTION}\n{FUNCTION.replace('add', 'plus')}```", "structure",
     "found 2 \\(add, plus\\)"),
    ("```python\nimport math\nassert math.pi > 3\n```", "structure", "top-level Import"),
    ("```python\nassert 1 == 1\n```", "structure", "found 0 \\(none\\)"),
])
def test_answers_that_are_not_an_exercise_are_refused_with_gate_and_reason(answer, gate,
                                                                              message):
  with pytest.raises(Rejected, match=message) as info:
    parse.extract_exercise(answer)
  assert info.value.gate == gate
