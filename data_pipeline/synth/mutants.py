"""Mutants of an exercise's reference solution: small, plausible faults its tests should
catch (mutation testing, as mutmut and Stryker do it, on the `ast` of one function).

    mutants(function_source, seed=0, limit=12)   # [Mutant(description, source), ...]

A mutation site is one node of the function's body (the docstring, the decorators, the
default values and the annotations are left alone) and one change of it:

  operator     a binary or augmented operator swapped (+ -, * /, // /, % //, ** *,
               << >>, & |, ^ &)
  comparison   a comparison operator swapped or its boundary moved (< <=, > >=, == !=,
               in / not in, is / is not)
  boolean      `and` / `or` swapped
  constant     an integer or float constant moved by one (c+1 and c-1), True / False
               swapped
  condition    the test of an if, while, conditional expression or comprehension negated
               (`not (...)`; an existing `not x` becomes `x`)
  unary        a unary minus or `not` outside a condition removed
  return       a returned value replaced by None

Every site is enumerated in a fixed order (ast.walk); `limit` of them are drawn without
replacement by a random.Random seeded by (seed, the function's source), so the mutants
of an exercise are a function of its code and the seed alone. A mutant whose source
equals the unmutated one (after ast.unparse) is dropped. Strings are not mutated:
changing a message or a key is most often an equivalent mutant that no test could kill.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import hashlib
import random
from collections.abc import Callable, Iterator

_BINARY_SWAPS: dict[type, type] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
    ast.LShift: ast.RShift, ast.RShift: ast.LShift, ast.BitAnd: ast.BitOr,
    ast.BitOr: ast.BitAnd, ast.BitXor: ast.BitAnd, ast.MatMult: ast.Mult,
}
_COMPARE_SWAPS: dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
            ast.Mod: "%", ast.Pow: "**", ast.LShift: "<<", ast.RShift: ">>",
            ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.MatMult: "@",
            ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
            ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
            ast.IsNot: "is not", ast.And: "and", ast.Or: "or"}
_CONDITION_OWNERS = (ast.If, ast.While, ast.IfExp)


@dataclasses.dataclass(frozen=True)
class Mutant:
  """One mutant: what was changed (e.g. 'line 5: < -> <=') and the mutated function."""
  description: str
  source: str


@dataclasses.dataclass(frozen=True)
class _Site:
  node: int  # index of the node in ast.walk order of the function
  kind: str
  change: Callable[[ast.AST], str | None]  # mutates the node in place; its description


def _body_nodes(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.AST]:
  """The nodes of the function's body (not its docstring, decorators, defaults or
  annotations), in ast.walk order of the function."""
  body = function.body
  docstring = (body[0] if body and isinstance(body[0], ast.Expr)
               and isinstance(body[0].value, ast.Constant)
               and isinstance(body[0].value.value, str) else None)
  skip: set[int] = set()
  for node in [function.args, *function.decorator_list,
               *([function.returns] if function.returns else []),
               *([docstring] if docstring is not None else [])]:
    skip.update(id(n) for n in ast.walk(node))
  for child in ast.walk(function):
    if id(child) not in skip and child is not function:
      yield child


def _where(node: ast.AST) -> str:
  return f"line {getattr(node, 'lineno', '?')}"


def _swap_op(table: dict[type, type]):
  def change(node):
    old = type(node.op)
    node.op = table[old]()
    return f"{_where(node)}: {_SYMBOLS[old]} -> {_SYMBOLS[table[old]]}"
  return change


def _swap_compare(position: int):
  def change(node):
    old = type(node.ops[position])
    node.ops[position] = _COMPARE_SWAPS[old]()
    return f"{_where(node)}: {_SYMBOLS[old]} -> {_SYMBOLS[_COMPARE_SWAPS[old]]}"
  return change


def _swap_boolean(node):
  old = type(node.op)
  node.op = ast.Or() if old is ast.And else ast.And()
  return f"{_where(node)}: {_SYMBOLS[old]} -> {'or' if old is ast.And else 'and'}"


def _shift_constant(delta: int):
  def change(node):
    old = node.value
    node.value = old + delta
    return f"{_where(node)}: constant {old!r} -> {node.value!r}"
  return change


def _flip_bool(node):
  node.value = not node.value
  return f"{_where(node)}: constant {not node.value!r} -> {node.value!r}"


def _negate(field: str, position: int | None = None):
  def change(node):
    test = getattr(node, field) if position is None else getattr(node, field)[position]
    negated = (test.operand if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
               else ast.UnaryOp(op=ast.Not(), operand=test))
    if position is None:
      setattr(node, field, negated)
    else:
      getattr(node, field)[position] = negated
    return f"{_where(test)}: condition negated"
  return change


def _return_none(node):
  node.value = ast.Constant(value=None)
  return f"{_where(node)}: return value -> None"


def _sites(nodes: list[ast.AST]) -> list[_Site]:
  sites: list[_Site] = []
  for index, node in enumerate(nodes):
    def add(kind, change):
      sites.append(_Site(index, kind, change))
    if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _BINARY_SWAPS:
      add("operator", _swap_op(_BINARY_SWAPS))
    elif isinstance(node, ast.Compare):
      for position, op in enumerate(node.ops):
        if type(op) in _COMPARE_SWAPS:
          add("comparison", _swap_compare(position))
    elif isinstance(node, ast.BoolOp):
      add("boolean", _swap_boolean)
    elif isinstance(node, ast.Constant):
      if isinstance(node.value, bool):
        add("constant", _flip_bool)
      elif isinstance(node.value, (int, float)):
        add("constant", _shift_constant(1))
        add("constant", _shift_constant(-1))
    elif isinstance(node, ast.Return) and node.value is not None and not (
        isinstance(node.value, ast.Constant) and node.value.value is None):
      add("return", _return_none)
    if isinstance(node, _CONDITION_OWNERS):
      add("condition", _negate("test"))
    elif isinstance(node, ast.comprehension):
      for position in range(len(node.ifs)):
        add("condition", _negate("ifs", position))
  return sites + _unary_sites(nodes)


def _unary_sites(nodes: list[ast.AST]) -> list[_Site]:
  """A unary minus or `not` removed: the site is the parent holding it (a negated
  condition's own `not` is left to the condition operator)."""
  sites = []
  for index, parent in enumerate(nodes):
    for field, value in ast.iter_fields(parent):
      items = value if isinstance(value, list) else [value]
      for position, child in enumerate(items):
        if not (isinstance(child, ast.UnaryOp) and isinstance(child.op, (ast.USub, ast.Not))):
          continue
        if field == "test" and isinstance(parent, _CONDITION_OWNERS):
          continue
        if field == "ifs" and isinstance(parent, ast.comprehension):
          continue
        sites.append(_Site(index, "unary", _remove_unary(field, position
                                                         if isinstance(value, list) else None)))
  return sites


def _remove_unary(field: str, position: int | None):
  def change(node):
    child = getattr(node, field) if position is None else getattr(node, field)[position]
    if position is None:
      setattr(node, field, child.operand)
    else:
      getattr(node, field)[position] = child.operand
    symbol = "-" if isinstance(child.op, ast.USub) else "not"
    return f"{_where(child)}: unary {symbol} removed"
  return change


def _function_of(source: str) -> ast.FunctionDef | ast.AsyncFunctionDef:
  module = ast.parse(source)
  functions = [n for n in module.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
  if len(functions) != 1:
    raise ValueError(f"mutants: expected one top-level function, found {len(functions)}")
  return functions[0]


def unmutated(source: str) -> str:
  """The function as ast.unparse writes it: what the mutants differ from by one change."""
  return ast.unparse(_function_of(source)) + "\n"


def site_count(source: str) -> int:
  """How many mutation sites the function has."""
  function = _function_of(source)
  return len(_sites(list(_body_nodes(function))))


def mutants(source: str, *, seed: int = 0, limit: int = 12) -> list[Mutant]:
  """Up to `limit` mutants of the one function in `source` (see the module docstring);
  ValueError when `source` is not exactly one function."""
  function = _function_of(source)
  sites = _sites(list(_body_nodes(function)))
  digest = hashlib.sha256(f"{seed}\n{source}".encode("utf-8")).digest()
  rng = random.Random(int.from_bytes(digest[:8], "big"))
  order = rng.sample(range(len(sites)), len(sites))
  original = unmutated(source)
  found: list[Mutant] = []
  seen = {original}
  for choice in order:
    if len(found) >= limit:
      break
    site = sites[choice]
    copied = copy.deepcopy(function)
    node = list(_body_nodes(copied))[site.node]
    description = site.change(node)
    try:
      mutated = ast.unparse(ast.fix_missing_locations(copied)) + "\n"
      compile(mutated, "<mutant>", "exec")
    except (SyntaxError, ValueError):
      continue  # e.g. a constant moved to a value the grammar cannot hold there
    if mutated not in seen:
      seen.add(mutated)
      found.append(Mutant(f"{site.kind} {description}", mutated))
  return found
