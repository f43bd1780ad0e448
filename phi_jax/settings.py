"""Typed settings schemas: each field's default, valid range, documentation and kind.

Every section of a run config (`config.model`, `config.train`, `config.data`, ...) is
one frozen dataclass owned by the library that uses it (`PhiConfig` for the model,
`phi_jax.train.settings.TrainSettings` for training, ...). A field is declared once,
with `setting(...)`:

    steps: int = setting(36000, "optimizer steps", check=at_least(1))
    loader_workers: int = setting(0, "grain worker processes", kind=OPERATIONAL,
                                  check=at_least(0))

The kind rule (docs/architecture.md):

    operational         changes how or where the work runs, not what is computed, even
                        if floating-point summation order changes the last bits:
                        workers, concurrency, retries, timeouts of requests, caches,
                        progress, inference batch sizes, microbatches, mesh shape,
                        remat, attention implementation
    output-determining  changes what data, model, hyperparameters, seeds or
                        measurements the output is made of

Operational fields never enter a fingerprint (`output_values`), so moving a run to more
devices or another attention kernel resumes it; a schema's `inert()` names the fields
that have no effect under its other values (the FIM split rate when the FIM rate is 0),
which are left out likewise.

`from_config` builds a schema from a config section (a ConfigDict or dict) and checks
every value once, naming the field as the user writes it (`config.train.steps = 0: must
be an integer >= 1`); `to_config` gives the section a run config starts from.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from phi_jax.cli import UsageError

OUTPUT = "output-determining"
OPERATIONAL = "operational"
# Output-determining for a measurement taken along the way (held-out loss and bits per
# byte during training), not for what the measuring node makes (the model): the node
# records these with the measurement, and the node that shows it re-measures when they
# change (recipe/stages/curves.py), so they never force an expensive node to rerun.
MEASUREMENT = "measurement"
KINDS = (OUTPUT, OPERATIONAL, MEASUREMENT)


class SettingsError(UsageError):
  """A setting outside its valid range, unknown, or contradicting another (exit code 2)."""


@dataclasses.dataclass(frozen=True)
class Check:
  """A field's valid range: a predicate and the range in words ('an integer >= 1')."""
  ok: Callable[[Any], bool]
  words: str


