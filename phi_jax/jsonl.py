"""Reading JSON-lines files (.jsonl, or .jsonl.gz) with errors that name file:line.

The one reader behind benchmark data, samples, problem files and training documents;
writes go through `phi_jax.atomic`, or, for output that grows as work is done and must
survive a kill (resumable evaluation), through `Appender` and `read_appended`.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

# on_error(reason, "path:line", detail) for a skipped line; reasons:
BAD_LINE_REASONS = ("invalid_utf8", "invalid_json", "not_an_object")


def read_jsonl(path: str, *, error: type[Exception] = ValueError, objects: bool = True,
               on_error: Callable[[str, str, str], None] | None = None,
               start: int = 0, stop: int | None = None) -> Iterator[tuple[int, Any]]:
  """(line number, value) of each non-blank line.

  A line that is not UTF-8, not JSON, or (with objects=True) not a JSON object raises
  `error` with a message that starts with `path:line:`; with `on_error` given, it is
  reported as on_error(reason, "path:line", detail) instead and skipped (data files,
  where a bad line is counted, never fatal).

  start, stop: only the non-blank lines start .. stop-1 (counted from 0, as
  `count_jsonl` counts them); the lines before `start` are read but not decoded, and
  reading ends at `stop`.
  """

  def bad(reason: str, where: str, detail: str) -> None:
    if on_error is None:
      raise error(f"{where}: {detail}")
    on_error(reason, where, detail)

  opener = gzip.open if path.endswith(".gz") else open
  index = -1
  with opener(path, "rb") as f:
    for number, raw in enumerate(f, 1):
      if not raw.strip():
        continue
      index += 1
      if index < start:
        continue
      if stop is not None and index >= stop:
        break
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


def count_jsonl(path: str) -> int:
  """The number of non-blank lines of a JSONL file (.jsonl or .jsonl.gz): the values
  `read_jsonl` reads from a well-formed file, counted without decoding them."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    return sum(1 for raw in f if raw.strip())


def iter_appended(path: str, *, repair: bool = True,
                  on_partial: Callable[[int], None] | None = None,
                  bad_line: str = "corrupt record") -> Iterator[tuple[int, dict]]:
  """(line number, object) of each record of an append-only JSONL file (see `Appender`),
  streamed.

  A writer killed mid-line leaves a last line without its newline: that line is
  dropped (`on_partial` gets its length in bytes), and with `repair` cut off the file,
  once the iteration ends, so appending can go on. Any other bad line raises
  ValueError naming path:line and `bad_line` (the file is corrupt, not interrupted). A
  missing file has no records.
  """
  if not os.path.exists(path):
    return
  complete_end = 0  # bytes up to the end of the last complete line
  with open(path, "rb") as f:
    for number, raw in enumerate(f, 1):
      if not raw.endswith(b"\n"):
        if on_partial is not None:
          on_partial(len(raw))
        break
      complete_end += len(raw)
      if not raw.strip():
        continue
      try:
        value = json.loads(raw.decode("utf-8"))
      except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}:{number}: {bad_line} ({e}); fix or delete that line "
                         "to resume") from None
      if not isinstance(value, dict):
        raise ValueError(f"{path}:{number}: expected a JSON object, got "
                         f"{type(value).__name__}")
      yield number, value
  if repair and complete_end < os.path.getsize(path):
    with open(path, "r+b") as f:
      f.truncate(complete_end)


def read_appended(path: str, *, repair: bool = True) -> list[tuple[int, dict]]:
  """`iter_appended`'s records as a list."""
  return list(iter_appended(path, repair=repair))


class Appender:
  """Appends JSON objects to a file, one line each, flushed to disk per `write` call, so
  a killed process loses at most the line being written (which `read_appended` drops).

      with Appender(path) as out:
        out.write(rows)
  """

  def __init__(self, path: str):
    self.path = path
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    self._file = open(path, "ab")  # pylint: disable=consider-using-with

  def write(self, rows: Iterable[dict]) -> None:
    data = b"".join(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n" for row in rows)
    if data:
      self._file.write(data)
      self._file.flush()
      os.fsync(self._file.fileno())

  def close(self) -> None:
    self._file.close()

  def __enter__(self) -> Appender:
    return self

  def __exit__(self, *exc) -> None:
    self.close()
