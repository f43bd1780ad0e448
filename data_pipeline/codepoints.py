"""A text's characters as a numpy array of code points, and per-code-point tables of a
regular-expression character class, so a class can be tested on every character of a
text at once (`table(r"\\W")[codes(text)]`).

    codes(text)             uint8 (ASCII text) or uint32 code points of text
    table(pattern)          bool[0x110000]: which code points `pattern` does NOT match
"""

from __future__ import annotations

import functools
import re

import numpy as np

NUM_CODE_POINTS = 0x110000


def codes(text: str) -> np.ndarray:
  """The code points of `text`: uint8 when it is ASCII (one copy of its bytes), else
  uint32 (lone surrogates included)."""
  if text.isascii():
    return np.frombuffer(text.encode("ascii"), np.uint8)
  return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), "<u4")


@functools.cache
def table(pattern: str, size: int = NUM_CODE_POINTS) -> np.ndarray:
  """bool[size]: True for the code points below `size` that the one-character class
  `pattern` does not match (e.g. r"\\W" gives the word characters). Built with the
  regular-expression engine itself, once per pattern (about 0.1 s for every code point)."""
  every = "".join(map(chr, range(size)))
  marked = re.sub(pattern, "\0", every)  # one character for one: NUL where it matches
  return np.frombuffer(marked.encode("utf-32-le", "surrogatepass"), "<u4") != 0
