"""What `attention='auto'` runs: per device kind and situation, the implementation the
device check measured fastest (phi_jax/attention_choices.json), else a default.

Situations:
  train_dropout  forward and backward with attention dropout (the paper's training)
  train          forward and backward without it (also evaluation's forward)
  prefill        the forward over a prompt before decoding (docs/decoding.md)

The Pallas kernel's tiles: `bench/attention.py --tune --choices=FILE` records the fastest
(block_q, block_kv) per device kind, head_dim, length and dropout under "tiles"; the
kernel uses them when config.model.attention_block_q/_kv are 0 (else its defaults).

`bench/attention.py --choices=FILE` times the implementations at phi-1's shapes on the
device it runs on and writes the fastest of each situation under that device's kind
(`jax.Device.device_kind`, e.g. "NVIDIA H100 80GB HBM3"); the repository keeps the file.
A device kind the file does not name gets DEFAULTS by backend: 'xla' on CPU (the Pallas
kernels run in interpret mode there), 'pallas' on GPU and TPU (the one flash kernel with
attention dropout); on CPU always 'xla' (CPU entries, from the device check's dry mode,
time the interpret mode). An entry an implementation cannot serve (cuDNN with dropout, cuDNN
off a GPU) is never chosen: the default takes its place.
"""

from __future__ import annotations

import functools
import json
import os

SITUATIONS = ("train_dropout", "train", "prefill")
IMPLEMENTATIONS = ("xla", "pallas", "cudnn")
CHOICES_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "attention_choices.json")
DEFAULTS = {"cpu": "xla", "gpu": "pallas", "tpu": "pallas"}


def allowed(implementation: str, backend: str, situation: str) -> bool:
  """Whether `implementation` can run `situation` on `backend`."""
  if implementation == "cudnn":
    return backend == "gpu" and situation != "train_dropout"
  return implementation in IMPLEMENTATIONS


@functools.lru_cache(maxsize=None)
def _table(path: str) -> dict:
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    table = json.load(f)
  for kind, entries in table.get("devices", {}).items():
    for situation, entry in entries.items():
      if situation not in SITUATIONS or entry.get("implementation") not in IMPLEMENTATIONS:
        raise ValueError(f"{path}: devices[{kind!r}][{situation!r}] = {entry!r}: the "
                         f"situation must be one of {SITUATIONS} and the implementation "
                         f"one of {IMPLEMENTATIONS}")
  return table


def choose(backend: str, device_kind: str | None, situation: str,
           path: str = CHOICES_FILE) -> str:
  """The implementation 'auto' runs for `situation` on a `device_kind` device of
  `backend` ('cpu', 'gpu', 'tpu')."""
  if situation not in SITUATIONS:
    raise ValueError(f"attention situation {situation!r}: one of {SITUATIONS}")
  if backend == "cpu":  # CPU timings are of the kernels' interpret mode: never followed
    return DEFAULTS["cpu"]
  entry = _table(path).get("devices", {}).get(device_kind or "", {}).get(situation)
  if entry and allowed(entry["implementation"], backend, situation):
    return entry["implementation"]
  return DEFAULTS.get(backend, "xla")


def record(device_kind: str, situation: str, timings_s: dict[str, float], shape: str,
           path: str = CHOICES_FILE) -> str:
  """Writes the fastest of `timings_s` (implementation -> seconds) as `device_kind`'s
  choice for `situation`, with the timings and the shape measured; returns it."""
  from phi_jax import atomic  # pylint: disable=g-import-not-at-top
  if not timings_s:
    raise ValueError(f"no timings to choose from for {device_kind} / {situation}")
  fastest = min(timings_s, key=timings_s.get)
  table = dict(_table(path)) if os.path.exists(path) else {}
  devices = dict(table.get("devices", {}))
  entries = dict(devices.get(device_kind, {}))
  entries[situation] = {"implementation": fastest, "shape": shape,
                        "seconds": {k: round(v, 6) for k, v in sorted(timings_s.items())}}
  devices[device_kind] = entries
  table["devices"] = devices
  atomic.write_json(table, path)
  _table.cache_clear()
  return fastest


def _tile_key(head_dim: int, seq: int, dropout: bool) -> str:
  return f"head_dim={head_dim},seq={seq}" + (",dropout" if dropout else "")


def tiles(device_kind: str | None, head_dim: int, seq: int, dropout: bool,
          path: str = CHOICES_FILE) -> tuple[int, int] | None:
  """The (block_q, block_kv) `bench/attention.py --tune` measured fastest for the phi_jax
  Pallas kernel on this device kind at this head_dim and length, or None (the kernel's
  defaults)."""
  entry = _table(path).get("tiles", {}).get(device_kind or "", {}).get(
      _tile_key(head_dim, seq, dropout))
  return (int(entry["block_q"]), int(entry["block_kv"])) if entry else None


def record_tiles(device_kind: str, head_dim: int, seq: int, block_q: int, block_kv: int,
                 timings_s: dict[str, float], *, dropout: bool,
                 path: str = CHOICES_FILE) -> None:
  """Writes the tuned tiles of one (device kind, head_dim, seq, dropout), with the
  timings of every tiling tried ("bqxbkv" -> seconds)."""
  from phi_jax import atomic  # pylint: disable=g-import-not-at-top
  table = dict(_table(path)) if os.path.exists(path) else {}
  all_tiles = dict(table.get("tiles", {}))
  kind = dict(all_tiles.get(device_kind, {}))
  kind[_tile_key(head_dim, seq, dropout)] = {
      "block_q": block_q, "block_kv": block_kv,
      "seconds": {k: round(v, 6) for k, v in sorted(timings_s.items())}}
  all_tiles[device_kind] = kind
  table["tiles"] = all_tiles
  atomic.write_json(table, path)
  _table.cache_clear()
