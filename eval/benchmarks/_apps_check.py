"""The in-program half of the APPS benchmark: run a candidate on every test case.

Never imported by the evaluator: `eval/benchmarks/apps.py` embeds this file's source in
every program it builds and appends one `check(...)` call. Standard library only. As
APPS's testing_util.py (Hendrycks et al. 2021) does, with a per-test-case time limit
enforced by an interval timer (`TimeLimitExceeded`):

- call-based problems (`fn_name` given): the candidate defines the function, or a class
  `Solution` with that method (LeetCode style); each input is the argument list; the
  output must equal the expected one, or its single element when the expected output is
  a one-element list (APPS stores many outputs wrapped), tuples compared as lists;
- standard-input problems: the candidate is a program run as `__main__` with the input on
  stdin; its stdout must match the expected text line by line (trailing whitespace and
  blank lines ignored), else token by token, else as numbers within numpy.allclose's
  default tolerance (rtol 1e-5, atol 1e-8). `exit()` ends a test case normally.
"""

from __future__ import annotations

import io
import json
import signal
import sys


class TimeLimitExceeded(Exception):
  """The candidate ran longer than the per-test-case time limit."""


def _on_alarm(signum, frame):
  raise TimeLimitExceeded("over the per-test-case time limit")


def _as_text(value) -> str:
  return "\n".join(value) if isinstance(value, list) else str(value)


def _lines(text: str) -> list[str]:
  lines = [line.rstrip() for line in text.strip().splitlines()]
  return [line for line in lines if line]


def _floats(tokens: list[str]) -> list[float] | None:
  try:
    return [float(t) for t in tokens]
  except ValueError:
    return None


def stdout_matches(output: str, expected: str) -> bool:
  if _lines(output) == _lines(expected):
    return True
  got, want = output.split(), expected.split()
  if got == want:
    return True
  got_f, want_f = _floats(got), _floats(want)
  return (got_f is not None and want_f is not None and len(got_f) == len(want_f)
          and all(abs(g - w) <= 1e-8 + 1e-5 * abs(w) for g, w in zip(got_f, want_f)))


def _listify(value):
  if isinstance(value, (tuple, list)):
    return [_listify(v) for v in value]
  return value


def return_matches(output, expected) -> bool:
  if output == expected or _listify(output) == expected:
    return True
  return (isinstance(expected, list) and len(expected) == 1
          and (output == expected[0] or _listify(output) == expected[0]))


def _run_stdin(code, stdin_text: str) -> str:
  stdin = io.TextIOWrapper(io.BytesIO(stdin_text.encode()), encoding="utf-8")
  stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
  saved = sys.stdin, sys.stdout
  sys.stdin, sys.stdout = stdin, stdout
  try:
    exec(code, {"__name__": "__main__"})  # pylint: disable=exec-used
  except SystemExit:
    pass
  finally:
    sys.stdin, sys.stdout = saved
  stdout.flush()
  return stdout.buffer.getvalue().decode("utf-8", errors="replace")


def _function(code, fn_name: str):
  namespace = {"__name__": "candidate"}
  exec(code, namespace)  # pylint: disable=exec-used
  if fn_name in namespace:
    return namespace[fn_name]
  if "Solution" in namespace:
    return getattr(namespace["Solution"](), fn_name)
  raise NameError(f"the candidate defines neither {fn_name} nor Solution.{fn_name}")


def check(*, candidate: str, tests_json: str, time_limit_s: float) -> None:
  """Raises unless the candidate passes every test case within the time limit."""
  tests = json.loads(tests_json)
  code = compile(candidate, "<candidate>", "exec")
  fn_name = tests.get("fn_name")
  signal.signal(signal.SIGALRM, _on_alarm)
  function = None
  for index, (inp, want) in enumerate(zip(tests["inputs"], tests["outputs"])):
    signal.setitimer(signal.ITIMER_REAL, time_limit_s)
    try:
      if fn_name:
        function = function or _function(code, fn_name)
        output = function(*inp)
        ok = return_matches(output, want)
      else:
        output = _run_stdin(code, _as_text(inp))
        ok = stdout_matches(output, _as_text(want))
    finally:
      signal.setitimer(signal.ITIMER_REAL, 0)
    if not ok:
      raise AssertionError(f"test case {index}: got {output!r:.200}, expected {want!r:.200}")
