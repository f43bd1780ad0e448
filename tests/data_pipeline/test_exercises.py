"""Tests of data_pipeline.exercises on planted functions and real standard-library code:
`prompt + solution` reproduces the function, and what is kept is self-contained (checked
independently with the bytecode's global loads)."""

import ast
import builtins
import dis
import textwrap
import types

import pytest

from data_pipeline import exercises, sources
from data_pipeline.records import Record, record_id
from data_pipeline.steps import StepStats

PLANTED = textwrap.dedent('''\
    import os
    from collections import Counter

    LIMIT = 10


    def word_counts(text, lower=True):
        """Counts the words of `text`, ignoring case when `lower` is true."""
        import collections
        words = text.lower().split() if lower else text.split()
        return dict(collections.Counter(words))


    def factorial(n: int) -> int:
        """Returns n! for a non-negative integer n (recursively)."""
        # the base case first
        if n < 2:
            return 1
        return n * factorial(n - 1)


    def pairs_summing_to(
            values,
            target,
    ):
        """All index pairs (i, j), i < j, whose values add up to target."""
        seen = {v: i for i, v in enumerate(values)}
        found = [(i, seen[target - v]) for i, v in enumerate(values)
                 if target - v in seen and seen[target - v] > i]
        key = lambda pair: (pair[0], pair[1])
        return sorted(found, key=key)


    def uses_module_global(path):
        """Joins path with the current directory (needs the module's os)."""
        return os.path.join(os.getcwd(), path)


    def uses_module_constant(x):
        """Clips x at the module's LIMIT constant, which is not in the body."""
        return min(x, LIMIT)


    def nested_uses_global(values):
        """Counts values with a helper whose Counter comes from the module."""
        def helper():
            return Counter(values)
        return helper()


    def no_docstring(x):
        return x


    def short_doc(x):
        """Id."""
        return x


    def only_pass(x):
        """Not written yet, only a placeholder for later."""
        raise NotImplementedError


    def sets_global(x):
        """Sets the module-level LIMIT from inside a function."""
        global LIMIT
        LIMIT = x
        return LIMIT


    def relative(x):
        """Reads something from a sibling module of the package."""
        from . import sibling
        return sibling.f(x)


    async def fetch(x):
        """Fetches x asynchronously, which is not an exercise."""
        return x


    @staticmethod
    def decorated(x):
        """A decorated function changes meaning with its decorator."""
        return x


    def inline(x): """An inline docstring on the def line itself."""; return x


    class Shape:
        """A shape."""

        def area(self):
            """The area of the shape, from its width and height."""
            return self.width * self.height

        @staticmethod
        def unit_square_area(side=1.0):
            """Area of a square with the given side length."""
            return side * side
    ''')


def planted_record(origin="/src/planted.py", text=PLANTED):
  return Record(id=record_id(origin), text=text, origin=origin, license="MIT")


def global_loads(code: types.CodeType) -> set[str]:
  """Names a code object (and every one nested in it) loads or stores as globals."""
  names = {i.argval for i in dis.get_instructions(code)
           if i.opname in ("LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL")}
  for const in code.co_consts:
    if isinstance(const, types.CodeType):
      names |= global_loads(const)
  return names


def function_code(source: str) -> types.CodeType:
  module = compile(source, "<exercise>", "exec")
  return next(c for c in module.co_consts if isinstance(c, types.CodeType))


def test_planted_functions_kept_and_rejected_for_the_right_reasons():
  stats = StepStats("exercises")
  mined = list(exercises.mine_exercises([planted_record()], stats=stats))
  assert [e.meta["function"] for e in mined] == [
      "word_counts", "factorial", "pairs_summing_to", "Shape.unit_square_area"]
  assert dict(stats.dropped) == {
      "not_self_contained": 3, "no_docstring": 1, "docstring_too_short": 1,
      "trivial_body": 1, "global_statement": 1, "relative_import": 1, "async": 1,
      "decorated": 1, "inline_docstring": 1, "method": 1}
  assert stats.records_in == stats.records_out + stats.dropped_total == 16
  assert stats.extra["files"] == 1
  examples = "\n".join(stats.examples)
  assert "planted.py:34 uses_module_global (os)" in examples
  assert "uses_module_constant (LIMIT)" in examples
  assert "nested_uses_global (Counter)" in examples


