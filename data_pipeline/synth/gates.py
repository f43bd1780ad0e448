"""Quality gates of synthetic samples: each failure is a (gate, reason) pair, never a
silent drop.

Textbooks (`check_textbook`):
  truncated   the teacher stopped at max_tokens (finish_reason 'length')
  no_code     fewer than `min_code_blocks` Python blocks
  syntax      a Python block does not parse (named by its line in the answer)
  too_short   fewer than `min_words` words of prose outside the code blocks

Exercises (`check_exercise`, then `verify_exercises` in the sandbox):
  truncated, no_code, syntax, structure   (parse.extract_exercise)
  function    not a self-contained, documented function with a non-trivial body: the
              rules of the exercise miner (data_pipeline/exercises.py), so synthetic and
              mined exercises meet one bar (e.g. 'no_docstring', 'trivial_body',
              'not_self_contained:math')
  tests       fewer than `min_tests` doctest examples + asserts
  doctest     a doctest example of the docstring fails (the expected output is quoted)
  asserts     an assert after the function fails
  execution   anything else when run: an exception, a timeout (an infinite loop), memory,
              an early exit; the sandbox contains it (eval.sandbox.Sandbox)

Options beyond the paper (their own modules):
  weak_tests           the exercise's tests kill too few mutants of its solution
                       (adequacy.py, with config.synth.exercises.mutants)
  benchmark_proximity  a sample near a benchmark problem by n-grams or AST match rate
                       (proximity.py, with config.synth.proximity.checks)

Both (`DuplicateGate`):
  duplicate   exact (whitespace-normalised) or near (MinHash Jaccard of word 5-grams >=
              threshold) duplicate of an earlier accepted sample, or of a curated document
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from data_pipeline.dedup import MinHasher, text_hash
from data_pipeline.exercises import ExerciseMiner
from data_pipeline.synth import parse
from data_pipeline.synth.parse import ExerciseParts, Rejected
from eval.sandbox import ExecutionResult, Sandbox

DOCTEST_FAILURE = "DoctestFailure"

_PROGRAM = '''\
{function}

import doctest as _synth_doctest


class {failure}(Exception):
  """Doctest examples of the function failed (the report is on stdout)."""


_synth_runner = _synth_doctest.DocTestRunner(
    optionflags=_synth_doctest.ELLIPSIS | _synth_doctest.NORMALIZE_WHITESPACE)
for _synth_test in _synth_doctest.DocTestFinder(recurse=False).find(
    {name}, {name!r}, globs=dict(globals())):
  _synth_runner.run(_synth_test)
if _synth_runner.failures:
  raise {failure}(
      f"{{_synth_runner.failures}} of {{_synth_runner.tries}} doctest example(s) failed")

{asserts}
'''


@dataclasses.dataclass(frozen=True)
class CheckedExercise:
  """An exercise that passed the static gates: its parts and CodeExercises split."""
  parts: ExerciseParts
  prompt: str
  solution: str

  def program(self) -> str:
    """The program the sandbox runs: the function, its doctests, then its asserts."""
    return _PROGRAM.format(function=self.parts.function, name=self.parts.name,
                           failure=DOCTEST_FAILURE, asserts="\n".join(self.parts.asserts))


def _check_complete(finish_reason: str | None) -> None:
  if finish_reason == "length":
    raise Rejected("truncated", "the teacher stopped at max_tokens (finish_reason "
                   "'length'); raise the generator's max_tokens")


def check_textbook(text: str, finish_reason: str | None, *, min_code_blocks: int = 1,
                   min_words: int = 50) -> None:
  """Raises Rejected when a textbook answer fails a gate (see the module docstring)."""
  _check_complete(finish_reason)
  blocks = parse.python_blocks(text)
  if len(blocks) < min_code_blocks:
    raise Rejected("no_code", f"{len(blocks)} Python code block(s), at least "
                   f"{min_code_blocks} required")
  for block in blocks:
    try:
      parse.parse_python(parse.block_source(block))
    except SyntaxError as e:
      raise Rejected("syntax", f"the code block at line {block.line} does not parse: "
                     f"line {e.lineno} of the block: {e.msg}") from None
  words = len(parse.prose(text).split())
  if words < min_words:
    raise Rejected("too_short", f"{words} words of prose outside code, at least "
                   f"{min_words} required")


def check_exercise(text: str, finish_reason: str | None, *, min_tests: int = 2,
                   min_docstring_chars: int = 16) -> CheckedExercise:
  """The static gates of an exercise answer (everything but running it)."""
  _check_complete(finish_reason)
  parts = parse.extract_exercise(text)
  miner = ExerciseMiner(min_docstring_chars=min_docstring_chars, dedup=False)
  node = parse.parse_python(parts.function).body[0]
  split = miner.split_function(parts.function, node)
  if isinstance(split, str):
    raise Rejected("function", split)
  if parts.tests < min_tests:
    raise Rejected("tests", f"{parts.doctests} doctest example(s) and {len(parts.asserts)} "
                   f"assert(s): at least {min_tests} tests required")
  prompt, solution = split
  return CheckedExercise(parts, prompt, solution)


def verdict(result: ExecutionResult, timeout_s: float) -> Rejected | None:
  """The gate an execution result fails (None: it passed its own tests)."""
  if result.passed:
    return None
  if result.failure == f"exception:{DOCTEST_FAILURE}":
    return Rejected("doctest", "doctest example failed: " + _doctest_report(result.stdout_tail))
  if result.failure == "assertion":
    return Rejected("asserts", "assert failed: " + _last_lines(result.stderr_tail, 3))
  if result.failure == "timeout":
    return Rejected("execution", f"timeout: still running after the limit ({timeout_s:g}s "
                    f"wall / CPU); an infinite loop or a far too slow solution")
  detail = _last_lines(result.stderr_tail, 2)
  return Rejected("execution", f"{result.failure}" + (f": {detail}" if detail else ""))


def verify_exercises(sandbox: Sandbox, exercises: Sequence[CheckedExercise], *,
                     workers: int | None = None, progress: bool = False
                     ) -> list[Rejected | None]:
  """Runs each exercise's own tests in the sandbox (in parallel); the gate each fails."""
  results = sandbox.run_many([exercise.program() for exercise in exercises], workers=workers,
                             progress=progress)
  return [verdict(result, sandbox.limits.timeout_s) for result in results]


