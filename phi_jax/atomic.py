"""Whole-or-nothing file writes: write a temp file beside the target, then rename.

A reader (or a resumed run) sees the old file or the complete new one, never half of
one. Every artifact phi_jax writes as a file goes through here.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any


@contextlib.contextmanager
def writing(path: str, mode: str = "wb") -> Iterator[IO]:
  """A file to write `path` through: a temp file beside it, renamed over it on success.

  For outputs written piece by piece (streamed rewrites of large files). If the block
  raises, the temp file is removed and `path` is untouched. `mode` is 'wb' or 'w'
  (text: UTF-8, '\\n' newlines). Parent directories are created.
  """
  if mode not in ("wb", "w"):
    raise ValueError(f"atomic.writing: mode must be 'wb' or 'w', got {mode!r}")
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=directory)
  try:
    text = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
    with os.fdopen(fd, mode, **text) as f:
      yield f
    os.chmod(tmp, 0o644)  # mkstemp makes 0600
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically (parent directories are created)."""
  with writing(path, "wb") as f:
    f.write(data)


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically (parent directories are created)."""
  write_bytes(path, text.encode("utf-8"))


def write_json(obj: Any, path: str) -> None:
  """Pretty, key-sorted JSON (non-JSON values written with str)."""
  write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str,
                              ensure_ascii=False) + "\n")


def write_jsonl(rows: Iterable[dict], path: str) -> None:
  """One JSON object per line."""
  write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def filter_jsonl(path: str, keep: Callable[[dict], bool]) -> int:
  """Rewrites the JSONL file `path` atomically with only the lines whose object `keep`
  accepts (streamed; blank lines are dropped); returns how many lines were dropped.

  Lines are copied byte for byte. A line that is not a JSON object raises ValueError
  naming path:line, and `path` is left as it was.
  """
  dropped = 0
  with open(path, "rb") as src, writing(path, "wb") as dst:
    for number, line in enumerate(src, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError as e:
        raise ValueError(f"{path}:{number}: not a JSON line ({e})") from None
      if not isinstance(row, dict):
        raise ValueError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
      if keep(row):
        dst.write(line)
      else:
        dropped += 1
  return dropped
