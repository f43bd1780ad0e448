"""The response cache: one JSON file per request key, written whole (temp + rename).

The key is the sha256 of what determines an answer (endpoint, model, messages or
prompt, sampling parameters, variant), not the base URL (the same model behind another
URL answers from the cache) and never the API key.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from phi_jax import atomic

CACHE_FORMAT = 1


class ResponseCache:
  """Answers on disk, one JSON file per request key: `<root>/<key[:2]>/<key>.json`.

  Files are written whole (temp + rename), so a reader sees a complete entry or none;
  concurrent writers of one key write the same kind of entry and the last rename wins.
  An unreadable entry (edited by hand, disk trouble) is a miss and gets rewritten.
  """

  def __init__(self, root: str):
    self.root = root
    os.makedirs(root, exist_ok=True)

  def path(self, key: str) -> str:
    return os.path.join(self.root, key[:2], key + ".json")

  def get(self, key: str) -> dict | None:
    try:
      with open(self.path(key), encoding="utf-8") as f:
        entry = json.load(f)
    except FileNotFoundError:
      return None
    except (OSError, ValueError) as e:
      print(f"llm cache: ignoring unreadable entry {self.path(key)}: {e}", file=sys.stderr)
      return None
    if not isinstance(entry, dict) or entry.get("key") != key or "response" not in entry:
      return None
    return entry

  def put(self, key: str, entry: dict) -> None:
    atomic.write_text(self.path(key), json.dumps(entry, ensure_ascii=False, sort_keys=True))


def request_key(endpoint: str, model: str, inputs: Any, params: Mapping[str, Any],
                variant: Any = None) -> str:
  """The cache key: sha256 of what determines an answer (not the base URL, not the key)."""
  doc = {"format": CACHE_FORMAT, "endpoint": endpoint, "model": model, "inputs": inputs,
         "params": dict(params), "variant": variant}
  data = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
  return hashlib.sha256(data.encode("utf-8")).hexdigest()

