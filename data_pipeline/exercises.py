"""Exercises mined from code: documented functions become `prompt -> solution` pairs.

The CodeExercises format of phi-1: the prompt is a function's `def` line(s) and its
indented docstring, the solution is the rest of its body, and `prompt + solution` is
the function itself (at column 0). For the embedded default (no LLM) the exercises are
mined from the corpus:

    def add(a, b):                 <- prompt: the def line(s) (a multi-line signature
        \"\"\"Returns a + b.\"\"\"        is kept whole) and the docstring, verbatim
        return a + b               <- solution: everything after the docstring

A function becomes an exercise only when
  - it is a module-level `def`, or a `@staticmethod` of a module-level class (dedented;
    other methods take self/cls and are rejected: "method"); nested functions are not
    candidates;
  - it has no decorators ("decorated"): decorators change what the function means and
    almost always name things outside it. A staticmethod's decorator is dropped, as it
    only means something inside a class. Prompts therefore never contain decorators;
  - it has a docstring of at least `min_docstring_chars` on its own lines, and a body
    after it that is not just `pass` / `...` / `raise NotImplementedError`;
  - it is self-contained: every name it reads is a builtin, a parameter, a local, a
    module it imports itself inside the body, or its own name (recursion); no `global`
    statements and no relative imports (checked with `symtable` over the function and
    every scope nested in it);
  - prompt and solution are within the length limits;
  - `prompt + solution` parses to the same AST as the original function (so the
    extraction is exact);
  - no earlier exercise has the same whitespace-normalised `prompt + solution`.

Statistics: records_in counts candidate functions, records_out exercises, dropped the
rejections by reason; extra counts files read, not Python, and not parsing.
"""

from __future__ import annotations

import ast
import builtins
import copy
import symtable
from collections.abc import Iterable, Iterator

from data_pipeline.dedup import text_hash
from data_pipeline.filters import is_python, parse_python, parse_python_uncached
from data_pipeline.records import Exercise, Record, record_id
from data_pipeline.steps import Step, StepStats

# Builtins a function may use. Names that `site` adds (exit, help, ...) and module
# dunders (__name__, __file__) are not the function's own.
SAFE_BUILTINS = frozenset(
    name for name in dir(builtins)
    if not name.startswith("_")
    and name not in ("exit", "quit", "copyright", "credits", "license", "help")
) | {"__import__", "__build_class__", "__debug__"}


def external_names(source: str, function_name: str) -> tuple[set[str], bool]:
  """(names the function in `source` reads from outside itself that are not builtins,
  whether it uses a `global` statement). `source` holds exactly that function."""
  module = symtable.symtable(source, "<exercise>", "exec")
  allowed = SAFE_BUILTINS | {function_name}
  outside, declares_global = set(), False

  def visit(table: symtable.SymbolTable) -> None:
    nonlocal declares_global
    for symbol in table.get_symbols():
      if symbol.is_declared_global():
        declares_global = True
      elif symbol.is_global() and symbol.get_name() not in allowed:
        outside.add(symbol.get_name())
    for child in table.get_children():
      visit(child)

  for child in module.get_children():
    visit(child)
  return outside, declares_global


def _is_trivial(body: list[ast.stmt]) -> bool:
  """True when every statement is pass, `...` or raise NotImplementedError."""
  for statement in body:
    if isinstance(statement, ast.Pass):
      continue
    if (isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
        and statement.value.value is Ellipsis):
      continue
    if isinstance(statement, ast.Raise) and statement.exc is not None:
      exc = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
      if isinstance(exc, ast.Name) and exc.id == "NotImplementedError":
        continue
    return False
  return True


def _dedent(lines: list[str], prefix: str) -> list[str] | None:
  """`lines` without `prefix` (None when a non-blank line does not start with it)."""
  out = []
  for line in lines:
    line = line.rstrip("\r\n")
    if not line.strip():
      out.append("\n")
    elif line.startswith(prefix):
      out.append(line[len(prefix):] + "\n")
    else:
      return None
  return out


