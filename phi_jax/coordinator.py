"""A multi-host job's coordination service in its own process, beside process 0.

JAX runs the job's coordination service (its key-value store, heartbeats and list of
live processes) inside process 0. When process 0 dies (killed, crashed, out of
memory), the service dies with it and every other process is ended from JAX's own
thread with JAX's message ("Terminating process because the JAX distributed service
detected fatal errors"), which names neither the process nor the node, before
`phi_jax.hosts.watch` can say which process was lost. Run here, in a small process
that process 0 starts (`start`), the service outlives process 0: the others see
process 0 leave the list of live processes like any other and stop with the watcher's
one line. The loss of process 0's whole host (the service's host) makes JAX's client
abort them; `phi_jax.hosts` then names process 0 in the same kind of line.

The service process ignores SIGINT, SIGTERM and SIGHUP (a Ctrl-C reaches the whole
process group; process 0's watcher stops the job). It ends when process 0 shuts the
job down (`Service.shutdown`, JAX's own shutdown at exit), or, when process 0 left
without that (it died, or left with `os._exit`), once no process is connected to it
any more or at most `linger_s` later, so that the others can first read why the job
stops.

    python -m phi_jax.coordinator BIND_ADDRESS NUM_PROCESSES HEARTBEAT_S SHUTDOWN_S \
        RECOVERABLE LINGER_S
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

_READY = "phi_jax.coordinator: listening"
_SHUTDOWN = b"shutdown\n"
_POLL_S = 0.2
_START_TIMEOUT_S = 120


class Service:
  """Process 0's handle on the service process (what JAX keeps as its `service`)."""

  def __init__(self, proc: subprocess.Popen):
    self.proc = proc

  def shutdown(self) -> None:
    """Ends the service now (every other process has left: `hosts.leave_in_order`)."""
    if self.proc.poll() is not None:
      return
    try:
      self.proc.stdin.write(_SHUTDOWN)
      self.proc.stdin.close()
      self.proc.wait(timeout=60)
    except (OSError, subprocess.TimeoutExpired):
      self.proc.kill()


def start(address: str, num_nodes: int, heartbeat_timeout: int | None = None,
          shutdown_timeout: int | None = None, recoverable: bool | None = None,
          linger_s: float | None = None) -> Service:
  """Starts the service on `address` (host:port to bind) in its own process and
  returns once it listens. The arguments are those of jaxlib's
  `get_distributed_runtime_service`; `linger_s` (default: the heartbeat timeout plus
  30 s) bounds how long it serves after process 0 left without shutting it down."""
  heartbeat = 100 if heartbeat_timeout is None else int(heartbeat_timeout)
  linger = heartbeat + 30 if linger_s is None else linger_s
  read_fd, write_fd = os.pipe()
  proc = subprocess.Popen(
      [sys.executable, "-m", "phi_jax.coordinator", address, str(num_nodes), str(heartbeat),
       str(300 if shutdown_timeout is None else int(shutdown_timeout)),
       str(int(bool(recoverable))), str(linger), str(write_fd)],
      stdin=subprocess.PIPE, pass_fds=(write_fd,), env=_env_finding_this_package())
  os.close(write_fd)
  with os.fdopen(read_fd) as ready:
    readable, _, _ = select.select([ready], [], [], _START_TIMEOUT_S)
    line = ready.readline() if readable else ""
  if line.strip() != _READY:
    proc.kill()
    raise RuntimeError(f"multi-host: the coordination service on {address} did not start "
                       f"(exit {proc.wait()}; see its message above)")
  return Service(proc)


def _env_finding_this_package() -> dict[str, str]:
  """The environment, with the directory holding phi_jax first on PYTHONPATH (a checkout's
  run.py started from another directory: `-m` searches the working directory)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  path = os.environ.get("PYTHONPATH")
  return dict(os.environ, PYTHONPATH=root + (os.pathsep + path if path else ""))


def _connected(own_sockets: set[str]) -> bool:
  """Whether any TCP connection of this process is established (Linux's /proc; True
  where that cannot be read, so the service then lingers its full bound)."""
  established = set()
  try:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
      if not os.path.exists(table):
        continue
      with open(table) as f:
        for row in f.readlines()[1:]:
          fields = row.split()
          if len(fields) > 9 and fields[3] == "01":  # ESTABLISHED
            established.add(fields[9])
  except OSError:
    return True
  return bool(established & own_sockets)


def _own_sockets() -> set[str]:
  inodes = set()
  for fd in os.listdir("/proc/self/fd"):
    try:
      target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
      continue
    if target.startswith("socket:["):
      inodes.add(target[len("socket:["):-1])
  return inodes


def main(address: str, num_nodes: str, heartbeat_s: str, shutdown_s: str, recoverable: str,
         linger_s: str, ready_fd: str) -> None:
  for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, signal.SIG_IGN)
  from jaxlib import _jax  # pylint: disable=g-import-not-at-top  (jaxlib only: starts fast)
  service = _jax.get_distributed_runtime_service(
      address, int(num_nodes), heartbeat_timeout=int(heartbeat_s),
      shutdown_timeout=int(shutdown_s), recoverable=bool(int(recoverable)))
  with os.fdopen(int(ready_fd), "w") as ready:
    ready.write(_READY + "\n")
  command = sys.stdin.buffer.read()  # until process 0 shuts the job down or is gone
  if command != _SHUTDOWN:
    deadline = time.monotonic() + float(linger_s)
    while time.monotonic() < deadline:
      time.sleep(_POLL_S)
      if os.path.isdir("/proc/self/fd") and not _connected(_own_sockets()):
        break
  service.shutdown()


if __name__ == "__main__":
  main(*sys.argv[1:])
