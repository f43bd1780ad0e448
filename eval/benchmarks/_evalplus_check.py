"""The in-program half of the EvalPlus benchmarks: differential testing against the reference.

Never imported by the evaluator: `eval/benchmarks/evalplus.py` embeds this file's source
in every program it builds and appends one `check(...)` call, so the sandbox runs it with
the candidate. Standard library only. As in EvalPlus (evalplus/evaluate.py and
evalplus/eval/__init__.py, v0.3):

1. the reference solution runs on every input (a deep copy of it), recording the output
   and its time; if it takes more than task_time_limit_s in all, the task cannot be
   judged here (`ReferenceFailed`). The evaluator runs this once per problem
   (`print_oracle`, a program of its own, as EvalPlus computes its expected outputs
   once) and hands each candidate's program the result (`check(oracle=...)`); without
   an oracle, `check` runs the reference itself first, before any candidate code;
2. the candidate runs on every input with a per-input limit of
   max(min_time_limit_s, time_limit_factor * the reference's time), and all inputs
   together within min(task_time_limit_s, the sum of those limits) + 1 s (EvalPlus's
   per-task timeout), enforced by an interval timer; going over raises
   `TimeLimitExceeded`;
3. outputs must equal the reference's, except: floats (and sequences of floats) within
   `atol` (1e-6 where the problem's atol is 0) at rtol 1e-7, like numpy.allclose;
   HumanEval/32 `find_zero`, whose root is checked by evaluating the polynomial; and
   EvalPlus's MBPP+ special oracles (set-equal outputs, outputs compared only as
   None/not None, and four functions whose recorded outputs have known alternatives).
"""

from __future__ import annotations

import base64
import copy
import json
import math
import pickle
import signal
import sys
import time

# EvalPlus's MBPP+ oracles that compare less than equality
MBPP_SET_EQ = ("similar_elements", "find_char_long", "common_in_nested_lists", "extract_singly",
               "larg_nnum", "intersection_array", "find_dissimilar", "Diff")
MBPP_NOT_NONE = ("check_str", "text_match_three", "text_starta_endb")

# MBPP+ inputs are stored as JSON; these tasks' arguments are tuples (and sets, complex)
# in the reference, rebuilt as evalplus/data/mbpp.py:mbpp_deserialize_inputs does
_TUPLE_ARGS = (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596,
               616, 630, 726, 740, 744, 809)
_TUPLE_ITEMS = (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780)
_FIRST_ARG_TUPLE_ITEMS = (75, 413, 444, 753)
_SECOND_ARG_TUPLE = (106, 750)
_FIRST_ARG_TUPLE = (250, 405, 446, 617, 720, 763, 808)
_NESTED_TUPLES = (259, 401, 445)
_ALL_TUPLES = (580, 615, 791)


# The line of an oracle program's output that carries the oracle: this prefix, then
# base64 of the pickled (expected outputs, per-input time limits).
ORACLE_MARK = "EVALPLUS_ORACLE "


class TimeLimitExceeded(Exception):
  """The candidate ran longer than its per-input time limit, or the task's."""


class ReferenceFailed(Exception):
  """The data's reference solution failed on an input (the data, not the candidate, is bad)."""


def _all_tuples(value):
  return tuple(_all_tuples(v) for v in value) if isinstance(value, list) else value


def mbpp_inputs(task_number: int, inputs: list) -> list:
  """MBPP+ inputs with the argument types the reference solution expects."""
  n = task_number
  if n in _TUPLE_ARGS:
    return [[tuple(arg) for arg in inp] for inp in inputs]
  if n in _TUPLE_ITEMS:
    return [[[tuple(item) for item in arg] for arg in inp] for inp in inputs]
  if n in _FIRST_ARG_TUPLE_ITEMS:
    return [[[tuple(item) for item in inp[0]]] + [inp[1]] for inp in inputs]
  if n in _SECOND_ARG_TUPLE:
    return [[inp[0]] + [tuple(inp[1])] for inp in inputs]
  if n == 115:
    return [[[set(item) if isinstance(item, list) and item else {} for item in inp[0]]]
            for inp in inputs]
  if n == 124:
    return [(float(inp[0]), complex(inp[1])) for inp in inputs]
  if n in _FIRST_ARG_TUPLE:
    return [[tuple(inp[0])] + [inp[1]] for inp in inputs]
  if n in _NESTED_TUPLES:
    return [tuple(tuple(tuple(item) for item in arg) for arg in inp) for inp in inputs]
  if n == 278:
    return [(tuple(tuple(item) if isinstance(item, list) else item for item in inp[0]),)
            for inp in inputs]
  if n == 307:
    return [[tuple(inp[0])] + [inp[1], inp[2]] for inp in inputs]
  if n == 722:
    return [[{key: tuple(value) for key, value in inp[0].items()}] + inp[1:] for inp in inputs]
  if n == 252:
    return [[complex(inp[0])] for inp in inputs]
  if n in _ALL_TUPLES:
    return [_all_tuples(inp) for inp in inputs]
  return inputs


