"""A run config as typed settings: every section checked once, before anything runs.

`resolve(config)` builds each section's schema (configs/base.py lists them) from the
ml_collections config, so a bad value, an unknown field or two contradicting fields is
one line naming the field as the user writes it (`config.train.steps = 0: must be an
integer >= 1`). Nodes receive these objects (recipe/runner.py: `Node.reads`), and their
fingerprints are made of the output-determining fields of exactly what they receive.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from configs.base import SECTIONS
from data_pipeline.decontaminate.config import DecontConfig
from data_pipeline.synth.config import SynthConfig
from eval import settings as eval_settings
from phi_jax import settings as settings_lib
from phi_jax.config import PhiConfig
from phi_jax.llm.config import LLMConfig


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Every section of a run config, typed and checked."""
  run: settings_lib.RunSettings
  sections: dict[str, Any]

  def __getattr__(self, name: str) -> Any:
    try:
      return self.sections[name]
    except KeyError:
      raise AttributeError(name) from None

  @property
  def seed(self) -> int:
    return self.run.seed


def _section(config: ml_collections.ConfigDict, name: str) -> dict:
  return config[name].to_dict() if name in config else {}


def resolve(config: ml_collections.ConfigDict) -> RunConfig:
  """The typed, checked settings of `config` (SettingsError naming the first bad field)."""
  top = {k: v for k, v in config.items() if not isinstance(v, ml_collections.ConfigDict)}
  run = settings_lib.from_config(settings_lib.RunSettings, top, "config")
  sections: dict[str, Any] = {}
  for name, schema in SECTIONS.items():
    values = _section(config, name)
    if schema is PhiConfig:
      sections[name] = _wrap(lambda: PhiConfig.from_mapping(values, f"config.{name}"))
    elif schema is LLMConfig:
      sections[name] = _wrap(lambda: LLMConfig.from_mapping(values, f"config.{name}"))
    elif schema is SynthConfig:
      sections[name] = _wrap(lambda: SynthConfig.from_mapping(values, f"config.{name}"))
    else:
      sections[name] = settings_lib.from_config(schema, values, f"config.{name}")
  sections["eval"] = eval_settings.from_config(_section(config, "eval"), seed=run.seed)
  sections["decontaminate"] = decont_config(_section(config, "decontaminate"),
                                            sections["data"], run.seed)
  return RunConfig(run=run, sections=sections)


def decont_config(values: dict, data, seed: int) -> DecontConfig:
  """config.decontaminate with the quality filter's embedder and the run's seed."""
  quality = data.quality
  return _wrap(lambda: DecontConfig.from_mapping(
      dict(values, embed_model=quality.embed_model, embed_max_len=quality.embed_max_len,
           embed_batch_size=quality.embed_batch_size, seed=seed), where="config.decontaminate"))


def _wrap(build):
  """Library schemas that raise ValueError: as SettingsError (exit code 2, one line)."""
  try:
    return build()
  except settings_lib.SettingsError:
    raise
  except ValueError as e:
    message = str(e)
    if not message.startswith("config."):
      message = f"config.{message}" if message.startswith("decontaminate") else message
    raise settings_lib.SettingsError(message) from None


def schemas() -> dict[str, type]:
  """{section: its schema} of every section of a run config ('' = the top level)."""
  return {"": settings_lib.RunSettings, **SECTIONS, "eval": eval_settings.EvalSettings,
          "decontaminate": DecontConfig}


def describe_config(config: ml_collections.ConfigDict) -> str:
  """Every field of the run config: its value here, its default, its kind and what it
  does (from the settings schemas; configs/base.py lists them)."""
  from data_pipeline.decontaminate.config import RUN_DERIVED  # pylint: disable=g-import-not-at-top
  lines = []
  for section, schema in schemas().items():
    for field, default, kind, doc in settings_lib.describe(schema):
      if (section == "eval" and field == "seed") or (
          section == "decontaminate" and field in RUN_DERIVED):
        continue
      dotted = f"{section}.{field}" if section else field
      node: Any = config
      try:
        for part in dotted.split("."):
          node = node[part]
        value = repr(node)
      except KeyError:
        value = "?"
      lines.append(f"config.{dotted} = {value}  [{kind}; default {default}]"
                   + (f"\n    {doc}" if doc else ""))
  return "\n".join(lines)
