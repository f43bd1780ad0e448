"""Reading and writing `transformers` checkpoint directories (weights and config files).

Reads safetensors or `pytorch_model.bin`, single-file or sharded (with the
`*.index.json` weight map), from a local directory, or from the Hugging Face hub when
given a repo id and the machine is online. Writes safetensors (sharded above a size).
Knows nothing about phi's parameter names: that is `phi_jax.hf_convert`.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Iterator, Mapping

import numpy as np

from phi_jax import atomic

SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
TORCH_INDEX = "pytorch_model.bin.index.json"
TORCH_SINGLE = "pytorch_model.bin"
HUB_PATTERNS = ("*.json", "*.safetensors", "*.bin", "*.txt", "*.model")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_repo_id(path: str) -> bool:
  """Whether `path` reads as a Hugging Face hub repo id (org/name), not a local path."""
  return bool(_REPO_ID.match(path)) and not path.startswith((".", "/"))


def resolve_model_dir(path: str) -> str:
  """A local directory for `path`: the path itself, or a hub snapshot of a repo id."""
  if os.path.isdir(path):
    return path
  if os.path.exists(path):
    raise NotADirectoryError(f"{path} is a file; expected a checkpoint directory")
  if looks_like_repo_id(path):
    try:
      import huggingface_hub  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise FileNotFoundError(
          f"{path} is not a local directory, and huggingface_hub (needed to download it "
          "from the hub) is not installed") from e
    try:
      return huggingface_hub.snapshot_download(repo_id=path, allow_patterns=list(HUB_PATTERNS))
    except Exception as e:  # offline, unknown repo, gated repo...
      reason = (str(e).strip().splitlines() or [""])[0][:300]
      raise FileNotFoundError(
          f"{path} is not a local directory and could not be downloaded from the Hugging "
          f"Face hub ({type(e).__name__}: {reason}); downloading needs network access to "
          f"huggingface.co: on an offline machine, fetch it elsewhere with "
          f"`huggingface-cli download {path} --local-dir DIR`, copy DIR here and pass its "
          "path instead") from e
  raise FileNotFoundError(
      f"No checkpoint at {path}: the directory does not exist (expected an Orbax "
      "checkpoint directory, a transformers directory, or a hub repo id like org/name)")


def is_hf_dir(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, "config.json")) and any(
      os.path.isfile(os.path.join(directory, name))
      for name in (SAFETENSORS_INDEX, SAFETENSORS_SINGLE, TORCH_INDEX, TORCH_SINGLE))


def read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"missing file {path}") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from None


def _weight_files(directory: str) -> list[str]:
  """The weight files of a transformers directory, in the order they should be read."""
  for index_name in (SAFETENSORS_INDEX, TORCH_INDEX):
    index_path = os.path.join(directory, index_name)
    if os.path.isfile(index_path):
      weight_map = read_json(index_path).get("weight_map")
      if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{index_path} has no 'weight_map'")
      files = sorted(set(weight_map.values()))
      missing = [f for f in files if not os.path.isfile(os.path.join(directory, f))]
      if missing:
        raise FileNotFoundError(f"{index_path} names shard(s) that are missing: {missing}")
      return [os.path.join(directory, f) for f in files]
  for single in (SAFETENSORS_SINGLE, TORCH_SINGLE):
    if os.path.isfile(os.path.join(directory, single)):
      return [os.path.join(directory, single)]
  raise FileNotFoundError(
      f"No weights in {directory}: expected {SAFETENSORS_SINGLE}, {SAFETENSORS_INDEX}, "
      f"{TORCH_SINGLE} or {TORCH_INDEX}; found {sorted(os.listdir(directory))}")


def _read_file(path: str) -> Iterator[tuple[str, np.ndarray]]:
  if path.endswith(".safetensors"):
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    try:
      with safe_open(path, framework="numpy") as f:
        for name in f.keys():
          yield name, f.get_tensor(name)
    except Exception as e:
      raise ValueError(f"cannot read safetensors file {path}: {e}") from e
    return
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"reading {path} needs PyTorch (pip install torch); "
                      "safetensors checkpoints do not") from e
  try:
    # mmap needs the zip format (torch >= 1.6); older files are read whole.
    state = torch.load(path, map_location="cpu", weights_only=True,
                       mmap=zipfile.is_zipfile(path))
  except Exception as e:
    raise ValueError(f"cannot read PyTorch checkpoint {path}: {e}") from e
  for name, tensor in state.items():
    if tensor.dtype == torch.bfloat16:
      import ml_dtypes  # pylint: disable=g-import-not-at-top
      yield name, tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    else:
      yield name, tensor.numpy()


def read_state_dict(directory: str) -> dict[str, np.ndarray]:
  """All tensors of a transformers checkpoint directory, by name, as numpy arrays."""
  tensors: dict[str, np.ndarray] = {}
  for path in _weight_files(directory):
    for name, array in _read_file(path):
      if name in tensors:
        raise ValueError(f"tensor {name} appears in more than one shard ({path})")
      tensors[name] = array
  return tensors


def write_safetensors(tensors: Mapping[str, np.ndarray], directory: str,
                      max_shard_bytes: int = 5 * 2**30) -> list[str]:
  """Writes tensors as model.safetensors, or shards + index when above max_shard_bytes."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  shards: list[dict[str, np.ndarray]] = [{}]
  size = 0
  for name, array in tensors.items():
    if shards[-1] and size + array.nbytes > max_shard_bytes:
      shards.append({})
      size = 0
    shards[-1][name] = np.ascontiguousarray(array)
    size += array.nbytes
  metadata = {"format": "pt"}

  def save(shard: dict[str, np.ndarray], name: str) -> None:
    path = os.path.join(directory, name)
    save_file(shard, path, metadata=metadata)
    os.chmod(path, atomic.file_mode())  # safetensors' save_file creates 0600 files

  if len(shards) == 1:
    save(shards[0], SAFETENSORS_SINGLE)
    return [SAFETENSORS_SINGLE]
  names, weight_map = [], {}
  for i, shard in enumerate(shards):
    name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save(shard, name)
    names.append(name)
    weight_map.update({tensor: name for tensor in shard})
  total = sum(a.nbytes for a in tensors.values())
  atomic.write_json({"metadata": {"total_size": total}, "weight_map": weight_map},
                    os.path.join(directory, SAFETENSORS_INDEX))
  return names



