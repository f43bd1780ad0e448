"""data_pipeline.synth.mutants: every operator, one change per mutant (checked with
difflib and by running the mutants against the original), seeded and bounded."""

import ast
import difflib

from data_pipeline.synth import mutants

SOURCE = '''def score(values: list[int], bonus: int = 3) -> int:
    """Sum the positive values, doubled, plus a bonus when any is even.

    >>> score([1, 2])
    9
    """
    total = 0
    even = False
    for v in values:
        if v > 0 and not v == 7:
            total += v * 2
        even = even or v % 2 == 0
    kept = [v for v in values if v in (1, 2, 3)]
    return -total if bonus < 0 else total + (bonus if even else 0) + len(kept) // 10
'''
KINDS = ("operator", "comparison", "boolean", "constant", "condition", "unary", "return")


def test_every_operator_kind_makes_one_change_and_keeps_the_docstring():
  found = mutants.mutants(SOURCE, seed=0, limit=1000)
  assert len(found) == mutants.site_count(SOURCE)  # every site, each a distinct mutant
  assert {m.description.split()[0] for m in found} == set(KINDS)
  original = mutants.unmutated(SOURCE)
  namespace: dict = {}
  exec(original, namespace)  # pylint: disable=exec-used
  inputs = [([1, 2],), ([0, -3, 7],), ([5, 4, 3],), ([2],), ([2], -1), ([], 0)]
  differs = 0
  for mutant in found:
    assert mutant.source != original
    tree = ast.parse(mutant.source).body[0]
    assert ast.get_docstring(tree) == ast.get_docstring(ast.parse(SOURCE).body[0])
    changed = [line for line in difflib.ndiff(original.splitlines(), mutant.source.splitlines())
               if line.startswith(("- ", "+ "))]
    assert len(changed) == 2, (mutant.description, changed)  # one line out, one line in
    mutated: dict = {}
    exec(mutant.source, mutated)  # pylint: disable=exec-used
    for args in inputs:
      try:
        differs += mutated["score"](*args) != namespace["score"](*args)
      except Exception:  # pylint: disable=broad-except
        differs += 1
        break
  assert differs >= len(found) // 2  # most mutants change the behaviour on these inputs
  descriptions = {m.description for m in found}
  assert "comparison line 10: > -> >=" in descriptions
  assert "boolean line 10: and -> or" in descriptions
  assert "return line 14: return value -> None" in descriptions
  assert "unary line 14: unary - removed" in descriptions


def test_the_draw_is_seeded_bounded_and_a_function_of_the_source():
  first = mutants.mutants(SOURCE, seed=1, limit=5)
  assert len(first) == 5 and first == mutants.mutants(SOURCE, seed=1, limit=5)
  assert first != mutants.mutants(SOURCE, seed=2, limit=5)
  everything = {m.source for m in mutants.mutants(SOURCE, seed=1, limit=1000)}
  assert {m.source for m in first} <= everything
  assert mutants.mutants("def f(x):\n    '''Doc.'''\n    return x\n", limit=5) == [
      mutants.Mutant("return line 3: return value -> None",
                     "def f(x):\n    \"\"\"Doc.\"\"\"\n    return None\n")]
