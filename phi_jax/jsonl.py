"""Reading JSON-lines files (.jsonl, or .jsonl.gz) with errors that name file:line.

The one reader behind benchmark data, samples, problem files and training documents;
writes go through `phi_jax.atomic`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any


def read_jsonl(path: str, *, error: type[Exception] = ValueError,
               objects: bool = True) -> Iterator[tuple[int, Any]]:
  """(line number, value) of each non-blank line.

  A line that is not JSON, or (with objects=True) not a JSON object, raises `error`
  with a message that starts with `path:line:`.
  """
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        value = json.loads(line)
      except json.JSONDecodeError as e:
        raise error(f"{path}:{number}: invalid JSON ({e})") from None
      if objects and not isinstance(value, dict):
        raise error(f"{path}:{number}: expected a JSON object, got {type(value).__name__}")
      yield number, value