def test_prompt_and_solution_reproduce_the_function():
  mined = {e.meta["function"]: e for e in exercises.mine_exercises([planted_record()])}
  factorial = mined["factorial"]
  assert factorial.prompt == ('def factorial(n: int) -> int:\n'
                              '    """Returns n! for a non-negative integer n (recursively)."""\n')
  assert factorial.solution.startswith("    # the base case first\n    if n < 2:\n")
  assert factorial.origin == "/src/planted.py" and factorial.license == "MIT"
  assert factorial.meta["lineno"] == 14
  assert factorial.id == record_id("/src/planted.py", "factorial")
  # the multi-line signature is kept whole
  assert mined["pairs_summing_to"].prompt.startswith("def pairs_summing_to(\n        values,\n")
  tree = ast.parse(PLANTED)
  originals = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
  for name, exercise in mined.items():
    source = exercise.prompt + exercise.solution
    if "." not in name:  # module-level functions appear verbatim in the file
      assert source in PLANTED
      (rebuilt,) = ast.parse(source).body
      assert ast.dump(rebuilt) == ast.dump(originals[name])
    assert global_loads(function_code(source)) <= set(dir(builtins)) | {name.split(".")[-1]}
  # and they run on their own, with nothing but builtins around them
  namespace = {}
  for exercise in mined.values():
    exec(exercise.prompt + exercise.solution, namespace)  # pylint: disable=exec-used
  assert namespace["factorial"](5) == 120
  assert namespace["word_counts"]("a A b") == {"a": 2, "b": 1}
  assert namespace["pairs_summing_to"]([1, 2, 3, 4], 5) == [(0, 3), (1, 2)]
  assert namespace["unit_square_area"](3) == 9


def test_staticmethod_is_dedented_without_its_decorator():
  (exercise,) = [e for e in exercises.mine_exercises([planted_record()])
                 if e.meta["function"] == "Shape.unit_square_area"]
  assert exercise.prompt == ('def unit_square_area(side=1.0):\n'
                             '    """Area of a square with the given side length."""\n')
  assert exercise.solution == "    return side * side\n"


def test_duplicates_across_files_are_dropped():
  stats = StepStats("exercises")
  copy = PLANTED.replace("    return n * factorial(n - 1)", "    return n*factorial(n-1)")
  mined = list(exercises.mine_exercises(
      [planted_record("/a.py"), planted_record("/b.py", copy)], stats=stats))
  assert [e.origin for e in mined] == ["/a.py"] * 4 + ["/b.py"]  # only factorial differs
  assert stats.dropped["duplicate"] == 3
  assert stats.extra["files"] == 2


def test_limits_and_unparsable_files():
  stats = StepStats("exercises")
  mined = list(exercises.mine_exercises(
      [planted_record(), planted_record("/broken.py", "def f(:\n"),
       Record("n", "# Title", "/n.md", meta={"language": "markdown"})],
      stats=stats, max_solution_lines=3))
  assert [e.meta["function"] for e in mined] == ["word_counts", "Shape.unit_square_area"]
  assert stats.dropped["solution_too_long"] == 2
  assert stats.extra["files_unparsable"] == 1 and stats.extra["files_not_python"] == 1


def test_external_names_with_symtable():
  source = textwrap.dedent('''\
      def f(a):
          """Doc."""
          import math
          class Local:
              size = a
          g = lambda y: helper(y) + math.pi
          return [len(str(v)) for v in range(a)], Local, f
      ''')
  assert exercises.external_names(source, "f") == ({"helper"}, False)


@pytest.fixture(scope="module")
def stdlib_mined():
  stats = StepStats("exercises")
  stats.max_examples = 10_000
  records = list(sources.installed_python(60, seed=11, which="stdlib"))
  return records, list(exercises.mine_exercises(records, stats=stats)), stats


def test_mining_real_stdlib_code(stdlib_mined):
  records, mined, stats = stdlib_mined
  texts = {r.origin: r.text for r in records}
  assert len(mined) >= 5, stats.to_dict()
  assert stats.records_in == stats.records_out + stats.dropped_total
  assert len({e.id for e in mined}) == len(mined)
  for exercise in mined:
    source = exercise.prompt + exercise.solution
    function_name = exercise.meta["function"].split(".")[-1]
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.FunctionDef) and node.name == function_name
    assert ast.get_docstring(node) and len(node.body) >= 2
    assert not node.decorator_list
    if "." not in exercise.meta["function"]:
      assert source in texts[exercise.origin].replace("\r\n", "\n")
    # independent of symtable: the bytecode loads no global but builtins and itself
    assert global_loads(function_code(source)) <= set(dir(builtins)) | {function_name}, \
        exercise.origin


def test_rejected_stdlib_functions_really_use_outside_names(stdlib_mined):
  records, _, stats = stdlib_mined
  rejected = [e for e in stats.examples if e.startswith("not_self_contained: ")]
  assert rejected
  for example in rejected[:50]:
    names = example.rsplit("(", 1)[1].rstrip(")").split(", ")
    assert all(name.isidentifier() and name not in exercises.SAFE_BUILTINS for name in names)


def test_a_function_that_parses_but_does_not_compile_is_rejected_not_fatal():
  source = ('def f(x):\n    """Yields inside a comprehension: parses, does not compile."""\n'
            '    return [(yield v) for v in x]\n')
  with pytest.raises(SyntaxError):
    compile(source, "<f>", "exec")
  stats = StepStats("exercises")
  assert list(exercises.mine_exercises([planted_record("/y.py", source)], stats=stats)) == []
  assert stats.examples == ["not_compilable: /y.py:1 f ('yield' inside list comprehension)"]
