"""The long-context benchmark: deterministic files, the canonical call passes at every
length and depth, a call of another or a misspelt function fails."""

import ast
import json

import pytest

from eval import run as eval_run
from eval.benchmarks import BENCHMARKS, LongContext
from eval.benchmarks import long_context
from eval.sandbox import Sandbox, SandboxLimits
from eval.settings import EvalSettings
from tests.eval.benchmarks.helpers import write_jsonl

LENGTHS = (300, 2000, 8000, 32000)
DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


def _functions(prompt):
  """name -> its def node, of a generated file (parsed, not run; the open `result = `
  completed by a constant)."""
  return {node.name: node for node in ast.parse(prompt + "None").body
          if isinstance(node, ast.FunctionDef)}


def test_registered_and_reads_no_data():
  assert BENCHMARKS["long-context"] is LongContext
  with pytest.raises(ValueError, match="reads no data file"):
    LongContext().load("/some/file.jsonl")


def test_the_generator_is_deterministic():
  benchmark = LongContext(lengths=(500, 4000), depths=(0.0, 0.6), per_cell=2, seed=7)
  first, second = benchmark.load(), LongContext(lengths=(500, 4000), depths=(0.0, 0.6),
                                                per_cell=2, seed=7).load()
  assert first == second and len(first) == 8
  assert len({p.prompt for p in first}) == 8  # every file of the grid differs
  other_seed = LongContext(lengths=(500, 4000), depths=(0.0, 0.6), per_cell=2, seed=8).load()
  assert all(a.prompt != b.prompt for a, b in zip(first, other_seed))
  # a cell's files do not depend on the rest of the grid
  alone = LongContext(lengths=(4000,), depths=(0.6,), per_cell=2, seed=7).load()
  assert alone == [p for p in first if p.task_id.startswith("long-context/4000/0.6/")]


@pytest.mark.parametrize("length", LENGTHS)
def test_length_and_depth_are_as_asked(length):
  for depth in DEPTHS:
    problem = long_context.generate(0, length, depth)
    functions = _functions(problem.prompt)
    lines = problem.prompt.splitlines(keepends=True)
    longest = max(len("".join(lines[f.lineno - 1:f.end_lineno])) for f in functions.values())
    # about `length`: at most one function over, or the minimal file when it is longer
    assert len(problem.prompt) <= max(length, 600) + longest + 4, len(problem.prompt)
    if length >= 2000:
      assert len(problem.prompt) >= length - 10
      where = problem.prompt.index(f"def {problem.entry_point}(") / len(problem.prompt)
      assert abs(where - depth) <= 0.05 + longest / len(problem.prompt), (depth, where)
    # the last line is the call to complete; the target is the only function whose
    # docstring the comment above it names
    comment = problem.prompt.splitlines()[-2]
    described = [name for name, f in functions.items()
                 if ast.get_docstring(f).removeprefix("Return the ").split(" for the key")[0]
                 in comment.lower()]
    assert described == [problem.entry_point]
    assert problem.prompt.endswith("\nresult = ")


def test_canonical_passes_and_wrong_or_misspelt_calls_fail_at_every_length_and_depth():
  """In the sandbox, as the evaluator runs them: the canonical call in every (length,
  depth) cell passes; the call of another function of the same file and a misspelt
  name fail. Every other function's value differs from the target's (checked by
  running each file's functions here: the files are the generator's own code)."""
  problems = [long_context.generate(0, length, depth) for length in LENGTHS
              for depth in DEPTHS]
  benchmark = LongContext()
  programs, expected = [], []
  for i, problem in enumerate(problems):
    argument = problem.canonical_solution[len(problem.entry_point) + 1:-1]
    namespace = {}
    exec(problem.prompt.rsplit("\n", 2)[0], namespace)  # pylint: disable=exec-used
    others = [n for n in _functions(problem.prompt) if n != problem.entry_point]
    target_value = namespace[problem.entry_point](int(argument))
    assert all(namespace[n](int(argument)) != target_value for n in others)
    programs.append(benchmark.program(problem, problem.canonical_solution))
    expected.append(True)
    if i % 4 == 1 and others:  # a sample of the cells (each program is a sandbox run)
      programs.append(benchmark.program(problem, f"{others[i % len(others)]}({argument})"))
      programs.append(benchmark.program(problem, problem.entry_point[:-1] + f"({argument})"))
      expected += [False, False]
  results = Sandbox(SandboxLimits(timeout_s=10.0, cpu_s=10)).run_many(programs)
  assert [r.passed for r in results] == expected, [r.failure for r in results]
  failures = {r.failure for r in results if not r.passed}
  assert failures == {"assertion", "exception:NameError"}


def test_evaluated_by_length_and_depth(tmp_path):
  """eval.run on samples: pass@1 and the breakdown per (length, depth) cell."""
  settings = EvalSettings(k=(1,), long_context_lengths=(400, 1600),
                          long_context_depths=(0.0, 1.0), long_context_per_cell=2)
  problems = LongContext(lengths=(400, 1600), depths=(0.0, 1.0), per_cell=2).load()
  # right in the cells of depth 0, a wrong argument in those of depth 1
  samples = [{"task_id": p.task_id,
              "completion": p.canonical_solution if "/0/" in p.task_id
              else p.entry_point + "(-1)"} for p in problems]
  report = eval_run.evaluate("long-context", str(tmp_path / "out"), settings,
                             samples_path=write_jsonl(tmp_path / "s.jsonl", samples))
  assert report["overall"]["pass@1"] == 0.5
  cells = {(c["length"], c["depth"]): (c["samples"], c["passed"])
           for c in report["breakdown"]["cells"]}
  assert cells == {(400, 0.0): (2, 2), (400, 1.0): (2, 0), (1600, 0.0): (2, 2),
                   (1600, 1.0): (2, 0)}
  with open(tmp_path / "out" / "run.json") as f:
    assert json.load(f)["benchmark_options"]["lengths"] == [400, 1600]
  # other files are another evaluation: refused, not resumed
  with pytest.raises(eval_run.UsageError, match="another evaluation"):
    eval_run.evaluate("long-context", str(tmp_path / "out"),
                      EvalSettings(k=(1,), long_context_lengths=(400, 1600),
                                   long_context_depths=(0.0, 1.0), long_context_per_cell=2,
                                   long_context_seed=1),
                      samples_path=str(tmp_path / "s.jsonl"))


@pytest.mark.parametrize("field, value, message", [
    ("long_context_lengths", (0,), "an integer in"),
    ("long_context_lengths", (), "non-empty"),
    ("long_context_depths", (1.5,), r"\[0, 1\]"),
    ("long_context_per_cell", 0, ">= 1"),
    ("long_context_lengths", (500, 500), "repeats a value"),
])
def test_bad_settings_are_refused_by_name(field, value, message):
  with pytest.raises(eval_run.SettingsError, match=f"config.eval.{field}.*{message}"):
    EvalSettings(**{field: value}).check("config.eval.")
