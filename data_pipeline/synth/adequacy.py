"""Test adequacy of exercises: how many mutants of its reference solution an exercise's
own doctests and asserts kill (mutation testing; the mutants: data_pipeline/synth/
mutants.py).

    results = mutation_scores(sandbox, exercises, seed=0, limit=12, mutant_timeout_s=2.0)
    results[0].score      # killed / (killed + survived); None when nothing could be measured
    weak = weak_tests(results[0], min_score=0.6)   # Rejected('weak_tests', ...) or None

Every mutant runs in the sandbox, never on the host. To keep that fast, the mutants of
one exercise run as one sandboxed program: a driver that executes each mutant's program
(the mutated function, then the exercise's doctests and asserts, as gates.py's program
runs them) in a fresh namespace of its own with its output captured, under a per-mutant
timer (`mutant_timeout_s`, SIGALRM), and prints one status line per mutant. The
unmutated function runs first, as a control: when it does not pass there (a flaky or
order-dependent test), the exercise is not measured (score None) rather than credited
with kills it did not make. The exercises' drivers run in parallel (Sandbox.run_many).

Each mutant ends as one of:
  killed     the tests failed: a doctest, an assert, or an exception while they ran
             (an exit included)
  survived   the tests passed
  timeout    still running after mutant_timeout_s (a loop the mutation made endless;
             the timer repeats until the mutant gives up, even when its code or the
             doctest runner catches the timer's exception)
  memory     MemoryError
  crashed    it ended the driver itself (os._exit, a crash, the sandbox's own wall or
             CPU limit): the mutants after it run again in a new driver

The score counts only the mutants that ran to a verdict: killed / (killed + survived).
Timeouts, memory errors and crashes are excluded (they say little about the tests).
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
from collections.abc import Sequence

from data_pipeline.synth import mutants as mutants_lib
from data_pipeline.synth.parse import Rejected
from eval.sandbox import Sandbox

STATUSES = ("killed", "survived", "timeout", "memory", "crashed")
CONTROL = -1  # the index of the unmutated function in a driver
NOT_RUN = "not_run"  # the control's status when the function has no mutation site

_DRIVER = '''\
import contextlib as _m_contextlib
import io as _m_io
import json as _m_json
import signal as _m_signal
import sys as _m_sys

_M_PROGRAMS = _m_json.loads({programs!r})
_M_TIMEOUT_S = {timeout!r}
_M_MARK = {mark!r}
_M_REPEAT_S = 0.05


class _MutantTimeout(BaseException):
  """Raised by the per-mutant timer (not an Exception: `except Exception` misses it)."""


def _m_alarm(signum, frame):
  # The flag decides the status even when the mutant's code (or doctest's runner, which
  # catches everything) swallows the exception; the timer repeats until the mutant
  # ends. Never raised inside this driver's own code, whose bookkeeping must finish.
  global _m_timed_out
  _m_timed_out = True
  if frame is None or frame.f_globals is not _M_GLOBALS:
    raise _MutantTimeout()


_M_GLOBALS = globals()
_m_signal.signal(_m_signal.SIGALRM, _m_alarm)
_m_out = _m_sys.stdout
for _m_index, _m_program in _M_PROGRAMS:
  _m_status = "survived"
  _m_timed_out = False
  try:
    _m_code = compile(_m_program, f"<mutant {{_m_index}}>", "exec")
    _m_sink = _m_io.StringIO()
    _m_signal.setitimer(_m_signal.ITIMER_REAL, _M_TIMEOUT_S, _M_REPEAT_S)
    try:
      with _m_contextlib.redirect_stdout(_m_sink), _m_contextlib.redirect_stderr(_m_sink):
        exec(_m_code, {{"__name__": "__main__", "__builtins__": __builtins__}})
    finally:
      _m_signal.setitimer(_m_signal.ITIMER_REAL, 0)
  except MemoryError:
    _m_status = "memory"
  except BaseException:
    _m_status = "killed"
  if _m_timed_out:
    _m_status = "timeout"
  _m_sys.stdout = _m_out
  print(_M_MARK, _m_json.dumps([_m_index, _m_status]), file=_m_out, flush=True)
  if _m_index == {control} and _m_status != "survived":
    break  # the unmutated tests fail here: the mutants would measure nothing
'''


@dataclasses.dataclass
class MutationResult:
  """The mutation testing of one exercise.

  Attributes:
    mutants: mutants made (at most the limit; fewer when the function has fewer sites).
    counts: mutants per status (STATUSES).
    survivors: descriptions of the mutants the tests did not kill (e.g. 'comparison
      line 4: < -> <=').
    control: the unmutated function's status in the driver ('survived' = it passed;
      'not_run' when the function has no mutation site).
  """
  mutants: int
  counts: dict[str, int]
  survivors: list[str]
  control: str

  @property
  def ran(self) -> int:
    """Mutants that ran to a verdict (killed or survived)."""
    return self.counts.get("killed", 0) + self.counts.get("survived", 0)

  @property
  def score(self) -> float | None:
    """killed / ran; None when nothing ran to a verdict or the control failed."""
    if self.control != "survived" or not self.ran:
      return None
    return self.counts.get("killed", 0) / self.ran

  def to_json(self) -> dict:
    score = self.score
    return {"score": None if score is None else round(score, 4), "mutants": self.mutants,
            **{status: self.counts.get(status, 0) for status in STATUSES},
            "survivors": list(self.survivors), "control": self.control}

  @classmethod
  def from_json(cls, row: dict) -> MutationResult:
    return cls(row["mutants"], {s: row[s] for s in STATUSES if row.get(s)},
               list(row["survivors"]), row["control"])


def driver(programs: Sequence[tuple[int, str]], mutant_timeout_s: float, mark: str) -> str:
  """The sandboxed program that runs `programs` ((index, source) pairs) one after another
  and prints `mark [index, status]` after each (see the module docstring)."""
  return _DRIVER.format(programs=json.dumps([list(p) for p in programs]),
                        timeout=float(mutant_timeout_s), mark=mark, control=CONTROL)


def _statuses(stdout: str, mark: str) -> dict[int, str]:
  found = {}
  for line in stdout.splitlines():
    if line.startswith(mark + " "):
      try:
        index, status = json.loads(line[len(mark) + 1:])
      except ValueError:
        continue  # not a line of the driver's (output interleaved with a mutant's)
      if status in STATUSES:
        found[int(index)] = status
  return found


def mutation_scores(sandbox: Sandbox, exercises: Sequence[tuple[str, str]], *, seed: int,
                    limit: int, mutant_timeout_s: float, workers: int | None = None
                    ) -> list[MutationResult]:
  """Mutation-tests each exercise in the sandbox.

  Args:
    sandbox: runs the drivers; its limits are raised per driver by the mutants' timers
      (wall and CPU: its own limit plus mutant_timeout_s per program it runs).
    exercises: (function, program) pairs: the unmutated function and the program that
      runs its tests (gates.CheckedExercise.program(), which starts with the function);
      each mutant's program is the mutated function followed by the same tests.
    seed: seeds the choice of mutants (with each function's source).
    limit: mutants per exercise at most.
    mutant_timeout_s: each mutant's wall-clock limit inside its driver.
    workers: parallel drivers (None: one per core).
  """
  plans: list[dict[int, str]] = []
  made: list[list[mutants_lib.Mutant]] = []
  for function, program in exercises:
    if not program.startswith(function):
      raise ValueError("mutation_scores: an exercise's program must start with its function")
    tests = program[len(function):]
    found = mutants_lib.mutants(function, seed=seed, limit=limit)
    made.append(found)
    plan = {CONTROL: mutants_lib.unmutated(function) + tests}
    plan.update({i: mutant.source + tests for i, mutant in enumerate(found)})
    plans.append(plan)
  # an exercise without mutation sites has nothing to run (not even its control)
  statuses: list[dict[int, str]] = [{} if found else {CONTROL: NOT_RUN} for found in made]
  pending = [list(plan) if found else [] for plan, found in zip(plans, made)]
  while any(pending):
    active = [e for e, rest in enumerate(pending) if rest]
    mark = "mutant-" + secrets.token_hex(8)
    longest = max(len(pending[e]) for e in active)
    base = sandbox.limits
    budget = base.timeout_s + mutant_timeout_s * longest
    boxed = sandbox.with_limits(dataclasses.replace(
        base, timeout_s=budget, cpu_s=max(base.cpu_s, math.ceil(budget))))
    programs = [driver([(i, plans[e][i]) for i in pending[e]], mutant_timeout_s, mark)
                for e in active]
    results = boxed.run_many(programs, workers=workers)
    for e, result in zip(active, results):
      found = _statuses(result.stdout_tail, mark)
      statuses[e].update({i: s for i, s in found.items() if i in plans[e]})
      rest = [i for i in pending[e] if i not in statuses[e]]
      if rest:  # the driver ended early: the mutant it was running ended it
        statuses[e][rest[0]] = "crashed"
        rest = rest[1:]
      if statuses[e].get(CONTROL, "survived") != "survived":
        rest = []  # the unmutated tests do not pass here: nothing to measure
      pending[e] = rest
  out = []
  for found, status in zip(made, statuses):
    counts: dict[str, int] = {}
    survivors = []
    for i, mutant in enumerate(found):
      if i in status and status[CONTROL] == "survived":
        counts[status[i]] = counts.get(status[i], 0) + 1
        if status[i] == "survived":
          survivors.append(mutant.description)
    out.append(MutationResult(len(found), counts, survivors, status[CONTROL]))
  return out


def weak_tests(result: MutationResult, min_score: float) -> Rejected | None:
  """Rejected('weak_tests') when the tests kill fewer than `min_score` of the mutants
  that ran; None when they kill enough or nothing could be measured."""
  score = result.score
  if score is None or score >= min_score:
    return None
  shown = "; ".join(result.survivors[:5])
  more = f" (+{len(result.survivors) - 5} more)" if len(result.survivors) > 5 else ""
  return Rejected("weak_tests", f"the tests kill {result.counts.get('killed', 0)} of "
                  f"{result.ran} mutants of the solution that ran ({100 * score:.0f}%, at "
                  f"least {100 * min_score:.0f}% required); surviving: {shown}{more}")
