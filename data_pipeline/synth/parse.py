"""Code out of what teachers send: prose with fenced blocks, or bare code.

    code_blocks(text)        every fenced block (``` or ~~~, any tag; an unclosed last
                             fence runs to the end: a truncated answer)
    python_blocks(text)      the blocks that are Python: tagged python/py/python3/pycon,
                             or untagged and parsing as Python (an untagged block that
                             does not parse is program output or prose, not code)
    block_source(block)      the block as source: a REPL transcript (`>>> ` lines) becomes
                             the statements it runs (doctest's parser)
    extract_exercise(text)   the exercise in an answer: one function, its doctest
                             examples and the assert statements after it

An exercise answer is the fenced Python blocks joined (the function and its asserts may
come in separate blocks), or, without fences, the longest run of lines that parses
starting at the first `def`/`import`/`from`/`@` line. Its top level may hold exactly
one function, `assert` statements, and doctest boilerplate (`import doctest`,
`doctest.testmod()`, an `if __name__ == "__main__":` holding only those and asserts),
which is dropped. Anything else is refused with the gate and reason (`Rejected`).
"""

from __future__ import annotations

import ast
import dataclasses
import doctest
import re
import warnings

PYTHON_TAGS = frozenset({"python", "py", "python3", "py3", "pycon", "ipython"})
_OPEN_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})[ \t]*([^\s`{]*)")
_BARE_START = re.compile(r"^(def |async def |import |from \S+ import |@)")
_MAX_BARE_LINES = 400  # a bare answer longer than this is searched from its start only


class Rejected(ValueError):
  """A sample that fails a gate: `gate` names the check (e.g. 'no_code', 'syntax',
  'doctest'), `reason` says what is wrong. Raised by the parsers here and the gates."""

  def __init__(self, gate: str, reason: str):
    super().__init__(reason)
    self.gate = gate
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class CodeBlock:
  """One fenced block: its tag (lower-cased, '' = none), code, and where it starts."""
  language: str
  code: str
  line: int  # 1-based line of the opening fence in the answer
  closed: bool
  end: int = 0  # 1-based line of the closing fence (the last line when unclosed)


@dataclasses.dataclass(frozen=True)
class ExerciseParts:
  """An exercise as the teacher wrote it.

  Attributes:
    function: the function's source (column 0), nothing else.
    name: its name.
    node: its AST (parsed from `function`).
    doctests: the doctest examples of its docstring.
    asserts: the source of each top-level assert statement, in order.
  """
  function: str
  name: str
  node: ast.FunctionDef | ast.AsyncFunctionDef
  doctests: int
  asserts: tuple[str, ...]

  @property
  def tests(self) -> int:
    return self.doctests + len(self.asserts)


def parse_python(source: str) -> ast.Module:
  """ast.parse without warnings (invalid escapes in model code are common); raises
  SyntaxError (also for null bytes and nesting too deep to parse)."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      return ast.parse(source)
  except (ValueError, RecursionError, MemoryError) as e:
    raise SyntaxError(f"{type(e).__name__}: {e}") from None


def parses(source: str) -> bool:
  try:
    parse_python(source)
  except SyntaxError:
    return False
  return True


def code_blocks(text: str) -> list[CodeBlock]:
  """The fenced blocks of `text`, in order (see the module docstring)."""
  lines = text.splitlines()
  blocks, i = [], 0
  while i < len(lines):
    opening = _OPEN_FENCE.match(lines[i])
    if not opening:
      i += 1
      continue
    fence = opening.group(1)
    closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
    start, j = i, i + 1
    while j < len(lines) and not closing.match(lines[j]):
      j += 1
    blocks.append(CodeBlock(opening.group(2).lower(), "\n".join(lines[start + 1:j]) + "\n",
                            start + 1, j < len(lines), min(j + 1, len(lines))))
    i = j + 1
  return blocks


def prose(text: str) -> str:
  """`text` without its fenced blocks (fences included)."""
  lines = text.splitlines()
  for block in code_blocks(text):
    lines[block.line - 1:block.end] = [""] * (block.end - block.line + 1)
  return "\n".join(lines)


def block_source(block: CodeBlock) -> str:
  """The block as Python source: a REPL transcript becomes the statements it runs."""
  first = next((line for line in block.code.splitlines() if line.strip()), "")
  if first.lstrip().startswith(">>>"):
    examples = doctest.DocTestParser().get_examples(block.code)
    return "".join(example.source for example in examples)
  return block.code


def is_python(block: CodeBlock) -> bool:
  """Tagged as Python, or untagged and parsing as Python (and not empty)."""
  if block.language in PYTHON_TAGS:
    return True
  return block.language == "" and bool(block.code.strip()) and parses(block_source(block))


def python_blocks(text: str) -> list[CodeBlock]:
  return [block for block in code_blocks(text) if is_python(block)]


def bare_code(text: str) -> str | None:
  """The longest run of lines that parses, from the first line that starts code
  (`def`, `import`, `from ... import`, a decorator) at column 0; None when none does."""
  lines = text.strip("\n").splitlines()
  starts = [i for i, line in enumerate(lines) if _BARE_START.match(line)]
  if not starts:
    return None
  start = starts[0]
  for end in range(min(len(lines), start + _MAX_BARE_LINES), start, -1):
    source = "\n".join(lines[start:end]).rstrip() + "\n"
    if parses(source):
      return source
  return None


def exercise_code(text: str) -> str:
  """The code of an exercise answer (fenced Python blocks joined, else bare code)."""
  blocks = python_blocks(text)
  if blocks:
    return "\n\n".join(block_source(block).rstrip("\n") for block in blocks) + "\n"
  code = bare_code(text)
  if code is None:
    raise Rejected("no_code", "the answer holds no Python code (no fenced block, no "
                     "parsable code starting at a def/import line)")
  return code


def _is_doctest_boilerplate(node: ast.stmt) -> bool:
  """`import doctest`, `doctest.testmod(...)` / `doctest.run_docstring_examples(...)`."""
  if isinstance(node, ast.Import):
    return all(alias.name == "doctest" for alias in node.names)
  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
    func = node.value.func
    return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
            and func.value.id == "doctest")
  return False


def _is_main_guard(node: ast.stmt) -> bool:
  test = node.test if isinstance(node, ast.If) else None
  return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
          and test.left.id == "__name__" and len(test.comparators) == 1
          and isinstance(test.comparators[0], ast.Constant)
          and test.comparators[0].value == "__main__")


def extract_exercise(text: str) -> ExerciseParts:
  """The exercise of an answer; Rejected (gate 'no_code', 'syntax' or 'structure')."""
  code = exercise_code(text)
  try:
    module = parse_python(code)
  except SyntaxError as e:
    raise Rejected("syntax", f"the code does not parse: line {e.lineno}: {e.msg}") from None
  functions, asserts = [], []

  def visit(statements: list[ast.stmt], in_guard: bool) -> None:
    for node in statements:
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not in_guard:
        functions.append(node)
      elif isinstance(node, ast.Assert):
        asserts.append(ast.get_source_segment(code, node))
      elif _is_doctest_boilerplate(node):
        continue
      elif _is_main_guard(node) and not in_guard and not node.orelse:
        visit(node.body, in_guard=True)
      else:
        what = type(node).__name__
        raise Rejected("structure", f"line {node.lineno}: a top-level {what} statement; "
                         f"an exercise is one function followed by assert statements")

  visit(module.body, in_guard=False)
  if len(functions) != 1:
    names = ", ".join(f.name for f in functions) or "none"
    raise Rejected("structure", f"expected exactly one top-level function, found "
                     f"{len(functions)} ({names})")
  node = functions[0]
  start = node.decorator_list[0].lineno if node.decorator_list else node.lineno
  function = "\n".join(code.splitlines()[start - 1:node.end_lineno]) + "\n"
  node = parse_python(function).body[0]
  docstring = ast.get_docstring(node, clean=False) or ""
  doctests = len(doctest.DocTestParser().get_examples(docstring))
  return ExerciseParts(function, node.name, node, doctests, tuple(asserts))
