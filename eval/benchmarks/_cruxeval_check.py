"""The in-program half of CRUXEval: judge one predicted output or input by executing it.

Never imported by the evaluator: `eval/benchmarks/cruxeval.py` embeds this file's source
in every program it builds and appends one `check(...)` call whose arguments are string
literals, so a prediction is only ever code this file parses and evaluates as one
expression. Standard library only.

A prediction is the predicted output (mode 'output') or the predicted argument list
(mode 'input') as Python source; the paper's answer line `assert f(INPUT) == OUTPUT`
(what a model writes after the prompt's `[ANSWER]`) is accepted too, and its OUTPUT
(respectively INPUT) is the prediction. The verdict is `f(input) == output` evaluated:

- output prediction: the prediction is one expression, evaluated in a namespace of its
  own (builtins only), so it cannot call `f`: the CRUXEval harness likewise rejects an
  output prediction that calls `f` on the input;
- input prediction: `f(<prediction>)` must be one call of `f` (its arguments are the
  prediction), evaluated beside `f`, and its value must equal the problem's output.

A prediction equal as a value but written differently (`(1, )` for `(1,)`, `dict(a=1)`
for `{'a': 1}`) passes; the repr of the value as a string does not.

The comparison is the CRUXEval harness's `assert OUTPUT == <prediction>`: the reference
on the left, Python's `==`. Python's `==` also asks the right operand (its reflected
`__eq__`, tried first when its type subclasses the left's, and whenever the left's
returns NotImplemented), so a predicted value of a class whose `__eq__` always returns
True would pass. So the two values are compared with `==` only when both are built of
plain values alone (exactly None, bool, int, float, complex, str, bytes, bytearray,
range, Ellipsis, and lists, tuples, dicts, sets and frozensets of them, subclasses
excluded), where `==` runs no code of the prediction's; a value holding anything else
fails, unless the reference value holds objects that are not plain (not in the released
data), when the prediction's value must be of the reference's exact type and the
reference's `==` decides. The names the comparison uses are bound before the prediction
runs, so a prediction that rebinds builtins or this module's names does not change it.
(It runs in the same process as the prediction, as in CRUXEval's harness: a prediction
that rewrites the interpreter's objects through introspection is not defended against;
the sandbox bounds what it can reach.)
"""

import ast


class WrongPrediction(AssertionError):
  """The prediction is well-formed but f(input) != output."""


class MalformedPrediction(ValueError):
  """The prediction is not one expression (output) or one argument list (input)."""


_PLAIN_ATOMS = frozenset((type(None), bool, int, float, complex, str, bytes, bytearray,
                          range, type(Ellipsis)))
_PLAIN_CONTAINERS = frozenset((list, tuple, set, frozenset, dict))


def _plain(value, _type=type, _id=id, _atoms=_PLAIN_ATOMS, _containers=_PLAIN_CONTAINERS,
           _dict=dict, _list=list, _set=set):
  """Whether `value` is built of plain values alone (exact types, no subclasses), so
  that `==` on it runs only the interpreter's own comparisons. Iterative; a container
  met again (a cycle, or shared) is checked once."""
  stack, seen = [value], _set()
  while stack:
    item = stack.pop()
    kind = _type(item)
    if kind in _atoms:
      continue
    if kind not in _containers:
      return False
    if _id(item) in seen:
      continue
    seen.add(_id(item))
    if kind is _dict:
      stack.extend(_list(_dict.keys(item)))
      stack.extend(_list(_dict.values(item)))
    else:
      stack.extend(_list(item))
  return True


def _same(expected, candidate, _plain=_plain, _type=type, _bool=bool):
  """`expected == candidate` (the reference on the left) without running the
  candidate's `__eq__`: see the module's docstring."""
  if _plain(expected):
    return _plain(candidate) and _bool(expected == candidate)
  return _type(candidate) is _type(expected) and _bool(expected == candidate)


def _answer_line(text, mode):
  """The prediction inside the paper's answer line `assert f(INPUT) == OUTPUT`."""
  tree = ast.parse(text)
  if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
    raise MalformedPrediction("the answer is not one `assert f(...) == ...` line")
  test = tree.body[0].test
  if (not isinstance(test, ast.Compare) or len(test.ops) != 1
      or not isinstance(test.ops[0], ast.Eq) or not isinstance(test.left, ast.Call)
      or not isinstance(test.left.func, ast.Name) or test.left.func.id != "f"):
    raise MalformedPrediction("the answer is not `assert f(...) == ...`")
  if mode == "output":
    return ast.get_source_segment(text, test.comparators[0])
  call = ast.get_source_segment(text, test.left)
  return call[len("f"):].strip()[1:-1]


def prediction_of(text, mode):
  """The prediction's source: `text` itself, or the part of an answer line it names
  (text from the paper's stop word `[/ANSWER]` on is not part of it)."""
  text = text.split("[/ANSWER]")[0].strip()
  if text.startswith("assert"):
    try:
      return _answer_line(text, mode)
    except SyntaxError as e:
      raise MalformedPrediction(f"the answer line does not parse: {e.msg}") from None
  return text


def check(code, given, prediction, mode):
  """Raises unless `prediction` is right for the function `code` defines.

  Args:
    code: the problem's function `f` (Python source).
    given: the problem's input (mode 'output') or output (mode 'input'), as source.
    prediction: the sample's completion.
    mode: 'output' (CRUXEval-O) or 'input' (CRUXEval-I).
  """
  same, wrong = _same, WrongPrediction  # bound before the prediction runs
  source = prediction_of(prediction, mode)
  namespace = {}
  exec(compile(code, "<cruxeval function>", "exec"), namespace)  # pylint: disable=exec-used
  if mode == "output":
    try:
      expression = compile(source, "<predicted output>", "eval")
    except SyntaxError as e:
      raise MalformedPrediction(f"the predicted output is not one expression: {e.msg}") from None
    returned = eval(compile("f(" + given + ")", "<input>", "eval"), namespace)  # pylint: disable=eval-used
    output = eval(expression, {})  # pylint: disable=eval-used
  elif mode == "input":
    call_source = "f(" + source + ")"
    try:
      tree = ast.parse(call_source, mode="eval")
    except SyntaxError as e:
      raise MalformedPrediction(f"the predicted input is not an argument list: {e.msg}") from None
    call = tree.body
    if (not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name)
        or call.func.id != "f"):
      raise MalformedPrediction("the predicted input is not one argument list of f")
    returned = eval(compile(tree, "<predicted input>", "eval"), namespace)  # pylint: disable=eval-used
    output = eval(compile(given, "<output>", "eval"), {})  # pylint: disable=eval-used
  else:
    raise ValueError(f"mode must be 'output' or 'input', got {mode!r}")
  # the reference on the left, as the CRUXEval harness asserts `OUTPUT == prediction`
  expected, candidate = (returned, output) if mode == "output" else (output, returned)
  if not same(expected, candidate):
    raise wrong(f"the prediction's value is not the output {expected!r:.200}")
