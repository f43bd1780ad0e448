"""The training device mesh (data, fsdp, tensor), its sharding rules and batch placement."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from phi_jax import coordinator, hosts, sharding
from phi_jax.config import ConfigError
from phi_jax.settings import OPERATIONAL, Check, is_int, setting, text

MESH_AXES = ("data", "fsdp", "tensor")
# How long a multi-host job's processes wait before a silent process counts as lost.
HEARTBEAT_TIMEOUT_S = 60

_AXIS = Check(lambda v: is_int(v) and (v >= 1 or v == -1), "a positive integer or -1")


@dataclasses.dataclass(frozen=True)
class MeshSettings:
  """`config.mesh`: the training device mesh, axes (data, fsdp, tensor); -1 = all
  remaining devices. Where the work runs, not what it computes: every field is
  operational, so a run moves to another mesh and resumes."""
  data: int = setting(1, "pure data parallelism (parameters replicated)", kind=OPERATIONAL,
                      check=_AXIS)
  fsdp: int = setting(-1, "data parallelism with parameters and optimizer state sharded "
                      "(ZeRO-3 style)", kind=OPERATIONAL, check=_AXIS)
  tensor: int = setting(1, "tensor (Megatron) parallelism over heads / MLP / vocab",
                        kind=OPERATIONAL, check=_AXIS)
  rules: str = setting(
      "vocab:tensor,embed:fsdp,heads:tensor,mlp:tensor,head_dim:,norm:,layers:",
      "logical axis -> mesh axis rules, 'logical:mesh' pairs ('' mesh axis = replicated)",
      kind=OPERATIONAL, check=text())

  def consistent(self, where: str) -> None:
    if [self.data, self.fsdp, self.tensor].count(-1) > 1:
      raise ConfigError(f"{where} (data, fsdp, tensor) = {(self.data, self.fsdp, self.tensor)}: "
                        "at most one axis may be -1 (all remaining devices)")
    parse_rules(self.rules)


def mesh_shape(mesh_config: Mapping[str, Any] | Any, n_devices: int) -> tuple[int, int, int]:
  """The (data, fsdp, tensor) sizes of `config.mesh` for n_devices; -1 = the rest."""
  sizes = []
  for axis in MESH_AXES:
    value = mesh_config[axis] if isinstance(mesh_config, Mapping) else getattr(mesh_config, axis)
    if not isinstance(value, int) or isinstance(value, bool) or (value < 1 and value != -1):
      raise ConfigError(f"config.mesh.{axis} = {value!r}: must be a positive integer or -1")
    sizes.append(value)
  if sizes.count(-1) > 1:
    raise ConfigError(f"config.mesh (data, fsdp, tensor) = {tuple(sizes)}: at most one axis "
                     "may be -1 (all remaining devices)")
  if -1 in sizes:
    known = math.prod(s for s in sizes if s != -1)
    if n_devices % known:
      raise ConfigError(f"config.mesh (data, fsdp, tensor) = {tuple(sizes)}: the fixed axes "
                       f"({known} devices) do not divide the {n_devices} devices")
    sizes[sizes.index(-1)] = n_devices // known
  if math.prod(sizes) != n_devices:
    raise ConfigError(f"config.mesh (data, fsdp, tensor) = {tuple(sizes)} needs "
                     f"{math.prod(sizes)} devices, but there are {n_devices}")
  return tuple(sizes)


def make_mesh(mesh_config: Mapping[str, Any] | Any,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A Mesh with axes ('data', 'fsdp', 'tensor') over `devices` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  try:
    from jax.experimental import mesh_utils  # pylint: disable=g-import-not-at-top
    device_array = mesh_utils.create_device_mesh(shape, devices=devices,
                                                 allow_split_physical_axes=True)
  except (ValueError, NotImplementedError, AssertionError):
    # create_device_mesh only knows physical topologies (TPU slices, GPU hosts); a
    # subset of devices or CPU devices get the plain row-major order.
    device_array = np.array(devices).reshape(shape)
  return Mesh(device_array, MESH_AXES)


def parse_rules(rules: str | Sequence[str]) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  """The rules a run uses: phi_jax.sharding.DEFAULT_RULES with `rules` replacing some.

  `rules` (config.mesh.rules): entries "logical:mesh_axis" ('' mesh axis = replicated,
  'a+b' = both), as a tuple or one comma-separated string; () = the defaults. Every
  logical axis must be one the model names (phi_jax.sharding.LOGICAL_AXES) and every
  mesh axis one of ('data', 'fsdp', 'tensor'); a bad entry raises ConfigError naming it.
  """
  entries = rules.split(",") if isinstance(rules, str) else list(rules)
  overrides = []
  for entry in (str(e).strip() for e in entries):
    if not entry:
      continue
    if entry.count(":") != 1:
      raise ConfigError(f"config.mesh.rules: bad entry {entry!r}; expected 'logical:mesh_axis' "
                       "(mesh axis may be empty for replicated)")
    logical, mesh_axes = (part.strip() for part in entry.split(":"))
    if logical not in sharding.LOGICAL_AXES:
      raise ConfigError(f"config.mesh.rules: entry {entry!r}: unknown logical axis "
                       f"{logical!r}; known: {sharding.LOGICAL_AXES}")
    axes = tuple(a.strip() for a in mesh_axes.split("+")) if mesh_axes else ()
    for axis in axes:
      if axis not in MESH_AXES:
        raise ConfigError(f"config.mesh.rules: entry {entry!r}: unknown mesh axis {axis!r}; "
                         f"known: {MESH_AXES}")
    overrides.append((logical, None if not axes else axes[0] if len(axes) == 1 else axes))
  return sharding.with_overrides(overrides)


def batch_axes(mesh: Mesh, rules: sharding.Rules = sharding.DEFAULT_RULES) -> tuple[str, ...]:
  """The mesh axes the batch dim is split over: the 'batch' rule's axes on this mesh."""
  return tuple(a for a in sharding.mesh_axes_of("batch", rules) if a in mesh.axis_names)