def setting(default: Any = dataclasses.MISSING, doc: str = "", *, kind: str = OUTPUT,
            check: Check | None = None, factory: Callable[[], Any] | None = None) -> Any:
  """A dataclass field with its documentation, kind and valid range (see module doc)."""
  if kind not in KINDS:
    raise ValueError(f"setting kind {kind!r}: expected one of {KINDS}")
  metadata = {"doc": doc, "kind": kind, "check": check}
  if factory is not None:
    return dataclasses.field(default_factory=factory, metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


# ------------------------------------------------------------------------------ ranges
def is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
  return is_int(value) or (isinstance(value, float) and math.isfinite(value))


def at_least(low: int) -> Check:
  return Check(lambda v: is_int(v) and v >= low, f"an integer >= {low}")


def number_at_least(low: float) -> Check:
  return Check(lambda v: is_number(v) and v >= low, f"a number >= {low:g}")


def positive() -> Check:
  return Check(lambda v: is_number(v) and v > 0, "a number > 0")


def in_range(low: float, high: float, *, low_open: bool = False,
             high_open: bool = False) -> Check:
  left, right = "(" if low_open else "[", ")" if high_open else "]"

  def ok(v):
    if not is_number(v):
      return False
    above = v > low if low_open else v >= low
    below = v < high if high_open else v <= high
    return above and below

  return Check(ok, f"a number in {left}{low:g}, {high:g}{right}")


def one_of(*choices: Any) -> Check:
  return Check(lambda v: v in choices, "one of " + ", ".join(repr(c) for c in choices))


def each(inner: Check, *, non_empty: bool = False) -> Check:
  """A sequence whose items pass `inner` (and, if non_empty, at least one item)."""

  def ok(v):
    return (isinstance(v, (tuple, list)) and (len(v) > 0 or not non_empty)
            and all(inner.ok(x) for x in v))

  return Check(ok, ("a non-empty " if non_empty else "a ") + f"list of {inner.words}")


def text() -> Check:
  return Check(lambda v: isinstance(v, str), "a string")


def boolean() -> Check:
  return Check(lambda v: isinstance(v, bool), "True or False")


# ------------------------------------------------------------------------------ schemas
def kind_of(field: dataclasses.Field) -> str:
  """A field's kind; a dataclass field declared without `setting` is output-determining."""
  return field.metadata.get("kind", OUTPUT)


def doc_of(field: dataclasses.Field) -> str:
  return field.metadata.get("doc", "")


def _is_schema(value: Any) -> bool:
  return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _nested_type(cls: type, field: dataclasses.Field) -> type | None:
  """The dataclass type of a nested section field, or None."""
  hints = typing.get_type_hints(cls)
  hint = hints.get(field.name)
  union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
  candidates = typing.get_args(hint) if union else (hint,)
  for candidate in candidates:
    if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
      return candidate
  return None


def inert_fields(obj: Any) -> set[str]:
  """The fields with no effect under `obj`'s other values (its `inert()` method; a
  dotted name is a field of a nested section)."""
  inert = getattr(obj, "inert", None)
  return set(inert()) if callable(inert) else set()


@dataclasses.dataclass(frozen=True)
class Measured:
  """Settings a node reads only for a measurement it takes along the way (see
  MEASUREMENT): recorded with the measurement, left out of the node's fingerprint."""
  value: Any


@dataclasses.dataclass(frozen=True)
class Part:
  """Some fields of a settings object: a node that reads only these (the numerics of
  config.model when the architecture comes from a checkpoint) is given the whole object
  as `value`, and only `fields` enter its fingerprint."""
  value: Any
  fields: tuple[str, ...]


def output_values(obj: Any, measurements: bool = True) -> Any:
  """What of `obj` determines an output: a schema's output-determining fields (nested
  schemas recursively), without operational and inert fields; other values as they are.
  measurements=False also leaves out MEASUREMENT fields and `Measured` values."""
  if isinstance(obj, Measured):
    return output_values(obj.value) if measurements else None
  if isinstance(obj, Part):
    values = output_values(obj.value, measurements)
    return {k: v for k, v in values.items() if k in obj.fields}
  if not _is_schema(obj):
    if isinstance(obj, Mapping):
      out = {k: output_values(v, measurements) for k, v in obj.items()}
      return {k: v for k, v in out.items()
              if measurements or not isinstance(obj[k], Measured)}
    if isinstance(obj, (tuple, list)):
      return [output_values(v, measurements) for v in obj]
    return obj
  skip = inert_fields(obj)
  out = {}
  for field in dataclasses.fields(obj):
    kind = kind_of(field)
    if kind == OPERATIONAL or field.name in skip or (kind == MEASUREMENT and not measurements):
      continue
    value = output_values(getattr(obj, field.name), measurements)
    # a dotted inert name ('teacher.max_tokens') is a field of a nested section
    for name in skip:
      section, _, rest = name.partition(".")
      if section == field.name and rest and isinstance(value, dict):
        value.pop(rest, None)
    out[field.name] = value
  return out


def leaf_kinds(cls: type, prefix: str = "") -> dict[str, str]:
  """{dotted field: kind} of every leaf of a schema (nested sections expanded)."""
  out = {}
  for field in dataclasses.fields(cls):
    nested = _nested_type(cls, field)
    name = prefix + field.name
    if nested is not None:
      out.update(leaf_kinds(nested, name + "."))
    else:
      out[name] = kind_of(field)
  return out


def _as_plain(value: Any) -> Any:
  if hasattr(value, "to_dict"):
    return value.to_dict()
  if isinstance(value, list):
    return tuple(value)
  return value


def from_config(cls: type, values: Mapping[str, Any] | None, where: str) -> Any:
  """The schema `cls` from a config section: unknown fields, values outside a field's
  range and (through the schema's `consistent(where)`) contradictions raise
  SettingsError naming `<where>.<field>`; missing fields take their defaults."""
  values = dict(_as_plain(values) if values is not None else {})
  names = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - set(names))
  if unknown:
    raise SettingsError(f"{where}: unknown field(s) {', '.join(unknown)}; known fields: "
                        f"{', '.join(sorted(names))}")
  kwargs = {}
  for name, value in values.items():
    field = names[name]
    nested = _nested_type(cls, field)
    if nested is not None and isinstance(value, nested):
      kwargs[name] = value
      continue
    if nested is not None and isinstance(value, Mapping):
      kwargs[name] = from_config(nested, value, f"{where}.{name}")
      continue
    value = _as_plain(value)
    check = field.metadata.get("check")
    if check is not None and not check.ok(value):
      raise SettingsError(f"{where}.{name} = {value!r}: must be {check.words}")
    kwargs[name] = value
  try:
    obj = cls(**kwargs)
  except (ValueError, TypeError) as e:
    if isinstance(e, SettingsError):
      raise
    raise SettingsError(f"{where}: {e}") from None
  consistent = getattr(obj, "consistent", None)
  if callable(consistent):
    consistent(where)
  return obj


