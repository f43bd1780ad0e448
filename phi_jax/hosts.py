"""The processes of a multi-host job: which one this is, and waiting for all of them.

A job of several hosts runs one process per host (`jax.distributed`, started by
`phi_jax.train.mesh.maybe_initialize_distributed`), every process running the same
command. Outside such a job there is one process: `index()` is 0, `count()` is 1 and
`sync` returns at once, without touching JAX's backends.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
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


# ------------------------------------------------------------ losing a process of the job
# A job's processes watch each other through JAX's coordination service (the
# `jax.distributed` client's key-value store and its list of live processes), run with
# recoverability on (phi_jax.train.mesh.maybe_initialize_distributed): the service then
# reports a lost process instead of aborting every other one, and `watch` turns that,
# and an interruption of any process, into one line naming the process and the node
# and a prompt exit of every process. The service runs in a process of its own beside
# process 0 (phi_jax/coordinator.py), so a lost process 0 is reported like any other.
# Keys, under `_KEYS`:
#   node/<i>   the node process i runs (the runner's `running`)
#   exit/<i>   why process i leaves: 'finished', 'failed', 'interrupted (SIGTERM)', ...
_KEYS = "phi_jax/"
_POLL_S = 0.5
# How long a process that saw another one fail waits for its own failure to arrive
# before it calls the other's exit a loss (the runner fails every process together).
_FAILED_GRACE_S = 10.0
# Words of the errors a collective raises when another process went away (gloo on CPU:
# 'Connection closed by peer'; NCCL; the coordination service's barriers).
_PEER_FAILURE_WORDS = ("gloo", "nccl", "connection", "unavailable", "deadline", "barrier",
                       "heartbeat", "peer")
# Ctrl-C; a TPU VM's preemption notice, SLURM's preemption or time limit; the ssh
# session that started the process closed (gcloud ... ssh --worker=all interrupted).
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_STOPPED = 1  # a process stopped because another one was lost or interrupted


class _Job:
  """This process's view of the job: its client, its current node, the watcher."""

  def __init__(self, client, me: int, n: int, heartbeat_s: int, prog: str):
    self.client, self.me, self.n, self.heartbeat_s, self.prog = client, me, n, heartbeat_s, prog
    self.node: str | None = None
    self.marked: Callable[[], bool] = lambda: False
    self.leaving = False
    self.failed_seen: dict[int, float] = {}
    self.lock = threading.Lock()

  # -- the key-value store (every call is bounded; a lost coordinator raises)
  def post(self, key: str, value: str) -> None:
    try:
      self.client.key_value_set(_KEYS + key, value, allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except  (the coordinator may be gone)
      pass

  def exits(self) -> dict[int, str]:
    return {int(k.rsplit("/", 1)[1]): v
            for k, v in self.client.key_value_dir_get(_KEYS + "exit/")}

  def node_of(self, i: int) -> str | None:
    try:
      return self.client.key_value_try_get(_KEYS + f"node/{i}") or None
    except Exception:  # pylint: disable=broad-except  (not recorded: between nodes)
      return None

  def live(self) -> set[int]:
    return set(self.client.get_live_nodes(list(range(self.n))))

  # -- the line and the exit
  def where(self, i: int) -> tuple[str, str]:
    """(' while running node X', what became of X) for process i's node."""
    node = self.node_of(i) if i != self.me else None
    node = node or self.node
    if node is None:
      return "", "run the same command on every host to go on"
    done = self.marked() if node == self.node else False
    state = (f"'{node}' finished on every process and was marked complete" if done else
             f"nothing of '{node}' was marked complete")
    return f" while running node '{node}'", f"{state}; run the same command on every host " \
        "to resume"

  def leave(self, line: str, code: int, reason: str) -> None:
    """Prints `line`, tells the others why this process leaves, and ends it. Process 0
    (whose exit ends the coordination service: at once where JAX runs it inside process
    0, phi_jax/coordinator.py's once nobody is connected) first waits for the others to
    leave (bounded), so that none of them loses the service before it has read why."""
    with self.lock:
      self.leaving = True
      sys.stderr.write(f"{self.prog}: {line}\n")
      sys.stderr.flush()
      sys.stdout.flush()
      self.post(f"exit/{self.me}", reason)
      self.wait_for_others(gone_only=self.me == 0)
      os._exit(code)  # pylint: disable=protected-access  (native threads may be mid-collective)

  def wait_for_others(self, gone_only: bool, timeout: float | None = None) -> None:
    """Until every other process has left (or, unless `gone_only`, said it leaves)."""
    deadline = time.monotonic() + (self.heartbeat_s + 5 if timeout is None else timeout)
    others = set(range(self.n)) - {self.me}
    while time.monotonic() < deadline:
      try:
        waiting = others & self.live()
        if not gone_only:
          waiting -= set(self.exits())
      except Exception:  # pylint: disable=broad-except  (the coordinator is gone)
        return
      if not waiting:
        return
      time.sleep(0.1)

  def check(self) -> None:
    """Ends this process (`leave`) when another was interrupted, lost or failed alone."""
    if self.leaving:
      return
    try:
      exits = self.exits()
      live = self.live()
    except Exception:  # pylint: disable=broad-except  (the service is gone: process 0's host)
      if self.me == 0:
        raise
      exits, live = {}, set(range(self.n)) - {0}
    for i in sorted(set(range(self.n)) - {self.me}):
      reason = exits.get(i)
      if reason is None and i in live:
        continue
      if reason is None:
        try:  # it may have said why just before it left
          reason = self.exits().get(i)
        except Exception:  # pylint: disable=broad-except
          pass
      where, then = self.where(i)
      if reason is None:
        self.leave(f"error: process {i} was lost{where} (killed, or no heartbeat for "
                   f"{self.heartbeat_s} s); {then}", EXIT_STOPPED, "stopped")
      elif reason.startswith("interrupted"):
        self.leave(f"error: process {i} was {reason}{where}; {then}", EXIT_STOPPED,
                   "stopped")
      elif reason == "failed" and i not in live:
        first = self.failed_seen.setdefault(i, time.monotonic())
        if time.monotonic() - first > _FAILED_GRACE_S:
          self.leave(f"error: process {i} stopped with an error{where} (see its output); "
                     f"{then}", EXIT_STOPPED, "stopped")

  def interrupted(self, signum: int) -> None:
    name = signal.Signals(signum).name
    where, then = self.where(self.me)
    self.leave(f"interrupted ({name}) on process {self.me}{where}; every process of the "
               f"job stops; {then}", 128 + signum, f"interrupted ({name})")

  def run(self, wakeup: int) -> None:
    while True:
      ready, _, _ = select.select([wakeup], [], [], _POLL_S)
      if ready:
        try:
          data = os.read(wakeup, 64)
        except BlockingIOError:
          data = b""
        for signum in data:
          if signum in _STOP_SIGNALS:
            self.interrupted(signum)
      try:
        self.check()
      except Exception:  # pylint: disable=broad-except  (process 0: nothing left to read)
        return


_job: _Job | None = None


def watch(prog: str, heartbeat_s: int) -> None:
  """In a multi-host job: ends this process with one line (`prog: error: process 1 was
  lost while running node 'pretrain' ...`) within about `heartbeat_s` seconds of
  another process being lost (killed, preempted, its host gone: JAX's coordination
  service stops listing it) or interrupted, and makes SIGINT (Ctrl-C), SIGTERM (a TPU
  VM's preemption notice, SLURM's preemption or time limit) and SIGHUP (its ssh session
  closed) on this process stop every process of the job the same way. Nothing is half marked: the runner writes a node's marker only
  after every process finished it, and Orbax commits a checkpoint only when every
  process wrote it. Call from the main thread, after `jax.distributed` started."""
  global _job
  if not is_multihost() or _job is not None:
    return
  # pylint: disable=g-import-not-at-top,protected-access
  from jax._src import distributed
  _job = _Job(distributed.global_state.client, jax.process_index(), jax.process_count(),
              heartbeat_s, prog)
  # The signals reach the watcher thread through a wakeup fd at once, even while the
  # main thread waits in a collective (Python runs its handlers only between bytecodes).
  read_fd, write_fd = os.pipe()
  os.set_blocking(read_fd, False)
  os.set_blocking(write_fd, False)
  for signum in _STOP_SIGNALS:
    signal.signal(signum, lambda *_: None)
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
  threading.Thread(target=_job.run, args=(read_fd,), name="phi_jax.hosts.watch",
                   daemon=True).start()


@contextlib.contextmanager
def running(node: str, marked: Callable[[], bool]) -> Iterator[None]:
  """Marks this process as running `node` (`marked()`: whether its marker is written)
  for the line that names it when a process is lost."""
  if _job is None:
    yield
    return
  _job.node, _job.marked = node, marked
  _job.post(f"node/{_job.me}", node)
  try:
    yield
  finally:
    _job.node, _job.marked = None, lambda: False


def settle(error: BaseException) -> None:
  """Before this process reports `error` (a collective that failed because another
  process went away, say): gives the watcher up to the heartbeat bound to name a lost
  or interrupted process (it then ends this process with that line); an error of this
  process alone is reported at once."""
  if _job is None or _job.leaving:
    return
  text = str(error).lower()
  if not (isinstance(error, jax.errors.JaxRuntimeError)
          or any(word in text for word in _PEER_FAILURE_WORDS)):
    return
  deadline = time.monotonic() + _job.heartbeat_s + 5
  while time.monotonic() < deadline:
    try:
      _job.check()
    except Exception:  # pylint: disable=broad-except
      return
    time.sleep(_POLL_S)


def finish(failed: bool) -> None:
  """This process leaves the job (it finished, or failed with the others): the watcher
  stops reporting departures, and the others learn why it left."""
  if _job is None:
    return
  with _job.lock:
    _job.leaving = True
    _job.post(f"exit/{_job.me}", "failed" if failed else "finished")


def leave_in_order(heartbeat_s: int) -> None:
  """At exit from a multi-host job: process 0, whose JAX shutdown ends the coordination
  service, waits (bounded) until the other processes have left, so none loses the
  service while it shuts down (with recoverability on, JAX's own shutdown does not wait
  for them)."""
  if not is_multihost():
    return
  # pylint: disable=g-import-not-at-top,protected-access
  from jax._src import distributed
  client = distributed.global_state.client
  if client is None:
    return
  me, n = jax.process_index(), jax.process_count()
  try:
    client.key_value_set(_KEYS + f"exit/{me}", "finished")
  except Exception:  # pylint: disable=broad-except
    pass
  if me != 0:
    return
  job = _job or _Job(client, me, n, heartbeat_s, "")
  job.leaving = True
  job.wait_for_others(gone_only=True)