def batch_sharding(mesh: Mesh, rules: sharding.Rules = sharding.DEFAULT_RULES) -> NamedSharding:
  """Leading (batch) dim split over the 'batch' rule's mesh axes; the rest replicated."""
  return NamedSharding(mesh, PartitionSpec(batch_axes(mesh, rules) or None))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_parallelism(mesh: Mesh, rules: sharding.Rules = sharding.DEFAULT_RULES) -> int:
  """How many ways the batch dim is split (data * fsdp with the default rules)."""
  return math.prod(mesh.shape[a] for a in batch_axes(mesh, rules))


@contextlib.contextmanager
def _service_beside_process_0(heartbeat_timeout_s: int) -> Iterator[None]:
  """While jax.distributed starts: process 0 runs the job's coordination service in a
  process of its own (phi_jax/coordinator.py), which outlives process 0, so that the
  other processes learn of process 0's loss like any other's (phi_jax.hosts.watch)
  instead of being ended by JAX. JAX starts the service through jaxlib's
  `get_distributed_runtime_service` (jax._src.distributed); where that is not so (another
  jax), JAX's own in-process service runs."""
  # pylint: disable=g-import-not-at-top,protected-access
  from jax._src import distributed
  lib = getattr(distributed, "_jax", None)
  start_in_process = getattr(lib, "get_distributed_runtime_service", None)
  if start_in_process is None:
    yield
    return

  def start(address, num_nodes, heartbeat_timeout=None, shutdown_timeout=None,
            recoverable=None, **unknown):
    if unknown:  # arguments this module does not pass on: JAX's own service
      return start_in_process(address, num_nodes, heartbeat_timeout=heartbeat_timeout,
                              shutdown_timeout=shutdown_timeout, recoverable=recoverable,
                              **unknown)
    return coordinator.start(address, num_nodes, heartbeat_timeout=heartbeat_timeout,
                             shutdown_timeout=shutdown_timeout, recoverable=recoverable,
                             linger_s=heartbeat_timeout_s + 30)

  lib.get_distributed_runtime_service = start
  try:
    yield
  finally:
    lib.get_distributed_runtime_service = start_in_process


