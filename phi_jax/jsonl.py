"""Reading JSON-lines files (.jsonl, or .jsonl.gz) with errors that name file:line.

The one reader behind benchmark data, samples, problem files and training documents;
writes go through `phi_jax.atomic`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from typing import Any

# on_error(reason, "path:line", detail) for a skipped line; reasons:
BAD_LINE_REASONS = ("invalid_utf8", "invalid_json", "not_an_object")


def read_jsonl(path: str, *, error: type[Exception] = ValueError, objects: bool = True,
               on_error: Callable[[str, str, str], None] | None = None
               ) -> Iterator[tuple[int, Any]]:
  """(line number, value) of each non-blank line.

  A line that is not UTF-8, not JSON, or (with objects=True) not a JSON object raises
  `error` with a message that starts with `path:line:`; with `on_error` given, it is
  reported as on_error(reason, "path:line", detail) instead and skipped (data files,
  where a bad line is counted, never fatal).
  """

  def bad(reason: str, where: str, detail: str) -> None:
    if on_error is None:
      raise error(f"{where}: {detail}")
    on_error(reason, where, detail)

  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    for number, raw in enumerate(f, 1):
      if not raw.strip():
        continue
      where = f"{path}:{number}"
      try:
        value = json.loads(raw.decode("utf-8"))
      except UnicodeDecodeError as e:
        bad("invalid_utf8", where, f"not UTF-8 (byte offset {e.start})")
        continue
      except json.JSONDecodeError as e:
        bad("invalid_json", where, f"invalid JSON ({e})")
        continue
      if objects and not isinstance(value, dict):
        bad("not_an_object", where, f"expected a JSON object, got {type(value).__name__}")
        continue
      yield number, value
