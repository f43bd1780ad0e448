"""Grounded textbooks (beyond the paper): each textbook request carries an extract of the
filtered code as a seed, as Cosmopedia seeds its prompts with web extracts, so that the
sections follow code people wrote rather than only the teacher's habits.

    corpus = SeedCorpus(["workdir/data/curated/filtered_code.jsonl"])
    seed = corpus.extract(seed=0, index=17, chars=1200)
    seed   # {"source": record id, "line": first line, "start": character, "text": ...}

Request i's extract is a function of (seed, i) and the corpus alone: a document drawn
uniformly from the records with a non-empty `text`, then a window of at most `chars`
characters of it that starts at the beginning of a line drawn uniformly among the lines
from which a full window fits (it ends at the last line break inside it; a document
shorter than `chars` is taken whole). The corpus is indexed by byte offset once and
read by seeking, so it is not held in memory.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from typing import Any

import numpy as np


def _rng(seed: int, index: int) -> random.Random:
  digest = hashlib.sha256(f"grounding\n{seed}\n{index}".encode()).digest()
  return random.Random(int.from_bytes(digest[:8], "big"))


class SeedCorpus:
  """The records (JSONL, with a string `text`) extracts are drawn from.

  Args:
    paths: JSONL files of data_pipeline Records (the filtered code).

  Raises:
    ValueError: no record with a non-empty text (naming the files).
  """

  def __init__(self, paths: Sequence[str]):
    self.paths = list(paths)
    files, offsets = [], []
    for f, path in enumerate(self.paths):
      position = 0
      with open(path, "rb") as handle:
        for number, line in enumerate(handle, 1):
          if line.strip():
            try:
              row = json.loads(line)
            except json.JSONDecodeError as e:
              raise ValueError(f"{path}:{number}: not JSON: {e.msg}") from None
            if isinstance(row, dict) and isinstance(row.get("text"), str) and row["text"].strip():
              files.append(f)
              offsets.append(position)
          position += len(line)
    if not offsets:
      raise ValueError(f"grounding: no record with a non-empty 'text' in {self.paths}")
    self.file_N = np.asarray(files, np.int32)
    self.offset_N = np.asarray(offsets, np.int64)

  def __len__(self) -> int:
    return len(self.offset_N)

  def record(self, n: int) -> dict[str, Any]:
    with open(self.paths[int(self.file_N[n])], "rb") as handle:
      handle.seek(int(self.offset_N[n]))
      return json.loads(handle.readline())

  def extract(self, seed: int, index: int, chars: int) -> dict[str, Any]:
    """Request `index`'s extract of at most `chars` characters (see the module doc)."""
    rng = _rng(seed, index)
    n = rng.randrange(len(self))
    row = self.record(n)
    text = row["text"]
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n" and i + 1 < len(text)]
    fitting = [s for s in starts if s <= len(text) - chars] or [0]  # a full window
    line = rng.randrange(len(fitting))
    start = fitting[line]
    window = text[start:start + chars]
    if start + chars < len(text) and "\n" in window:
      window = window[:window.rindex("\n") + 1]
    return {"source": str(row.get("id", f"record {n}")), "line": line + 1, "start": start,
            "text": window}