def _is_floats(value) -> bool:
  if isinstance(value, float):
    return True
  return isinstance(value, (list, tuple)) and bool(value) and all(
      isinstance(v, float) for v in value)


def _close(output, expected, atol: float) -> bool:
  """numpy.allclose(output, expected, rtol=1e-7, atol=atol) on numbers and flat sequences."""
  if type(output) is not type(expected):
    return False
  outs, exps = (output, expected) if isinstance(expected, (list, tuple)) else ([output],
                                                                                [expected])
  if len(outs) != len(exps):
    return False
  try:
    return all(abs(o - e) <= atol + 1e-7 * abs(e) or (o == e) for o, e in zip(outs, exps))
  except TypeError:
    return False


def _poly(xs, x):
  return sum(coeff * math.pow(x, i) for i, coeff in enumerate(xs))


def _surface_area(base_edge, height):
  slant_height = math.sqrt((base_edge / 2) ** 2 + height ** 2)
  return round(base_edge ** 2 + 4 * (base_edge * slant_height) / 2)


def _digit_distance_nums(num1, num2):
  a, b = str(num1), str(num2)
  width = max(len(a), len(b))
  return sum(abs(int(x) - int(y)) for x, y in zip(a.zfill(width), b.zfill(width)))


def _matches(dataset: str, entry_point: str, inp, output, expected, atol: float) -> bool:
  """Whether the candidate's output on `inp` is right (EvalPlus's oracle)."""
  if dataset == "humaneval" and entry_point == "find_zero":
    return abs(_poly(*inp, output)) <= atol
  exact = output == expected
  if dataset == "mbpp":
    if entry_point == "are_equivalent":
      exact = True
    elif entry_point == "sum_div":
      exact = exact or output == 0
    elif entry_point == "surface_Area":
      exact = exact or abs(output - _surface_area(*inp)) <= atol
    elif entry_point == "digit_distance_nums":
      exact = exact or output == _digit_distance_nums(*inp)
    elif entry_point in MBPP_SET_EQ:
      exact = set(output) == set(expected)
    elif entry_point in MBPP_NOT_NONE:
      exact = output == expected if isinstance(output, bool) else expected == (
          output is not None)
  if exact:
    return True
  if atol == 0 and _is_floats(expected):
    atol = 1e-6
  return atol != 0 and _close(output, expected, atol)


def _on_alarm(signum, frame):
  raise TimeLimitExceeded("over the time limit")


def _timed(fn, inp, seconds: float):
  """fn(*deep copy of inp), interrupted by TimeLimitExceeded after `seconds`."""
  signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
  try:
    return fn(*copy.deepcopy(inp))
  finally:
    signal.setitimer(signal.ITIMER_REAL, 0)


def _function(source: str, entry_point: str, who: str):
  namespace = {"__name__": "__main__"}
  exec(compile(source, f"<{who}>", "exec"), namespace)  # pylint: disable=exec-used
  if entry_point not in namespace:
    raise NameError(f"the {who} defines no {entry_point}")
  return namespace[entry_point]


def _inputs(dataset: str, task_id: str, inputs_json: str) -> list:
  inputs = json.loads(inputs_json)
  if dataset == "mbpp":
    inputs = mbpp_inputs(int(task_id.split("/")[-1]), inputs)
  return inputs


