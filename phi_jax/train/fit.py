"""Fitting the train step to device memory: the micro-batch count and remat policy.

`config.train.microbatches = 0` and `config.model.remat = 'auto'` ask for the choice
to be made here, before training: the step is compiled (not run) for the devices it
will run on, XLA's buffer assignment gives its peak memory per device, and the first
fit in this order is taken:

  1. the lightest remat policy (REMAT_ORDER: least recomputation first) for which
     some micro-batch count fits, then
  2. with it, the fewest micro-batches (the largest micro-batch) that fit.

Peak memory falls as micro-batches are added, so (2) is a binary search over the
counts that split the batch evenly over the batch-parallel devices. "Fits" means the
peak is at most the device's memory limit less `memory_headroom` of it (room for what
XLA's static count leaves out: the allocator's fragmentation, cuDNN/cuBLAS workspaces,
the input pipeline's prefetched batches). An explicit value (microbatches >= 1, a
named policy) is kept and checked the same way; one that does not fit fails before
training, naming what would.

Both settings are operational: a restart on other devices chooses again and resumes.
The choice is recorded, with the peak and budget, in `<run>/fit.json`, keyed by the
device kind and count and the settings that shape the step, so a restart on the same
devices reads it instead of compiling again. With several processes the choice is
made on process 0 and broadcast, so every host trains with the same one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from phi_jax import atomic
from phi_jax.config import ConfigError, PhiConfig

# Least recomputation first: 'dots' saves every matmul output, 'dots_with_no_batch_dims'
# only those without batch dimensions (weights-like), 'full' only each block's input.
REMAT_ORDER = ("none", "dots", "dots_with_no_batch_dims", "full")
AUTO_REMAT = "auto"
AUTO_MICROBATCHES = 0
GIB = 2**30


class FitError(ConfigError):
  """The step does not fit the devices' memory with the given (or any) settings."""


@dataclasses.dataclass(frozen=True)
class Fit:
  """A remat policy and micro-batch count, and the memory its step needs per device."""
  remat: str
  microbatches: int
  peak: int | None  # bytes per device (None: no memory limit known, nothing compiled)
  budget: int | None  # bytes per device the peak had to stay within
  devices: str  # "<count> x <device kind>"
  chosen: bool  # True: chosen here ('auto'); False: given in the config and checked

  def describe(self) -> str:
    how = "chose" if self.chosen else "checked"
    if self.peak is None:
      return (f"fit: {how} remat={self.remat!r}, microbatches={self.microbatches} on "
              f"{self.devices} (no device memory limit known: nothing compiled)")
    return (f"fit: {how} remat={self.remat!r}, microbatches={self.microbatches} on "
            f"{self.devices}: peak {self.peak / GIB:.2f} GiB per device of a "
            f"{self.budget / GIB:.2f} GiB budget")


def microbatch_counts(batch_size: int, parallel: int) -> list[int]:
  """Micro-batch counts k (ascending) that split `batch_size` rows into k equal
  micro-batches, each a multiple of the batch parallelism (data * fsdp)."""
  return [k for k in range(1, batch_size + 1) if batch_size % (k * parallel) == 0]


class Search:
  """The choice over remat policies and micro-batch counts, given `peak(remat, k)`
  (bytes per device, e.g. from a compile) and a budget; each peak is measured once."""

  def __init__(self, peak: Callable[[str, int], int], budget: int, counts: Sequence[int],
               remats: Sequence[str] = REMAT_ORDER):
    if not counts:
      raise FitError("fit: no micro-batch count splits the batch over the devices")
    self._peak, self.budget = peak, budget
    self.counts, self.remats = list(counts), list(remats)
    self.measured: dict[tuple[str, int], int] = {}

  def peak(self, remat: str, k: int) -> int:
    if (remat, k) not in self.measured:
      self.measured[(remat, k)] = int(self._peak(remat, k))
    return self.measured[(remat, k)]

  def fits(self, remat: str, k: int) -> bool:
    return self.peak(remat, k) <= self.budget

  def fewest_microbatches(self, remat: str) -> int | None:
    """The smallest count that fits under `remat`, or None if even the most do not."""
    counts = self.counts
    if not self.fits(remat, counts[-1]):
      return None
    low, high = 0, len(counts) - 1  # counts[high] fits
    while low < high:
      middle = (low + high) // 2
      if self.fits(remat, counts[middle]):
        high = middle
      else:
        low = middle + 1
    return counts[high]

  def choose(self) -> tuple[str, int]:
    for remat in self.remats:
      k = self.fewest_microbatches(remat)
      if k is not None:
        return remat, k
    smallest = min(self.measured.values())
    raise FitError(f"fit: no remat policy ({', '.join(self.remats)}) and micro-batch count "
                   f"(up to {self.counts[-1]}) fits: the smallest step needs "
                   f"{smallest / GIB:.2f} GiB per device of a {self.budget / GIB:.2f} GiB "
                   f"budget; use more devices (config.mesh.fsdp), a shorter seq_len or a "
                   f"smaller batch_size")