def _last_lines(text: str, n: int) -> str:
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  return " | ".join(lines[-n:])[:500]


def _doctest_report(stdout: str) -> str:
  """The first failing example of doctest's report, on one line."""
  report = stdout.split("*" * 70)
  body = next((part for part in report if "Failed example:" in part), stdout)
  lines = [line.strip() for line in body.strip().splitlines()]
  lines = [line for line in lines
           if line and not line.startswith(("File ", "Traceback (most recent call last)"))]
  return " | ".join(lines)[:500]


class DuplicateGate:
  """Exact and near duplicates among accepted samples, and against curated documents.

  `check` is called in a fixed order (request index) and keeps the first of a group, so
  the verdicts are a function of the samples, not of when they arrived.

  Args:
    threshold: MinHash Jaccard (word 5-grams) at or above which two texts are duplicates.
    num_perm: MinHash permutations.
  """

  def __init__(self, threshold: float = 0.8, num_perm: int = 128):
    self.threshold = threshold
    self.hasher = MinHasher(num_perm=num_perm)
    self._lsh = self.hasher.lsh(threshold)
    self._exact: dict[bytes, str] = {}
    self._kept: dict[str, object] = {}  # id -> MinHash of the accepted samples

  def check(self, sample_id: str, text: str) -> Rejected | None:
    """None (and `sample_id` is remembered) unless `text` duplicates an earlier one."""
    key = text_hash(text)
    if key in self._exact:
      return Rejected("duplicate", f"exact duplicate of {self._exact[key]}")
    minhash = self.hasher(text)
    for other in sorted(self._lsh.query(minhash)):
      similarity = float(self._kept[other].jaccard(minhash))
      if similarity >= self.threshold:
        return Rejected("duplicate", f"near duplicate (Jaccard {similarity:.2f}) of {other}")
    self._exact[key] = sample_id
    self._lsh.insert(sample_id, minhash, check_duplication=False)
    self._kept[sample_id] = minhash
    return None

  def against(self, documents: Iterable[tuple[str, str]]) -> dict[str, Rejected]:
    """The accepted samples that duplicate one of `documents` ((origin, text), streamed
    once: the curated data is not held in memory): {sample id: its rejection}."""
    found: dict[str, Rejected] = {}
    for origin, text in documents:
      sample_id = self._exact.get(text_hash(text))
      if sample_id is not None and sample_id not in found:
        found[sample_id] = Rejected("duplicate", f"exact duplicate of curated {origin}")
        continue
      if not self._kept:
        continue
      minhash = self.hasher(text)
      for other in sorted(self._lsh.query(minhash)):
        if other in found:
          continue
        similarity = float(self._kept[other].jaccard(minhash))
        if similarity >= self.threshold:
          found[other] = Rejected("duplicate", f"near duplicate (Jaccard {similarity:.2f}) "
                                  f"of curated {origin}")
    return found
