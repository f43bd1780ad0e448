"""Tests of data_pipeline.codepoints against Python's own per-character answers."""

import numpy as np

from data_pipeline import codepoints


def test_codes_are_the_code_points():
  assert codepoints.codes("ab~\x7f").dtype == np.uint8
  for text in ("ab~\x7f", "é ü 𝔘 x_1 \ud800", ""):
    assert codepoints.codes(text).tolist() == [ord(c) for c in text]


def test_table_marks_what_the_class_does_not_match_on_every_code_point():
  word = codepoints.table(r"\W")
  assert word.shape == (0x110000,)
  every = "".join(map(chr, range(0x110000)))
  assert np.flatnonzero(word).tolist() == [ord(c) for c in every
                                           if c.isalnum() or c == "_"]
  assert codepoints.table(r"\W", 128).tolist() == word[:128].tolist()