def maybe_initialize_distributed(coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None,
                                 local_device_ids: Sequence[int] | None = None,
                                 heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S) -> bool:
  """jax.distributed.initialize() for a multi-host job; returns whether it ran.

  Explicit: with `coordinator_address` ('host:port' of process 0), `num_processes` and
  `process_id` (all three, e.g. from phi-jax-run's --coordinator_address,
  --num_processes and --process_id). Otherwise from the environment, when it describes
  a multi-host job: JAX_COORDINATOR_ADDRESS is set, a TPU pod lists several workers
  (TPU_WORKER_HOSTNAMES), or SLURM runs more than one task (SLURM_NTASKS); JAX then
  finds the coordinator and process ids itself. A single process does nothing.
  Must run before any JAX computation (phi-jax-run calls it first thing).

  local_device_ids: the devices of this process (default: all it sees).
  heartbeat_timeout_s: how long the job's coordination service waits for a process's
    heartbeat before it declares the process lost (JAX's own failure detection);
    `phi_jax.hosts.watch` then stops every other process of the job with one line.
  """
  if heartbeat_timeout_s < 1:
    raise ConfigError(f"multi-host: --heartbeat_timeout_s {heartbeat_timeout_s}: must be "
                      ">= 1 second")
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit) and any(v is None for v in explicit):
    raise ConfigError(
        "multi-host: give --coordinator_address, --num_processes and --process_id together "
        f"(got {coordinator_address!r}, {num_processes!r}, {process_id!r}), or none of them "
        "to read the environment (TPU pod, SLURM, JAX_COORDINATOR_ADDRESS)")
  if coordinator_address is not None:
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ConfigError(f"multi-host: --process_id {process_id} must be in [0, "
                        f"--num_processes {num_processes})")
    if ":" not in coordinator_address:
      raise ConfigError(f"multi-host: --coordinator_address {coordinator_address!r} must be "
                        "host:port (process 0's address, reachable from every host)")
    if num_processes == 1:
      return False
    kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                  process_id=process_id)
  else:
    multi_host = (os.environ.get("JAX_COORDINATOR_ADDRESS")
                  or "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
                  or int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1)
    if not multi_host:
      return False
    kwargs = {}
  if local_device_ids is not None:
    kwargs["local_device_ids"] = list(local_device_ids)
  kwargs["heartbeat_timeout_seconds"] = int(heartbeat_timeout_s)
  if jax.distributed.is_initialized():
    return True
  # CPU hosts need a cross-process collectives implementation for any computation
  # over the global mesh; gloo ships with jaxlib. It must be chosen before the
  # backend starts; an explicit choice (JAX_CPU_COLLECTIVES_IMPLEMENTATION=mpi) stands.
  if not jax.config.jax_cpu_collectives_implementation:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # A lost process is reported to the others (phi_jax.hosts.watch names it and stops
  # them with one line) rather than aborting them from JAX's own thread.
  jax.config.update("jax_enable_recoverability", True)
  try:
    with _service_beside_process_0(int(heartbeat_timeout_s)):
      jax.distributed.initialize(**kwargs)
  except RuntimeError as e:
    raise RuntimeError(
        f"multi-host training: jax.distributed.initialize() failed ({e}); it must run "
        f"before any JAX computation (phi-jax-run calls it at program start)") from e
  # Runs before JAX's own shutdown (atexit runs the last registered first).
  atexit.register(hosts.leave_in_order, int(heartbeat_timeout_s))
  return True
