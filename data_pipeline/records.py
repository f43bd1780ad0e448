"""The two record types that flow through the data pipeline, and their JSONL form.

A `Record` is one document (a code file, a StackOverflow post, a synthetic textbook
section); an `Exercise` is one `prompt -> solution` pair (a function signature and
docstring, and the body that answers it). Both keep where they came from (`origin`,
`license`) and serialise to one JSON object per line (schemas in docs/data.md):

    Record    {"id", "text", "origin", "license", "meta"}
    Exercise  {"id", "prompt", "solution", "origin", "license", "meta"}

Ids are stable across runs: the sha1 of the origin (plus a row index for sources
whose rows share one file), see `record_id`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from phi_jax import atomic
from phi_jax.jsonl import read_jsonl


class RecordError(ValueError):
  """A JSON object is not a valid Record/Exercise (the message names where)."""


def record_id(origin: str, index: int | str | None = None) -> str:
  """Stable id: sha1 hex of the origin, or of `origin#index` for a row of a file."""
  key = origin if index is None else f"{origin}#{index}"
  return hashlib.sha1(key.encode("utf-8")).hexdigest()


_T = TypeVar("_T", bound="_JsonRecord")


class _JsonRecord:
  """to_json/from_json shared by Record and Exercise (dataclasses)."""

  def to_json(self) -> dict[str, Any]:
    """The record as a JSON-serialisable dict (one JSONL line)."""
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls: type[_T], obj: dict[str, Any], where: str = "") -> _T:
    """The record from its JSON object; `where` (e.g. "file.jsonl:12") prefixes errors."""
    prefix = f"{where}: " if where else ""
    if not isinstance(obj, dict):
      raise RecordError(f"{prefix}expected a JSON object for a {cls.__name__}, "
                        f"got {type(obj).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(obj) - set(fields))
    if unknown:
      raise RecordError(f"{prefix}unknown {cls.__name__} field(s) {unknown}")
    for name, f in fields.items():
      has_default = (f.default is not dataclasses.MISSING
                     or f.default_factory is not dataclasses.MISSING)
      if name not in obj and not has_default:
        raise RecordError(f"{prefix}{cls.__name__} is missing the field {name!r}")
      if name not in obj:
        continue
      value = obj[name]
      if name == "meta":
        if not isinstance(value, dict):
          raise RecordError(f"{prefix}field 'meta' must be an object, got "
                            f"{type(value).__name__}")
      elif name == "license":
        if value is not None and not isinstance(value, str):
          raise RecordError(f"{prefix}field 'license' must be a string or null, got "
                            f"{type(value).__name__}")
      elif not isinstance(value, str):
        raise RecordError(f"{prefix}field {name!r} must be a string, got "
                          f"{type(value).__name__}")
    return cls(**obj)


@dataclasses.dataclass
class Record(_JsonRecord):
  """One document: code file, post or textbook section.

  Attributes:
    id: stable id (see `record_id`).
    text: the document.
    origin: where it came from: a file path, `path:line` of a JSONL row, or
      `hf:<dataset>...#row` of a Hugging Face row.
    license: the license field of the source, when it has one.
    meta: anything else worth keeping (language, source root, repo name, ...).
  """
  id: str
  text: str
  origin: str
  license: str | None = None
  meta: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Exercise(_JsonRecord):
  """One `prompt -> solution` pair (CodeExercises format).

  Attributes:
    id: stable id.
    prompt: the `def f(...):` line(s) and the indented docstring, ending in a newline.
    solution: the rest of the function body (indented), ending in a newline;
      `prompt + solution` is the whole function.
    origin: where the function came from (file path, row).
    license: the license of that origin, when known.
    meta: e.g. {"function": qualified name, "lineno": line of the def, "record_id"}.
  """
  id: str
  prompt: str
  solution: str
  origin: str
  license: str | None = None
  meta: dict = dataclasses.field(default_factory=dict)


def write_records(records: Iterable[_JsonRecord], path: str) -> int:
  """Writes records (Record or Exercise) as JSONL, atomically and streamed (`records`
  may be a generator over a corpus); returns how many."""
  return atomic.write_jsonl((record.to_json() for record in records), path)


def read_records(path: str, cls: type[_T] = Record, *,  # type: ignore[assignment]
                 start: int = 0, stop: int | None = None) -> Iterator[_T]:
  """Records of a JSONL file written by `write_records`; a bad line raises RecordError
  naming path:line (these are the pipeline's own files: a bad line is a bug, not data).
  start, stop: only records start .. stop-1 (the others are not decoded)."""
  for number, obj in read_jsonl(path, error=RecordError, start=start, stop=stop):
    yield cls.from_json(obj, where=f"{path}:{number}")
