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
import socket
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
# How long the report of a lost service waits for a thread that holds the job's lock.
_LOCK_WAIT_S = 5.0


class _Job:
  """This process's view of the job: its client, its current node, the watcher."""

  def __init__(self, client, me: int, n: int, heartbeat_s: int, prog: str):
    self.client, self.me, self.n, self.heartbeat_s, self.prog = client, me, n, heartbeat_s, prog
    self.node: str | None = None
    self.marked: Callable[[], bool] = lambda: False
    self.leaving = False
    self.stopping = False  # a stop was decided: the main thread marks and saves nothing more
    self.leave_code = EXIT_STOPPED
    self.failed_seen: dict[int, float] = {}
    self.lock = threading.RLock()

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
  def where(self, node: str | None) -> tuple[str, str]:
    """(' while running node X', what became of X) for a process running `node` (None:
    the node this process runs)."""
    node = node or self.node
    if node is None:
      return "", "run the same command on every host to go on"
    done = self.marked() if node == self.node else False
    state = (f"'{node}' finished on every process and was marked complete" if done else
             f"nothing of '{node}' was marked complete")
    return f" while running node '{node}'", f"{state}; run the same command on every host " \
        "to resume"

  def leave(self, line: str, code: int, reason: str, finish_saves: bool = False,
            service: bool = True) -> None:
    """Prints `line`, tells the others why this process leaves, and ends it; the caller
    holds `lock` (or could not get it: `service_lost`). With `finish_saves` (a stop:
    every process is still there), it first lets this process's checkpoint saves in
    flight finish (`finish_in_flight`, bounded by the heartbeat bound): every process
    does so, so such a save is committed. Process 0 (whose exit ends the coordination
    service: at once where JAX runs it inside process 0, phi_jax/coordinator.py's once
    nobody is connected) then waits for the others to leave (bounded), so that none of
    them loses the service before it has read why. Without the `service` (it is gone),
    it tells and waits for nobody."""
    self.stopping = self.leaving = True
    self.leave_code = code
    sys.stderr.write(f"{self.prog}: {line}\n")
    sys.stderr.flush()
    sys.stdout.flush()
    if service:
      self.post(f"exit/{self.me}", reason)
      if finish_saves:
        finish_in_flight(self.heartbeat_s)
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
    """Ends this process (`leave`) when another was interrupted, lost or failed alone.
    It asks the service first, then decides holding `lock` (never while a call to the
    service may block: a lost service's calls can hang)."""
    if self.leaving:
      return
    try:
      exits = self.exits()
      live = self.live()
    except Exception:  # pylint: disable=broad-except  (the service is gone: process 0's host)
      if self.me == 0:
        raise
      self.service_lost()
      return
    for i in sorted(set(range(self.n)) - {self.me}):
      reason = exits.get(i)
      if reason is None and i in live:
        continue
      if reason is None:
        try:  # it may have said why just before it left
          reason = self.exits().get(i)
        except Exception:  # pylint: disable=broad-except
          pass
      if reason is None:
        what, finish_saves = (f"was lost{{where}} (killed, or no heartbeat for "
                              f"{self.heartbeat_s} s)"), False
      elif reason.startswith("interrupted"):
        what, finish_saves = f"was {reason}{{where}}", True
      elif reason == "failed" and i not in live:
        first = self.failed_seen.setdefault(i, time.monotonic())
        if time.monotonic() - first <= _FAILED_GRACE_S:
          continue
        what, finish_saves = "stopped with an error{where} (see its output)", False
      else:
        continue
      node = self.node_of(i)
      with self.lock:
        if self.leaving:
          return
        self.stopping = True
        where, then = self.where(node)
        self.leave(f"error: process {i} {what.format(where=where)}; {then}", EXIT_STOPPED,
                   "stopped", finish_saves=finish_saves)

  def interrupted(self, signum: int) -> None:
    name = signal.Signals(signum).name
    with self.lock:
      if self.leaving:
        return
      self.stopping = True
      where, then = self.where(None)
      self.leave(f"interrupted ({name}) on process {self.me}{where}; every process of the "
                 f"job stops; {then}", 128 + signum, f"interrupted ({name})",
                 finish_saves=True)

  def service_lost(self) -> None:
    """The coordination service cannot be reached: process 0's host is gone (the
    service runs beside process 0), or, seen from process 0, the service's process.
    Never returns."""
    held = self.lock.acquire(timeout=_LOCK_WAIT_S)
    if self.leaving:  # another thread leaves; it may hang in a call to the lost service
      if held:
        self.lock.release()
      time.sleep(_LOCK_WAIT_S)
      os._exit(self.leave_code)  # pylint: disable=protected-access
    self.stopping = True
    where, then = self.where(None)
    if self.me == 0:
      what = f"the job's coordination service (its process beside process 0) was lost{where}"
    else:
      what = (f"process 0 was lost{where} (its host, which runs the job's coordination "
              f"service, cannot be reached)")
    self.leave(f"error: {what}; {then}", EXIT_STOPPED, "stopped", service=False)

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

