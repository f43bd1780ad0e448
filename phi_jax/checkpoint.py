"""phi_jax's one checkpoint format: Orbax, one directory per step.

    <root>/                      e.g. WORKDIR/pretrain/checkpoints
      <step>/
        params/                  the model parameters (Orbax PyTree, nested dict)
        metadata/metadata.json   format version, model config, step, code version, source
        tokenizer/tokenizer.json the tokenizer (the `tokenizers` library's JSON), optional
        ...                      training adds its own items (optimizer state, data iterator)

Orbax writes each step under a temporary name and renames it when complete, so a
crash mid-save never leaves a step that looks finished. `load_*` accept the root (the
latest step is used) or one step directory. A step whose files were damaged later (a
truncated or corrupt parameter file) raises `CheckpointError`, which names the step,
the item and the next older complete step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import traceback
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from phi_jax import hosts
from phi_jax.config import PhiConfig
from phi_jax.tokenizer import Tokenizer

PARAMS = "params"
METADATA = "metadata"
TOKENIZER = "tokenizer"
METADATA_FILE = "metadata.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "phi_jax"
FORMAT_VERSION = 1


MODEL_ITEMS = (PARAMS, METADATA)  # the items every complete step has


class CheckpointError(ValueError):
  """A checkpoint step that exists but cannot be read (a truncated or corrupt file).

  Attributes:
    step_dir: the step directory (<root>/<step>).
    step: its step number (None when the directory is not named by a number).
    item: the item that failed (params, metadata, opt_state, ...).
    reason: the underlying error, in one line.
    older_step: the next older step of the same root that has every item, or None.
  """

  def __init__(self, step_dir: str, item: str, reason: str, older_step: int | None = None):
    self.step_dir = os.path.abspath(step_dir)
    name = os.path.basename(self.step_dir)
    self.step = int(name) if name.isdigit() else None
    self.item = item
    self.reason = reason
    self.older_step = older_step
    what = f"step {self.step}" if self.step is not None else self.step_dir
    text = (f"corrupt checkpoint: {what}, item '{item}' "
            f"({os.path.join(self.step_dir, item)}) cannot be read: {reason}")
    if older_step is not None:
      older_dir = os.path.join(os.path.dirname(self.step_dir), str(older_step))
      text += f"; the next older complete step is {older_step} ({older_dir})"
    else:
      text += "; there is no older complete step"
    super().__init__(text)


def _root_cause(error: BaseException, limit: int = 400) -> str:
  """The innermost error of a chain, in one line (Orbax wraps TensorStore's message in a
  bare Exception with a dump of the TensorStore spec)."""
  seen, inner = set(), error
  while id(inner) not in seen:
    seen.add(id(inner))
    nested = inner.__cause__ or inner.__context__
    if nested is None:
      break
    inner = nested
  lines = [line.strip() for line in str(inner).splitlines() if line.strip()]
  text = lines[0] if lines else type(inner).__name__
  return text if len(text) <= limit else text[:limit] + "..."


def older_complete_steps(step_dir: str, items: Sequence[str] = MODEL_ITEMS) -> list[int]:
  """The steps below `step_dir`'s step in its root that have every item, newest first."""
  step_dir = os.path.abspath(step_dir)
  name, root = os.path.basename(step_dir), os.path.dirname(step_dir)
  if not name.isdigit() or not os.path.isdir(root):
    return []
  found = [int(n) for n in os.listdir(root) if n.isdigit() and int(n) < int(name)
           and all(os.path.isdir(os.path.join(root, n, item)) for item in items)]
  return sorted(found, reverse=True)


def _is_late_read_error(unraisable: Any) -> bool:
  """True for what the reads of a failed restore report after it raised.

  Orbax restores every array of an item concurrently on one asyncio loop; when one read
  fails (a truncated file) the restore raises and the loop closes. A read still in
  flight then fails to post its result to the closed loop ("Event loop is closed"), and
  the read coroutines that never finished raise their own read errors when they are
  collected. The CheckpointError raised carries the first of these.
  """
  error, where = unraisable.exc_value, unraisable.object
  if isinstance(where, types.CoroutineType):
    return f"{os.sep}orbax{os.sep}checkpoint{os.sep}" in where.cr_code.co_filename
  if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
    return False
  frames = traceback.extract_tb(unraisable.exc_traceback)
  return bool(frames) and frames[-1].name == "_check_closed" and "asyncio" in frames[-1].filename


