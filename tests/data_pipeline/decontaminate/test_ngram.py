from __future__ import annotations

import pytest

from data_pipeline.decontaminate.ngram import NgramIndex, ngrams, units_of
from tests.data_pipeline.decontaminate.conftest import UNRELATED


def test_units():
  assert units_of("Return the SUM, of x_1 and y.") == ["return", "the", "sum", "of", "x_1",
                                                       "and", "y"]
  assert units_of("a[i] += 1", "code_tokens") == ["a", "[", "i", "]", "+", "=", "1"]
  with pytest.raises(ValueError, match="unit"):
    units_of("x", "letters")


def test_ngrams_are_the_distinct_windows():
  assert ngrams(list("abcab"), 2) == {("a", "b"), ("b", "c"), ("c", "a")}
  assert ngrams(list("ab"), 3) == set()


def test_verbatim_docstring_is_caught(humaneval_targets):
  index = NgramIndex(humaneval_targets, n=13)
  target = next(t for t in humaneval_targets if t.task_id == "HumanEval/12")
  # the docstring re-wrapped and embedded in a textbook paragraph
  text = ("Exercise 4. Write the function below.\n\n" + " ".join(target.docstring.split())
          + "\n\nHint: iterate once.")
  overlap = index.overlap(text)
  assert humaneval_targets[overlap.target].task_id == "HumanEval/12"
  assert overlap.matches >= 5
  assert "docstring" in overlap.fields and len(overlap.example.split()) == 13


def test_unrelated_code_has_no_overlap(humaneval_targets):
  index = NgramIndex(humaneval_targets, n=13)
  assert index.overlap(UNRELATED).matches == 0
  assert index.overlap("").target == -1


def test_fields_restrict_the_index(humaneval_targets):
  target = next(t for t in humaneval_targets if t.task_id == "HumanEval/12")
  solution_only = NgramIndex(humaneval_targets, n=13, fields=("solution",))
  assert solution_only.overlap(target.docstring).matches == 0
  with pytest.raises(ValueError, match="fields"):
    NgramIndex(humaneval_targets, fields=("tests",))
  with pytest.raises(ValueError, match="positive"):
    NgramIndex(humaneval_targets, n=0)
