"""n-gram overlap between training text and benchmark problems.

phi-1 (section 5.2) counted 13-gram overlaps between HumanEval docstrings and
CodeExercises. Here a text is cut into units, either

  * 'words' (the paper's, and GPT-3's decontamination): maximal runs of letters,
    digits and underscores, lowercased; punctuation and layout are ignored, so a
    docstring re-indented or re-wrapped still matches; or
  * 'code_tokens': the same words plus every other non-space character as a token of
    its own (case kept), for overlap of code where operators matter;

and every run of n consecutive units is an n-gram. The index maps each n-gram of the
benchmark fields (prompt, docstring, canonical solution: configurable) to the problems
and fields it occurs in; it is built once, and a corpus streams through it one sample
at a time (O(length) dictionary look-ups per sample). A benchmark field shorter than n
units has no n-gram and cannot match.

A sample overlaps a problem when at least `min_matches` distinct n-grams of the sample
occur in that problem's indexed fields; its score for the problem is that count.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from data_pipeline.decontaminate.targets import Target

_WORD = re.compile(r"[A-Za-z0-9_]+")
_CODE_TOKEN = re.compile(r"\w+|[^\w\s]")
UNITS = ("words", "code_tokens")
FIELDS = ("prompt", "docstring", "solution")


def units_of(text: str, unit: str = "words") -> list[str]:
  """The units a text is cut into (see the module docstring)."""
  if unit == "words":
    return _WORD.findall(text.lower())
  if unit == "code_tokens":
    return _CODE_TOKEN.findall(text)
  raise ValueError(f"ngram unit must be one of {UNITS}, got {unit!r}")


def ngrams(units: Sequence[str], n: int) -> set[tuple[str, ...]]:
  """The distinct n-grams of a unit sequence."""
  return {tuple(units[i:i + n]) for i in range(len(units) - n + 1)}


@dataclasses.dataclass
class Overlap:
  """A sample's n-gram overlap with its most overlapping problem."""
  target: int  # index of the problem (-1: no overlap)
  matches: int  # distinct shared n-grams with that problem
  fields: list[str]  # the problem's fields those n-grams occur in
  example: str  # one shared n-gram, joined by spaces


class NgramIndex:
  """The n-grams of benchmark fields, for streaming samples through.

  Args:
    targets: the benchmark problems.
    n: the n-gram length (13: the paper's).
    unit: 'words' or 'code_tokens'.
    fields: which of the problems' fields are indexed.
  """

  def __init__(self, targets: Sequence[Target], n: int = 13, unit: str = "words",
               fields: Sequence[str] = FIELDS):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
      raise ValueError(f"ngram n must be a positive integer, got {n!r}")
    bad = [f for f in fields if f not in FIELDS]
    if bad or not fields:
      raise ValueError(f"ngram fields must be among {FIELDS}, got {list(fields)}")
    units_of("", unit)  # validates the unit
    self.n, self.unit, self.fields = n, unit, tuple(fields)
    self.index: dict[tuple[str, ...], dict[int, set[str]]] = {}
    for t, target in enumerate(targets):
      texts = target.fields()
      for field in self.fields:
        for gram in ngrams(units_of(texts[field], unit), n):
          self.index.setdefault(gram, {}).setdefault(t, set()).add(field)

  def __len__(self) -> int:
    return len(self.index)

  def shared(self, text: str) -> dict[int, list[tuple[str, ...]]]:
    """Every problem sharing n-grams with `text`: {problem index: the shared n-grams}."""
    per_target: dict[int, list[tuple[str, ...]]] = {}
    for gram in ngrams(units_of(text, self.unit), self.n):
      hits = self.index.get(gram)
      if hits:
        for t in hits:
          per_target.setdefault(t, []).append(gram)
    return per_target

  def overlap(self, text: str) -> Overlap:
    """The problem sharing the most n-grams with `text`."""
    per_target = self.shared(text)
    if not per_target:
      return Overlap(-1, 0, [], "")
    target = min(per_target, key=lambda t: (-len(per_target[t]), t))
    grams = per_target[target]
    fields = sorted({f for gram in grams for f in self.index[gram][target]})
    return Overlap(target, len(grams), fields, " ".join(min(grams)))