def compile_step(model_config: PhiConfig, train_cfg: Any, mesh: Mesh, rules,
                 microbatches: int) -> jax.stages.Compiled:
  """The train step of `model_config` / `train_cfg` with `microbatches`, compiled for
  `mesh`'s devices (not run; the devices need not be attached)."""
  return trace_step(model_config, train_cfg, mesh, rules, microbatches).lower().compile()


def trace_step(model_config: PhiConfig, train_cfg: Any, mesh: Mesh, rules,
               microbatches: int) -> jax.stages.Traced:
  """The train step of `model_config` / `train_cfg` with `microbatches`, traced for
  `mesh` on abstract state and batch (`compile_step` compiles it)."""
  from phi_jax.train.step import Trainer  # pylint: disable=g-import-not-at-top
  trainer = Trainer(model_config, train_cfg, mesh, rules, total_steps=int(train_cfg.steps),
                    microbatches=microbatches)
  shape = (int(train_cfg.batch_size), int(train_cfg.seq_len))
  keys = ["tokens", "loss_mask"]
  if train_cfg.get("segment_ids", False) if hasattr(train_cfg, "get") else getattr(
      train_cfg, "segment_ids", False):
    keys += ["segment_ids", "positions"]
  batch = {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=trainer.batch_sharding)
           for k in keys}
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
  return trainer.trace_train_step(trainer.abstract_state(), batch, rng)


def compiler_out_of_memory(error: Exception) -> int | None:
  """The bytes a compiler's RESOURCE_EXHAUSTED error says the program needs (XLA:TPU
  checks HBM while compiling: "... HLO temporaries (134.00G) exceeds available HBM
  (95.74G)"), at least one byte over what it says is available; None for other errors."""
  text = str(error)
  if "RESOURCE_EXHAUSTED" not in text:
    return None
  units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
  sizes = [float(n) * units[u] for n, u in re.findall(r"\(([\d.]+)([KMGT])\)", text)]
  return int(max(sizes)) + 1 if sizes else 2**62


def compile_or_required(compile_program: Callable[[], jax.stages.Compiled],
                        ) -> jax.stages.Compiled | int:
  """compile_program(), or the bytes the program needs when the compiler refuses it for
  not fitting the device's memory (`compiler_out_of_memory`; XLA:TPU does so instead of
  returning a program whose peak can be compared)."""
  try:
    return compile_program()
  except jax.errors.JaxRuntimeError as e:
    required = compiler_out_of_memory(e)
    if required is None:
      raise
    return required


def peak_bytes(compiled: jax.stages.Compiled) -> int:
  """XLA's static peak of a compiled program per device: arguments + outputs - donated
  + temporaries."""
  stats = compiled.memory_analysis()
  return (stats.argument_size_in_bytes + stats.output_size_in_bytes
          - stats.alias_size_in_bytes + stats.temp_size_in_bytes)


def device_memory_limit(device: jax.Device) -> int | None:
  """The bytes the device's allocator will hand out (GPU/TPU `memory_stats`), or None
  where it reports none (CPU)."""
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  (backends without the API)
    return None
  return int(stats["bytes_limit"]) if stats and stats.get("bytes_limit") else None


def _key(model_config: PhiConfig, train_cfg: Any, mesh: Mesh, budget: int | None) -> str:
  """What the choice depends on: the devices, the mesh and the step's shapes."""
  shaping = {f: getattr(model_config, f) for f in (
      "vocab_size", "d_model", "num_layers", "num_heads", "mlp_dim", "max_seq_len",
      "dtype", "param_dtype", "attention", "attention_block_q", "attention_block_kv",
      "scan_layers", "embed_dropout", "attention_dropout", "residual_dropout")}
  shaping.update({f: int(getattr(train_cfg, f)) for f in ("batch_size", "seq_len",
                                                          "loss_chunk")})
  shaping["segment_ids"] = bool(getattr(train_cfg, "segment_ids", False))
  shaping["mesh"] = dict(mesh.shape)
  shaping["budget"] = budget
  digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]
  device = mesh.devices.flat[0]
  return f"{mesh.devices.size} x {device.device_kind} ({device.platform}) {digest}"