def to_dict(obj: Any) -> dict[str, Any]:
  """A schema as the plain nested dict a run config section holds (None kept)."""
  out = {}
  for field in dataclasses.fields(obj):
    value = getattr(obj, field.name)
    out[field.name] = to_dict(value) if _is_schema(value) else value
  return out


def to_json(obj: Any) -> Any:
  """Settings objects (and mappings, sequences, references of them) as JSON values,
  every field kept: what a node was given, as recorded beside its output."""
  if isinstance(obj, Measured):
    return to_json(obj.value)
  if isinstance(obj, Part):
    return {name: to_json(getattr(obj.value, name)) for name in obj.fields}
  if _is_schema(obj):
    return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
  if isinstance(obj, Mapping):
    return {str(k): to_json(v) for k, v in obj.items()}
  if isinstance(obj, (tuple, list)):
    return [to_json(v) for v in obj]
  return obj


def to_config(obj: Any):
  """A schema as the ml_collections section a run config starts from. A field that is
  None by default ('not set') becomes a placeholder of its declared type, so it can be
  set on the command line (`--config.llm.top_p=0.9`)."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from ml_collections import config_dict  # pylint: disable=g-import-not-at-top
  hints = typing.get_type_hints(type(obj))
  out = {}
  for field in dataclasses.fields(obj):
    value = getattr(obj, field.name)
    if _is_schema(value):
      out[field.name] = to_config(value)
    elif value is None:
      types_ = [t for t in typing.get_args(hints[field.name]) if t is not type(None)]
      out[field.name] = config_dict.placeholder(types_[0] if len(types_) == 1 else object)
    else:
      out[field.name] = value
  return ml_collections.ConfigDict(out)


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
  """(dotted field, default, kind, doc) of every leaf, for documentation tables."""
  rows = []
  defaults = cls()
  for field in dataclasses.fields(cls):
    nested = _nested_type(cls, field)
    name = prefix + field.name
    if nested is not None:
      rows += describe(nested, name + ".")
    else:
      rows.append((name, repr(getattr(defaults, field.name)), kind_of(field), doc_of(field)))
  return rows


def check_all(obj: Any, prefix: str) -> Any:
  """Checks every field's range of a schema built directly (not by from_config), then its
  `consistent`; errors name the field as `<prefix><name>` (prefix '--' for flags,
  'config.eval.' for a config section). Returns obj."""
  for field in dataclasses.fields(obj):
    check = field.metadata.get("check")
    value = getattr(obj, field.name)
    if check is not None and not check.ok(value):
      raise SettingsError(f"{prefix}{field.name} = {value!r}: must be {check.words}")
  consistent = getattr(obj, "consistent", None)
  if callable(consistent):
    consistent(prefix.rstrip("."))
  return obj


@dataclasses.dataclass(frozen=True)
class RunSettings:
  """The top level of a run config: where a run writes, its seed, what it runs."""
  workdir: str = setting("workdir", "every stage writes under WORKDIR/<stage>/; --workdir "
                         "overrides", kind=OPERATIONAL, check=text())
  seed: int = setting(0, "seeds parameter init, data order, sampling and every seeded draw",
                      check=Check(is_int, "an integer"))
  stages: tuple[str, ...] = setting(
      (), "stages (or data steps) to run, in pipeline order; () = every stage of the "
      "recipe; --stages overrides", kind=OPERATIONAL, check=each(text()))
  force: tuple[str, ...] = setting((), "stages or steps to rebuild even when complete; "
                                   "--force overrides", kind=OPERATIONAL, check=each(text()))
  compilation_cache_dir: str = setting(
      "", "JAX's persistent compilation cache (phi_jax/compilation_cache.py): compiled "
      "programs kept here and reused by later processes; a relative path is under WORKDIR; "
      "'' = off", kind=OPERATIONAL, check=text())