def reference_outputs(*, dataset: str, task_id: str, entry_point: str, reference: str,
                      inputs: list, min_time_limit_s: float, time_limit_factor: float,
                      task_time_limit_s: float) -> tuple[list, list[float]]:
  """(the reference's output on each input, each input's time limit for the candidate)."""
  try:
    reference_fn = _function(reference, entry_point, "reference")
  except Exception as e:
    raise ReferenceFailed(f"{task_id}: the reference does not run: {e!r}") from e
  signal.signal(signal.SIGALRM, _on_alarm)
  expected, limits = [], []
  deadline = time.perf_counter() + task_time_limit_s
  for index, inp in enumerate(inputs):
    start = time.perf_counter()
    try:
      output = _timed(reference_fn, inp, deadline - start)
    except TimeLimitExceeded:
      raise ReferenceFailed(f"{task_id}: the reference takes over {task_time_limit_s} s on "
                            f"the inputs up to {index}") from None
    except Exception as e:
      raise ReferenceFailed(f"{task_id}: the reference fails on input {index}: {e!r}") from e
    limits.append(max(min_time_limit_s, time_limit_factor * (time.perf_counter() - start)))
    if dataset == "mbpp" and entry_point in MBPP_NOT_NONE:
      output = output is not None
    expected.append(output)
  return expected, limits


def print_oracle(*, dataset: str, task_id: str, entry_point: str, reference: str,
                 inputs_json: str, min_time_limit_s: float, time_limit_factor: float,
                 task_time_limit_s: float = 60.0) -> None:
  """Runs the reference and prints the oracle line (`ORACLE_MARK`); raises as `check`
  would when the reference fails (no line then: each candidate's program says why)."""
  expected, limits = reference_outputs(
      dataset=dataset, task_id=task_id, entry_point=entry_point, reference=reference,
      inputs=_inputs(dataset, task_id, inputs_json), min_time_limit_s=min_time_limit_s,
      time_limit_factor=time_limit_factor, task_time_limit_s=task_time_limit_s)
  blob = base64.b64encode(pickle.dumps((expected, limits), protocol=4)).decode("ascii")
  sys.stdout.write(f"\n{ORACLE_MARK}{blob}\n")
  sys.stdout.flush()


def _decoded(oracle: str, count: int) -> tuple[list, list[float]] | None:
  """The oracle's (expected, limits), or None when it is not one for `count` inputs."""
  try:
    expected, limits = pickle.loads(base64.b64decode(oracle))  # written by print_oracle
  except Exception:  # pylint: disable=broad-except
    return None
  return (expected, limits) if len(expected) == len(limits) == count else None


def check(*, dataset: str, task_id: str, entry_point: str, reference: str, candidate: str,
          inputs_json: str, atol: float, min_time_limit_s: float,
          time_limit_factor: float, task_time_limit_s: float = 60.0,
          oracle: str = "") -> None:
  """Raises unless the candidate's outputs match the reference's within the time limits.

  oracle: `print_oracle`'s output for this problem (the reference's outputs and the
    time limits); without one (or an unreadable one), the reference runs here first.
  """
  inputs = _inputs(dataset, task_id, inputs_json)
  known = _decoded(oracle, len(inputs)) if oracle else None
  if known is None:
    known = reference_outputs(
        dataset=dataset, task_id=task_id, entry_point=entry_point, reference=reference,
        inputs=inputs, min_time_limit_s=min_time_limit_s,
        time_limit_factor=time_limit_factor, task_time_limit_s=task_time_limit_s)
  expected, limits = known
  signal.signal(signal.SIGALRM, _on_alarm)
  candidate_fn = _function(candidate, entry_point, "candidate")
  budget = min(task_time_limit_s, sum(limits)) + 1.0
  deadline = time.perf_counter() + budget
  for index, (inp, want, limit) in enumerate(zip(inputs, expected, limits)):
    left = deadline - time.perf_counter()
    try:
      output = _timed(candidate_fn, inp, min(limit, left))
    except TimeLimitExceeded:
      over = (f"its {limit:.3g} s limit" if limit <= left else
              f"the task's {budget:.3g} s for all inputs")
      raise TimeLimitExceeded(f"input {index}: over {over}") from None
    if not _matches(dataset, entry_point, inp, output, want, atol):
      raise AssertionError(f"input {index}: got {output!r:.200}, expected {want!r:.200}")
