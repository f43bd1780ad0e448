"""Whole-or-nothing writes: build a file or directory under a temporary name, then rename.

A reader (or a resumed run) sees the old file or the complete new one, never half of
one. Every artifact phi_jax writes as a file or directory goes through here.

Files and directories get the modes an ordinary `open`/`mkdir` gives (0666/0777 less
the process umask, so 0644/0755 under the usual umask 022), as `transformers` and
Orbax writers do, not the private 0600/0700 of `tempfile.mkstemp`/`mkdtemp`: an export
or a dataset must be readable by a serving container's user or a colleague.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any


def umask() -> int:
  """The process umask, read without changing it (Linux: /proc/self/status)."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError):
    pass
  # Elsewhere the only way is to set and restore it (a brief window for other threads).
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def file_mode() -> int:
  """The mode `open(path, "w")` gives a new file: 0666 less the umask."""
  return 0o666 & ~umask()


def dir_mode() -> int:
  """The mode `os.mkdir` gives a new directory: 0777 less the umask."""
  return 0o777 & ~umask()


def _parent(path: str) -> str:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  return directory


@contextlib.contextmanager
def writing(path: str, mode: str = "wb") -> Iterator[IO]:
  """A file to write `path` through: a temp file beside it, renamed over it on success.

  For outputs written piece by piece. If the block raises, the temp file is removed
  and `path` is untouched. `mode` is 'wb' or 'w' (text: UTF-8, '\\n' newlines). Parent
  directories are created; the file gets the ordinary mode (`file_mode()`).
  """
  if mode not in ("wb", "w"):
    raise ValueError(f"atomic.writing: mode must be 'wb' or 'w', got {mode!r}")
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=_parent(path))
  try:
    os.fchmod(fd, file_mode())  # mkstemp makes 0600
    text = {"encoding": "utf-8", "newline": "\n"} if mode == "w" else {}
    with os.fdopen(fd, mode, **text) as f:
      yield f
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


def write_jsonl(rows: Iterable[dict], path: str) -> int:
  """One JSON object per line, streamed (rows may be a generator over more than fits in
  memory); returns how many."""
  count = 0
  with writing(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + "\n")
      count += 1
  return count


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


def temp_dir(target: str, prefix: str | None = None) -> str:
  """A new empty directory beside `target` (same file system, so it can be renamed onto
  it), with the ordinary directory mode. prefix: default '<name>.tmp-'."""
  path = tempfile.mkdtemp(prefix=prefix or os.path.basename(os.path.abspath(target)) + ".tmp-",
                          dir=_parent(target))
  os.chmod(path, dir_mode())
  return path


def replace_dir(tmp: str, target: str) -> None:
  """Moves the finished directory `tmp` to `target`, replacing an existing one.

  The old directory is first renamed aside, so `target` is at every moment either the
  old complete directory, absent for an instant, or the new one.
  """
  if not os.path.exists(target):
    os.replace(tmp, target)
    return
  stale = tempfile.mkdtemp(prefix=f"{os.path.basename(target)}.stale-",
                           dir=os.path.dirname(os.path.abspath(target)))
  os.replace(target, os.path.join(stale, "old"))
  os.replace(tmp, target)
  shutil.rmtree(stale, ignore_errors=True)


class AtomicDirectory:
  """Builds a directory under a temporary name and renames it into place on success.

      with AtomicDirectory(out_dir) as tmp:
        ... write files into tmp ...

  A crash leaves only `<path>.tmp-*`, never a directory that looks complete. An
  existing `path` is an error unless `overwrite`, and is replaced only on success.
  """

  def __init__(self, path: str, overwrite: bool = False):
    self.path = os.path.abspath(path)
    self.overwrite = overwrite
    self.tmp = ""

  def __enter__(self) -> str:
    if os.path.exists(self.path) and not self.overwrite:
      raise FileExistsError(f"{self.path} already exists (pass overwrite to replace it)")
    self.tmp = temp_dir(self.path)
    return self.tmp

  def __exit__(self, exc_type, exc, tb) -> bool:
    if exc_type is not None:
      shutil.rmtree(self.tmp, ignore_errors=True)
      return False
    replace_dir(self.tmp, self.path)
    return False