class ExerciseMiner(Step):
  """Step: Records in, Exercises out (rules in the module docstring).

  Args:
    min_docstring_chars: shorter docstrings say too little to be a task.
    max_prompt_chars, max_solution_chars, max_solution_lines: length limits.
    dedup: drop exercises whose normalised `prompt + solution` was seen before.
  """
  name = "exercises"
  count_input = False
  # How a record's text is parsed: cached, so a tree an earlier ParseFilter made for the
  # record in flight is reused.
  parse = staticmethod(parse_python)

  def __init__(self, min_docstring_chars: int = 16, max_prompt_chars: int = 2000,
               max_solution_chars: int = 2000, max_solution_lines: int = 40,
               dedup: bool = True, name: str | None = None):
    super().__init__(name)
    self.min_docstring_chars = min_docstring_chars
    self.max_prompt_chars = max_prompt_chars
    self.max_solution_chars = max_solution_chars
    self.max_solution_lines = max_solution_lines
    self.dedup = dedup
    self._seen: set[bytes] = set()

  def process(self, records: Iterable[Record]) -> Iterator[Exercise]:
    for record in records:
      self.stats.extra["files"] += 1
      if not is_python(record):
        self.stats.extra["files_not_python"] += 1
        continue
      tree = self.parse(record.text)
      if tree is None:
        self.stats.extra["files_unparsable"] += 1
        continue
      lines = record.text.splitlines(keepends=True)
      names_seen: dict[str, int] = {}
      for qualname, function, in_class in _candidates(tree):
        self.stats.records_in += 1
        where = f"{record.origin}:{function.lineno} {qualname}"
        result = self._extract(function, lines, in_class)
        if isinstance(result, tuple) and self.dedup:
          key = text_hash(result[0] + result[1])
          if key in self._seen:
            result = "duplicate"
          else:
            self._seen.add(key)
        if isinstance(result, str):
          detail = result.split(":", 1)
          self.stats.drop(detail[0], where + (f" ({detail[1]})" if len(detail) > 1 else ""))
          continue
        names_seen[qualname] = names_seen.get(qualname, 0) + 1
        index = qualname if names_seen[qualname] == 1 else f"{qualname}@{names_seen[qualname]}"
        prompt, solution = result
        yield Exercise(id=record_id(record.origin, index), prompt=prompt, solution=solution,
                       origin=record.origin, license=record.license,
                       meta={"function": qualname, "lineno": function.lineno,
                             "record_id": record.id})

  def split_function(self, source: str, function: ast.FunctionDef | ast.AsyncFunctionDef
                     ) -> tuple[str, str] | str:
    """(prompt, solution) of the module-level `function` parsed from `source`, or why
    it is not an exercise ("reason" or "reason:detail"), by the rules above (no dedup).
    For functions written elsewhere (a teacher's exercise) that must meet the same bar."""
    return self._extract(function, source.splitlines(keepends=True), in_class=False)

  def _extract(self, function: ast.AST, lines: list[str],
               in_class: bool) -> tuple[str, str] | str:
    """(prompt, solution) of `function`, or the reason (optionally "reason:detail")."""
    if isinstance(function, ast.AsyncFunctionDef):
      return "async"
    decorators = list(function.decorator_list)
    if in_class:
      static = [d for d in decorators if isinstance(d, ast.Name) and d.id == "staticmethod"]
      if not static:
        return "method"
      decorators.remove(static[0])
    if decorators:
      return "decorated"
    docstring = ast.get_docstring(function, clean=False)
    if docstring is None:
      return "no_docstring"
    if len(docstring.strip()) < self.min_docstring_chars:
      return "docstring_too_short"
    doc_node, body = function.body[0], function.body[1:]
    if not body:
      return "no_body"
    if _is_trivial(body):
      return "trivial_body"
    def_line = lines[function.lineno - 1]
    prefix = def_line[:function.col_offset]
    doc_start = lines[doc_node.lineno - 1]
    if (prefix.strip() or doc_node.lineno == function.lineno
        or doc_start[:doc_node.col_offset].strip()
        or lines[doc_node.end_lineno - 1][doc_node.end_col_offset:].strip()
        or body[0].lineno <= doc_node.end_lineno):
      return "inline_docstring"  # docstring or body shares a line with something else
    prompt_lines = _dedent(lines[function.lineno - 1:doc_node.end_lineno], prefix)
    solution_lines = _dedent(lines[doc_node.end_lineno:function.end_lineno], prefix)
    if prompt_lines is None or solution_lines is None:
      return "indentation"
    prompt, solution = "".join(prompt_lines), "".join(solution_lines)
    if len(prompt) > self.max_prompt_chars:
      return "prompt_too_long"
    if len(solution) > self.max_solution_chars or len(solution_lines) > self.max_solution_lines:
      return "solution_too_long"
    rebuilt = parse_python_uncached(prompt + solution)
    if (rebuilt is None or len(rebuilt.body) != 1
        or _function_dump(rebuilt.body[0]) != _function_dump(function)):
      return "not_reproducible"
    if any(isinstance(node, ast.ImportFrom) and node.level
           for node in ast.walk(rebuilt.body[0])):
      return "relative_import"
    try:
      outside, declares_global = external_names(prompt + solution, function.name)
    except SyntaxError as e:  # parses, but does not compile (e.g. `yield` misplaced)
      return f"not_compilable:{e.msg}"
    if declares_global:
      return "global_statement"
    if outside:
      return f"not_self_contained:{', '.join(sorted(outside))}"
    return prompt, solution


def _function_dump(function: ast.AST) -> str:
  """ast.dump of a function without its decorators and with its docstring cleaned
  (`inspect.cleandoc`: dedenting a staticmethod re-indents its docstring, nothing else)."""
  function = copy.copy(function)
  function.decorator_list = []
  doc = ast.get_docstring(function, clean=True)
  function.body = [ast.Expr(ast.Constant(doc))] + function.body[1:]
  return ast.dump(function)


def _candidates(tree: ast.Module) -> Iterator[tuple[str, ast.AST, bool]]:
  """(qualified name, function node, defined in a class) of the candidate functions."""
  function_types = (ast.FunctionDef, ast.AsyncFunctionDef)
  for node in tree.body:
    if isinstance(node, function_types):
      yield node.name, node, False
    elif isinstance(node, ast.ClassDef):
      for child in node.body:
        if isinstance(child, function_types):
          yield f"{node.name}.{child.name}", child, True


def mine_exercises(records: Iterable[Record], *, stats: StepStats | None = None,
                   **options) -> Iterator[Exercise]:
  """Exercises mined from `records` (ExerciseMiner with `options`); pass `stats` to
  receive the counts (candidates in, exercises out, rejections by reason)."""
  miner = ExerciseMiner(**options)
  if stats is not None:
    miner.stats = stats
  return miner(records)