def _drop_late_read_errors() -> None:
  """Keeps the reads of a failed restore (see `_is_late_read_error`) from printing a
  traceback each, after and between the CheckpointError's message. Any other
  unraisable exception reaches the previous hook."""
  previous = sys.unraisablehook
  if getattr(previous, "drops_late_read_errors", False):
    return

  def hook(unraisable: Any) -> None:
    if not _is_late_read_error(unraisable):
      previous(unraisable)

  hook.drops_late_read_errors = True
  sys.unraisablehook = hook


# What the repr of a failed read's future contains: TensorStore's error or spec, or the
# Orbax coroutine that read it.
_READ_ERROR_MARKS = ("OCDBT", "TensorStore(", f"{os.sep}orbax{os.sep}checkpoint{os.sep}")


class _QuietFailedRead(logging.Filter):
  """Drops asyncio's "... exception was never retrieved" for the reads of a failed
  restore (see `_is_late_read_error`)."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not ("exception was never retrieved" in message
                and any(mark in message for mark in _READ_ERROR_MARKS))


logging.getLogger("asyncio").addFilter(_QuietFailedRead())


@contextlib.contextmanager
def reading(step_dir: str, item: str, items: Sequence[str] = MODEL_ITEMS) -> Iterator[None]:
  """Turns any error raised while reading `item` of `step_dir` into a CheckpointError
  (naming the next older step that has every one of `items`)."""
  _drop_late_read_errors()
  try:
    yield
  except CheckpointError:
    raise
  except Exception as e:  # Orbax/TensorStore raise bare Exceptions
    older = older_complete_steps(step_dir, items)
    raise CheckpointError(step_dir, item, _root_cause(e), older[0] if older else None) from e


def code_version() -> str:
  """The git commit of the phi_jax checkout (with '+dirty'), or 'unknown'."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  try:
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                         text=True, timeout=10, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return sha + ("+dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def make_metadata(config: PhiConfig, step: int, **extra: Any) -> dict:
  return {"format": FORMAT, "format_version": FORMAT_VERSION, "step": int(step),
          "model_config": config.to_dict(), "code_version": code_version(), **extra}


def save_args(params: Mapping, config: PhiConfig, step: int, *,
              tokenizer: Tokenizer | None = None, **metadata: Any) -> dict[str, ocp.args.CheckpointArgs]:
  """The Orbax save args of the model items; training adds its own items to this dict."""
  args = {PARAMS: ocp.args.StandardSave(params),
          METADATA: ocp.args.JsonSave(make_metadata(config, step, **metadata))}
  if tokenizer is not None:
    args[TOKENIZER] = ocp.args.JsonSave(json.loads(tokenizer.to_json_str()))
  return args


def item_handlers() -> dict[str, ocp.CheckpointHandler]:
  """Orbax handlers of the model items; training adds its own to this dict."""
  return {PARAMS: ocp.StandardCheckpointHandler(),
          METADATA: ocp.JsonCheckpointHandler(filename=METADATA_FILE),
          TOKENIZER: ocp.JsonCheckpointHandler(filename=TOKENIZER_FILE)}


class _QuietReadOnly(logging.Filter):
  """Drops Orbax's warnings about what a model loader means to do: read a checkpoint
  read-only, and leave the training items (optimizer state, ...) unread."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not ("read only" in message or "read_only=True" in message
                or "was found in the checkpoint, but could not be restored" in message)


logging.getLogger("absl").addFilter(_QuietReadOnly())


def _manager(root: str, read_only: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(read_only=read_only, create=not read_only,
                                         save_interval_steps=0 if read_only else 1,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(root, item_handlers=item_handlers(), options=options)


def _global_arrays(params: Mapping) -> Mapping:
  """In a multi-host job Orbax saves only global arrays: host-local parameters (the same
  on every process, as a random init from the config's seed or an imported model) become
  arrays replicated over every device of the job, each process placing its own devices'
  copies (no transfer between hosts). Outside such a job: `params` unchanged."""
  if hosts.count() == 1:
    return params
  sharding = NamedSharding(Mesh(np.asarray(jax.devices()), ("all",)), PartitionSpec())

  def place(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return x  # already global (training's state)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(place, params)


def save(root: str, step: int, params: Mapping, config: PhiConfig, *,
         tokenizer: Tokenizer | None = None, **metadata: Any) -> str:
  """Writes one step synchronously and returns its directory (in a multi-host job every
  process calls it, with the same parameters)."""
  root = os.path.abspath(root)
  with _manager(root, read_only=False) as manager:
    manager.save(step, args=ocp.args.Composite(
        **save_args(_global_arrays(params), config, step, tokenizer=tokenizer, **metadata)))
    manager.wait_until_finished()
  return os.path.join(root, str(step))


def _is_step_dir(path: str) -> bool:
  return os.path.isdir(os.path.join(path, METADATA)) and os.path.isdir(os.path.join(path, PARAMS))


def is_checkpoint(path: str) -> bool:
  """Whether path is a checkpoint root (with at least one complete step) or a step."""
  try:
    resolve_step_dir(path)
    return True
  except FileNotFoundError:
    return False


def steps(root: str) -> list[int]:
  """The complete steps under a checkpoint root, ascending (temporary dirs ignored)."""
  if not os.path.isdir(root):
    return []
  return sorted(int(name) for name in os.listdir(root)
                if name.isdigit() and _is_step_dir(os.path.join(root, name)))


def resolve_step_dir(path: str) -> str:
  """The step directory for a checkpoint root (its latest step) or a step directory."""
  path = os.path.abspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"No checkpoint at {path}: the directory does not exist")
  if _is_step_dir(path):
    return path
  found = steps(path)
  if not found:
    raise FileNotFoundError(
        f"No checkpoint at {path}: expected step directories <step>/{{{PARAMS},{METADATA}}} "
        f"(found {sorted(os.listdir(path))[:10]})")
  return os.path.join(path, str(found[-1]))


def read_metadata(path: str) -> dict:
  step_dir = resolve_step_dir(path)
  metadata_file = os.path.join(step_dir, METADATA, METADATA_FILE)
  with reading(step_dir, METADATA):
    with open(metadata_file) as f:
      metadata = json.load(f)
    if not isinstance(metadata, dict):
      raise ValueError(f"{METADATA_FILE} holds a {type(metadata).__name__}, not an object")
  if metadata.get("format") != FORMAT:
    raise ValueError(f"{metadata_file} is not phi_jax checkpoint metadata")
  if metadata.get("format_version", 0) > FORMAT_VERSION:
    raise ValueError(f"{step_dir} was written by a newer phi_jax (format version "
                     f"{metadata['format_version']} > {FORMAT_VERSION}); update phi_jax")
  return metadata


def read_config(path: str) -> PhiConfig:
  metadata = read_metadata(path)
  return PhiConfig.from_mapping(metadata["model_config"], where=f"{path} model_config")


def read_tokenizer(path: str) -> Tokenizer | None:
  tokenizer_file = os.path.join(resolve_step_dir(path), TOKENIZER, TOKENIZER_FILE)
  if not os.path.isfile(tokenizer_file):
    return None
  with reading(os.path.dirname(os.path.dirname(tokenizer_file)), TOKENIZER):
    with open(tokenizer_file) as f:
      return Tokenizer.from_json_str(f.read())


def _flatten(tree: Mapping, prefix: tuple[str, ...] = ()) -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flatten(value, prefix + (str(key),)))
    else:
      out["/".join(prefix + (str(key),))] = value
  return out


def check_shapes(stored: Mapping, expected: Mapping, where: str) -> None:
  """Raises ValueError naming the first parameter whose stored shape differs."""
  stored_flat, expected_flat = _flatten(stored), _flatten(expected)
  missing = sorted(set(expected_flat) - set(stored_flat))
  unexpected = sorted(set(stored_flat) - set(expected_flat))
  if missing or unexpected:
    raise ValueError(f"{where}: parameters do not match the model config: missing {missing[:5]}, "
                     f"unexpected {unexpected[:5]}")
  for name, leaf in expected_flat.items():
    have = tuple(stored_flat[name].shape)
    if have != tuple(leaf.shape):
      raise ValueError(f"{where}: parameter {name} has shape {have} in the checkpoint but the "
                       f"model config needs {tuple(leaf.shape)}")


def load_params(path: str, config: PhiConfig, shardings: Any = None) -> dict:
  """The parameters of a checkpoint as jax arrays, checked against `config`.

  shardings: a tree of jax.sharding.Sharding matching the params (default: all on the
  first local device).
  """
  from phi_jax.model import abstract_params  # pylint: disable=g-import-not-at-top
  step_dir = resolve_step_dir(path)
  root, step = os.path.dirname(step_dir), int(os.path.basename(step_dir))
  expected = abstract_params(config)
  with _manager(root, read_only=True) as manager:
    with reading(step_dir, PARAMS):
      stored = manager.item_metadata(step)[PARAMS]
      stored = getattr(stored, "tree", stored)
    check_shapes(stored, expected, step_dir)
    if shardings is None:
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      shardings = jax.tree.map(lambda _: device, expected)
    target = jax.tree.map(
        lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, config.params_dtype,
                                                    sharding=sharding),
        expected, shardings)
    with reading(step_dir, PARAMS):
      restored = manager.restore(step, args=ocp.args.Composite(
          **{PARAMS: ocp.args.StandardRestore(target)}))
  return restored[PARAMS]