# This process's work that a stop lets finish (its checkpoint saves in flight): each
# entry waits until its work is done.
_in_flight: list[Callable[[], None]] = []


def finish_on_stop(wait: Callable[[], None]) -> None:
  """Until `forget_on_stop(wait)`: a stop of the job (SIGTERM, SIGINT, SIGHUP on any
  process) calls `wait()` (an Orbax checkpoint manager's `wait_until_finished`) before
  this process leaves, so the asynchronous work it waits for is finished (bounded:
  `finish_in_flight`)."""
  _in_flight.append(wait)


def forget_on_stop(wait: Callable[[], None]) -> None:
  if wait in _in_flight:
    _in_flight.remove(wait)


def finish_in_flight(timeout_s: float) -> bool:
  """Waits, at most `timeout_s` seconds in all, for every `finish_on_stop` work;
  whether all of it finished (a wait that raises counts as finished: its work ended)."""
  waits = list(_in_flight)
  if not waits:
    return True
  print(f"[hosts] finishing this process's checkpoint save in flight before it stops "
        f"(at most {timeout_s:g} s)", flush=True)

  def run_all() -> None:
    for wait in waits:
      try:
        wait()
      except Exception:  # pylint: disable=broad-except  (a failed save: nothing to commit)
        pass

  waiter = threading.Thread(target=run_all, name="phi_jax.hosts.finish_in_flight",
                            daemon=True)
  waiter.start()
  waiter.join(timeout_s)
  return not waiter.is_alive()


def hold_if_stopping() -> None:
  """On the main thread, before work a stop must not see begin (a checkpoint save):
  once the job stops, never returns (the watcher ends the process)."""
  with unless_stopping():
    pass


@contextlib.contextmanager
def unless_stopping() -> Iterator[None]:
  """Runs the block (writing a node's marker, say) only while the job is not stopping,
  and never at the same time as the watcher decides to stop: once the job stops, the
  block does not run and this never returns (the watcher ends the process)."""
  if _job is None:
    yield
    return
  _job.lock.acquire()
  if _job.stopping:
    _job.lock.release()
    while True:
      time.sleep(60)
  try:
    yield
  finally:
    _job.lock.release()


def _unreachable(address: str, timeout_s: float = 2.0) -> bool:
  """Whether nothing accepts a TCP connection on `address` (host:port) within
  `timeout_s`: the coordination service there is gone."""
  host, _, port = address.rpartition(":")
  try:
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
      return False
  except OSError:
    return True


_abort_handler = None  # the C handler of SIGABRT (kept alive: C holds a pointer to it)


def _name_a_lost_service(address: str) -> None:
  """When JAX ends this process because its client lost the coordination service (it
  logs 'Terminating process because the JAX distributed service detected fatal errors'
  and aborts from its own thread, naming neither the process nor the node), this
  process instead leaves with one line naming process 0 (whose host runs the service)
  and the node, exit 1. A C handler of SIGABRT does it, in the aborting thread, when
  the service no longer accepts connections; any other abort goes on as before.
  jaxlib's client does take a `missed_heartbeat_callback`, but cannot call a Python one
  (it cannot pass it the status: std::bad_cast, which ends the process too)."""
  global _abort_handler
  # pylint: disable=g-import-not-at-top
  import ctypes
  libc = ctypes.CDLL(None)
  libc.signal.restype = ctypes.c_void_p
  libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]

  def on_abort(signum: int) -> None:
    job = _job
    if job is not None and _unreachable(address):
      job.service_lost()  # never returns
    libc.signal(signum, 0)  # SIG_DFL: abort() raises SIGABRT again and ends the process

  _abort_handler = ctypes.CFUNCTYPE(None, ctypes.c_int)(on_abort)
  libc.signal(signal.SIGABRT, ctypes.cast(_abort_handler, ctypes.c_void_p))


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
  if distributed.global_state.coordinator_address:
    _name_a_lost_service(distributed.global_state.coordinator_address)
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
  yield  # an error leaves the node recorded: the line of a loss that caused it names it
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
    _job.leave_code = EXIT_STOPPED if failed else 0
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
