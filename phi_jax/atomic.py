"""Whole-or-nothing file writes: write a temp file beside the target, then rename.

A reader (or a resumed run) sees the old file or the complete new one, never half of
one. Every artifact phi_jax writes as a file goes through here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from typing import Any


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically (parent directories are created)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


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


class Writer:
  """A text file streamed to a temp file beside `path` and renamed onto it when complete.

  For outputs too large to build in memory first:

      with atomic.Writer("out/kept.jsonl") as f:
        for row in rows:
          f.write(json.dumps(row) + "\\n")

  Leaving the block normally renames the file into place; an exception removes the
  temp file and leaves `path` as it was (absent, or the previous complete file).
  """

  def __init__(self, path: str):
    self.path = path
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, self._tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=directory)
    self._file = os.fdopen(fd, "w", encoding="utf-8")

  def write(self, text: str) -> None:
    self._file.write(text)

  def commit(self) -> None:
    """Closes the temp file and renames it onto `path`."""
    self._file.close()
    os.chmod(self._tmp, 0o644)  # mkstemp makes 0600
    os.replace(self._tmp, self.path)

  def discard(self) -> None:
    """Closes and removes the temp file (a no-op after commit)."""
    self._file.close()
    if os.path.exists(self._tmp):
      os.remove(self._tmp)

  def __enter__(self) -> Writer:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.commit()
    else:
      self.discard()