def resolve(model_config: PhiConfig, train_cfg: Any, mesh: Mesh, rules, *,
            record_path: str | None = None, where: str = "train",
            peak: Callable[[str, int], int] | None = None) -> Fit:
  """The remat policy and micro-batch count to train with on `mesh` (see the module doc).

  model_config.remat and train_cfg.microbatches are 'auto' / 0 (chosen here) or values
  (checked here). train_cfg: batch_size, seq_len, loss_chunk, steps, memory_headroom,
  device_memory_gib. record_path: the JSON file recording (and caching) the choice per
  device kind. peak: bytes per device of (remat, microbatches), default a compile.
  Raises FitError when nothing fits, or the given values do not (naming what would).
  """
  from phi_jax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  auto_remat = model_config.remat == AUTO_REMAT
  auto_k = int(train_cfg.microbatches) == AUTO_MICROBATCHES
  device = mesh.devices.flat[0]
  devices = f"{mesh.devices.size} x {device.device_kind}"
  limit = (int(float(train_cfg.device_memory_gib) * GIB) if float(train_cfg.device_memory_gib)
           else device_memory_limit(device))
  budget = None if limit is None else int(limit * (1.0 - float(train_cfg.memory_headroom)))
  counts = microbatch_counts(int(train_cfg.batch_size),
                             mesh_lib.batch_parallelism(mesh, tuple(rules)))
  remat = REMAT_ORDER[0] if auto_remat else model_config.remat
  k = counts[0] if auto_k else int(train_cfg.microbatches)
  if budget is None:
    return Fit(remat, k, None, None, devices, chosen=auto_remat or auto_k)

  key = _key(model_config, train_cfg, mesh, budget)
  records = _read(record_path) if jax.process_index() == 0 else {}
  cached = records.get(key)
  if (cached and (auto_remat or cached["remat"] == remat)
      and (auto_k or cached["microbatches"] == k)):
    fit = Fit(cached["remat"], cached["microbatches"], cached["peak"], budget, devices,
              chosen=auto_remat or auto_k)
    return _shared(fit, records if record_path else None, key, record_path)

  if peak is None:
    def peak(r: str, count: int) -> int:  # pylint: disable=function-redefined
      compiled = compile_or_required(lambda: compile_step(
          model_config.replace(remat=r), train_cfg, mesh, rules, count))
      return compiled if isinstance(compiled, int) else peak_bytes(compiled)
  search = Search(peak, budget, counts,
                  remats=REMAT_ORDER if auto_remat else [remat])
  error = None
  if jax.process_index() == 0:
    try:
      if auto_k or auto_remat:
        if not auto_k:
          search.counts = [k]
        remat, k = search.choose()
      elif not search.fits(remat, k):
        would = Search(search.peak, budget, counts).choose()
        raise FitError(
            f"fit: {where}.microbatches = {k} with model.remat = {remat!r} needs "
            f"{search.peak(remat, k) / GIB:.2f} GiB per device on {devices}, over the "
            f"{budget / GIB:.2f} GiB budget ({float(train_cfg.memory_headroom):.0%} "
            f"headroom); what fits: model.remat = {would[0]!r}, {where}.microbatches = "
            f"{would[1]} (or model.remat = 'auto', {where}.microbatches = 0 to choose)")
    except FitError as e:
      error = e
  fit = Fit(remat, k, search.measured.get((remat, k)), budget, devices,
            chosen=auto_remat or auto_k)
  return _shared(fit, records, key, record_path, error)


def _shared(fit: Fit, records: dict | None, key: str, record_path: str | None,
            error: FitError | None = None) -> Fit:
  """Process 0's fit (or its failure) on every process; process 0 records it."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    mine = np.array([-1 if error else REMAT_ORDER.index(fit.remat), fit.microbatches,
                     -1 if fit.peak is None else fit.peak], np.int64)
    remat, k, peak = (int(v) for v in multihost_utils.broadcast_one_to_all(mine))
    if remat < 0 and error is None:
      error = FitError("fit: the step does not fit the devices' memory (process 0 names "
                       "what would)")
    if remat >= 0:
      fit = dataclasses.replace(fit, remat=REMAT_ORDER[remat], microbatches=k,
                                peak=None if peak < 0 else peak)
  if error is not None:
    raise error
  if jax.process_index() == 0 and record_path and records is not None:
    records = dict(records)
    records[key] = {"remat": fit.remat, "microbatches": fit.microbatches, "peak": fit.peak,
                    "budget": fit.budget, "devices": fit.devices, "chosen": fit.chosen}
    records["last"] = key
    atomic.write_json(records, record_path)
  return fit


def _read(path: str | None) -> dict:
  if not path or not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)
