"""What a node reads while it runs, recorded for the test that checks its fingerprint.

With $PHI_JAX_RECORD_READS set to a file, the runner runs every node inside `recording`:
each field of the run's settings objects (recipe/settings.py: the same instances a node
receives in `reads`) and each field of the raw config that the node reads is noted by
its config path, and one JSON line per node is appended to the file:

    {"node": ..., "read": [paths], "fingerprint": [paths its fingerprint covers],
     "measured": [paths read only for a measurement along the way]}

tests/recipe/test_reads.py runs the tiny pipeline so and fails when a node reads an
output-determining field its plan-time fingerprint does not cover. Off (the default),
nothing is wrapped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from phi_jax import settings as settings_lib

ENV = "PHI_JAX_RECORD_READS"


def enabled() -> bool:
  return bool(os.environ.get(ENV))


def _paths_of(obj: Any, path: str, out: dict[int, str]) -> None:
  """Maps id(settings object) -> its config path, for obj and its nested sections."""
  if not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
    return
  out.setdefault(id(obj), path)
  for field in dataclasses.fields(obj):
    _paths_of(getattr(obj, field.name), f"{path}.{field.name}", out)


def flatten(value: Any, prefix: str) -> list[str]:
  if isinstance(value, Mapping) and value:
    out = []
    for key, item in value.items():
      out += flatten(item, f"{prefix}.{key}" if prefix else str(key))
    return out
  return [prefix]


class _RecordingConfig:
  """A read-only view of a ConfigDict that notes the paths read."""

  def __init__(self, config, prefix: str, log: set[str]):
    object.__setattr__(self, "_config", config)
    object.__setattr__(self, "_prefix", prefix)
    object.__setattr__(self, "_log", log)

  def _child(self, key: str):
    value = self._config[key]
    path = f"{self._prefix}.{key}" if self._prefix else key
    if hasattr(value, "keys") and hasattr(value, "to_dict"):
      return _RecordingConfig(value, path, self._log)
    self._log.add(path)
    return value

  def __getattr__(self, key: str):
    return self._child(key)

  def __getitem__(self, key: str):
    return self._child(key)

  def __contains__(self, key: str) -> bool:
    return key in self._config

  def keys(self):
    return self._config.keys()

  def items(self):
    return [(key, self._child(key)) for key in self._config.keys()]

  def to_dict(self):
    self._log.add(self._prefix or "*")
    return self._config.to_dict()


@contextlib.contextmanager
def recording(ctx, node_name: str, reads: Mapping[str, Any], inputs: Mapping[str, Any],
              measures_along: bool) -> Iterator[None]:
  """Runs the block with the reads of `ctx`'s settings and raw config recorded (see the
  module docstring); a no-op unless $PHI_JAX_RECORD_READS is set."""
  if not enabled():
    yield
    return
  settings = ctx.settings
  paths: dict[int, str] = {}
  if settings.run is not None:
    _paths_of(settings.run, "", paths)
    paths[id(settings.run)] = ""
  for name, section in settings.sections.items():
    _paths_of(section, name, paths)
  measured: set[str] = set()
  for key, value in reads.items():
    if isinstance(value, settings_lib.Measured):
      for obj_id, path in list(paths.items()):
        if obj_id == id(value.value):
          measured.add(path)
  log: set[str] = set()
  classes = {type(obj) for obj in _objects(settings)}
  originals = {cls: cls.__getattribute__ for cls in classes}

  def make_getattribute(cls):
    original = originals[cls]
    names = {f.name for f in dataclasses.fields(cls)}

    def getattribute(self, name):
      if name in names:
        path = paths.get(id(self))
        if path is not None:
          log.add(f"{path}.{name}".lstrip("."))
      return original(self, name)
    return getattribute

  raw = ctx.config
  try:
    for cls in classes:
      cls.__getattribute__ = make_getattribute(cls)
    ctx.config = _RecordingConfig(raw, "", log)
    ctx.freeze_settings(settings)
    yield
  finally:
    ctx.config = raw
    ctx.freeze_settings(None)
    for cls, original in originals.items():
      cls.__getattribute__ = original
    record = {"node": node_name, "read": sorted(log),
              "fingerprint": sorted(flatten(inputs.get("config", {}), "")),
              "measured": sorted(measured), "measures_along": measures_along}
    with open(os.environ[ENV], "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")


def _objects(settings) -> list[Any]:
  out = []

  def walk(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
      out.append(obj)
      for field in dataclasses.fields(obj):
        walk(getattr(obj, field.name))

  walk(settings.run)
  for section in settings.sections.values():
    walk(section)
  return out
