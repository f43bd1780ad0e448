"""The settings of a pass@k evaluation: defaults and valid ranges, checked in one place.

`python -m eval.run`'s flags, `eval.run.evaluate`'s arguments and the run config's
`eval` section (configs/base.py reads `DEFAULT_TOP_P`) share these defaults, and every
value is checked here before any work, with a message naming the setting:

    n               >= 1 integer: samples per problem
    temperature     >= 0: 0 = greedy
    top_p           in (0, 1]: nucleus sampling mass (used when temperature > 0)
    max_new_tokens  >= 1 integer
    k               non-empty, each >= 1 (a k above n is left out of the report)
    batch_size      >= 1 integer: sequences decoded together
    limit           >= 0 integer: the first N problems (0 = all)
    seed            integer
    timeout_s       > 0: wall-clock limit per program (the CPU limit is its ceiling)
    memory_mb       >= 16 integer: address-space limit per program
    isolation       auto, bwrap, unshare or rlimits
    workers         >= 0 integer: parallel executions (0 = one per core)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from phi_jax.cli import UsageError

DEFAULT_TOP_P = 0.95  # the nucleus mass of the Codex paper's sampled pass@k
ISOLATION_LEVELS = ("auto", "bwrap", "unshare", "rlimits")
MIN_MEMORY_MB = 16  # below this not even the interpreter starts

# The field `ks` is the flag --k and the config field eval.k.
LABELS = {"ks": "k"}
# setting -> its valid range, in words (flag help, docs/errors.md, error messages)
RANGES = {
    "n": "an integer >= 1",
    "temperature": "a number >= 0 (0 = greedy)",
    "top_p": "a number in (0, 1]",
    "max_new_tokens": "an integer >= 1",
    "ks": "a non-empty list of integers >= 1",
    "batch_size": "an integer >= 1",
    "limit": "an integer >= 0 (0 = all problems)",
    "seed": "an integer",
    "timeout_s": "a number > 0 (seconds)",
    "memory_mb": f"an integer >= {MIN_MEMORY_MB}",
    "isolation": "one of " + ", ".join(ISOLATION_LEVELS),
    "workers": "an integer >= 0 (0 = one per core)",
}


class SettingsError(UsageError):
  """An evaluation setting outside its valid range (exit code 2 in a CLI)."""


@dataclasses.dataclass(frozen=True)
class EvalSettings:
  """How samples are drawn and executed (see the module docstring for the ranges)."""
  n: int = 1
  temperature: float = 0.0
  top_p: float = DEFAULT_TOP_P
  max_new_tokens: int = 512
  ks: tuple[int, ...] = (1, 10, 100)
  batch_size: int = 32
  limit: int = 0
  seed: int = 0
  timeout_s: float = 10.0
  memory_mb: int = 2048
  isolation: str = "auto"
  workers: int = 0

  def check(self, prefix: str = "") -> EvalSettings:
    """Returns self, or raises SettingsError naming the first bad setting as
    `<prefix><name>` (prefix '--' for flags, 'config.eval.' for the run config)."""
    for name, ok in (
        ("n", _is_int(self.n) and self.n >= 1),
        ("temperature", _is_number(self.temperature) and self.temperature >= 0),
        ("top_p", _is_number(self.top_p) and 0 < self.top_p <= 1),
        ("max_new_tokens", _is_int(self.max_new_tokens) and self.max_new_tokens >= 1),
        ("ks", isinstance(self.ks, Sequence) and len(self.ks) > 0
         and all(_is_int(k) and k >= 1 for k in self.ks)),
        ("batch_size", _is_int(self.batch_size) and self.batch_size >= 1),
        ("limit", _is_int(self.limit) and self.limit >= 0),
        ("seed", _is_int(self.seed)),
        ("timeout_s", _is_number(self.timeout_s) and self.timeout_s > 0),
        ("memory_mb", _is_int(self.memory_mb) and self.memory_mb >= MIN_MEMORY_MB),
        ("isolation", self.isolation in ISOLATION_LEVELS),
        ("workers", _is_int(self.workers) and self.workers >= 0),
    ):
      if not ok:
        value = getattr(self, name)
        shown = (",".join(map(str, value)) if name == "ks" and isinstance(value, Sequence)
                 else repr(value))
        raise SettingsError(f"{prefix}{LABELS.get(name, name)} must be {RANGES[name]}, "
                            f"got {shown}")
    return self

  @property
  def cpu_s(self) -> int:
    """The sandbox's CPU-time limit: the wall-clock limit, rounded up."""
    return max(1, math.ceil(self.timeout_s))


def from_config(eval_config: Mapping[str, Any], seed: int = 0,
                prefix: str = "config.eval.") -> EvalSettings:
  """The checked settings of a run config's `eval` section (a ConfigDict or dict with
  n, temperature, top_p, max_new_tokens, k, batch_size, limit, timeout_s, memory_mb,
  isolation, workers); errors name the field as `<prefix><name>`."""
  fields = {f.name for f in dataclasses.fields(EvalSettings)} - {"ks", "seed"}
  values = {name: eval_config[name] for name in fields if name in eval_config}
  ks = parse_ks(eval_config["k"], prefix) if "k" in eval_config else EvalSettings.ks
  return EvalSettings(ks=ks, seed=seed, **values).check(prefix)


def parse_ks(text, prefix: str = "") -> tuple[int, ...]:
  """'1,10,100' or (1, 10, 100) -> (1, 10, 100); SettingsError naming `<prefix>k`
  otherwise."""
  items = text if isinstance(text, (tuple, list)) else str(text).split(",")
  parts = [str(part).strip() for part in items if str(part).strip()]
  try:
    return tuple(int(part) for part in parts)
  except ValueError:
    raise SettingsError(f"{prefix}k must be {RANGES['ks']}, got {text!r}") from None


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return _is_int(value) or (isinstance(value, float) and math.isfinite(value))
