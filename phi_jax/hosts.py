"""The processes of a multi-host job: which one this is, and waiting for all of them.

A job of several hosts runs one process per host (`jax.distributed`, started by
`phi_jax.train.mesh.maybe_initialize_distributed`), every process running the same
command. Outside such a job there is one process: `index()` is 0, `count()` is 1 and
`sync` returns at once, without touching JAX's backends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

import jax
import numpy as np

_T = TypeVar("_T")


def is_multihost() -> bool:
  """Whether this process is one of a `jax.distributed` job of several processes."""
  return jax.distributed.is_initialized() and jax.process_count() > 1


def index() -> int:
  """This process's index in the job (0 outside a multi-host job)."""
  return jax.process_index() if is_multihost() else 0


def count() -> int:
  """The number of processes in the job (1 outside a multi-host job)."""
  return jax.process_count() if is_multihost() else 1


def gather_bytes(name: str, data: bytes) -> list[bytes]:
  """Every process's `data` (of the same length on every process, e.g. a digest), in
  process order, after a barrier named `name` (every process must pass the same name)."""
  if not is_multihost():
    return [data]
  # pylint: disable=g-import-not-at-top  (its collectives only on the multi-host path)
  from jax.experimental import multihost_utils
  multihost_utils.sync_global_devices(name)
  gathered = multihost_utils.process_allgather(np.frombuffer(data, np.uint8))
  return [bytes(row) for row in np.asarray(gathered, np.uint8).reshape(-1, len(data))]


def sync(name: str, ok: bool = True) -> list[bool]:
  """A barrier of every process, named (every process must arrive with the same name);
  returns every process's `ok`, in process order."""
  return [data == b"\x01" for data in gather_bytes(name, bytes([bool(ok)]))]


def differ_from_first(name: str, data: bytes) -> list[int]:
  """The processes whose `data` (any length: its sha256 is compared) differs from
  process 0's, after a barrier named `name`; [] when all agree."""
  digests = gather_bytes(name, hashlib.sha256(data).digest())
  return [i for i, d in enumerate(digests) if d != digests[0]]


def run_and_sync(name: str, work: Callable[[], _T],
                 barrier: Callable[[str, bool], list[bool]] = sync) -> tuple[_T, list[int]]:
  """Runs `work()` on this process, then the barrier `name`, which tells every process
  which ones failed: (work's result, the failed processes' indices). When `work` raises,
  this process reports its failure at the barrier (so the others do not wait for it)
  and re-raises its own error."""
  try:
    result = work()
  except BaseException:
    barrier(name, False)
    raise
  return result, [i for i, ok in enumerate(barrier(name, True)) if not ok]
