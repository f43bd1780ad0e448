"""A total memory cap per sandboxed program, through a cgroup (v2, or v1's memory controller).

The evaluator makes one leaf cgroup per worker beside itself (a child of its own cgroup),
sets the leaf's memory limit with swap included, and gives the sandbox an fd of the leaf's
`cgroup.procs` opened for writing. The harness writes "0" to it before the program starts,
which moves the harness, and so everything the program starts, into the leaf: all the
program's processes, and the tmpfs pages they write, then share one limit, and the kernel's
OOM killer ends the program when they reach it. The leaf's OOM-kill counter tells the
evaluator that the cap, not the program, ended it.

Where it is available:
- cgroup v2: the evaluator's own cgroup must offer the memory controller
  (`cgroup.controllers`) and either enable it for its children already
  (`cgroup.subtree_control`) or let us enable it, which the kernel refuses while processes
  other than the root cgroup's sit in it (the "no internal processes" rule). So: run the
  evaluator from a delegated cgroup whose own processes live in a leaf beside ours, e.g. a
  systemd unit with `Delegate=yes` that starts it in a sub-cgroup, or as root at the top.
- cgroup v1: the memory hierarchy's directory of the evaluator's cgroup must be writable
  (root, usually).
Elsewhere there is no total cap (RLIMIT_AS still caps each process); `find()` says why.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import time
from collections.abc import Container

from eval import _isolation

_COUNTER = itertools.count()
_COUNTER_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Hierarchy:
  """Where leaves are made: `directory` (the evaluator's cgroup) in a `version` 1 or 2 tree."""
  version: int
  directory: str

  @property
  def name(self) -> str:
    return f"cgroup v{self.version}"


def _mounts() -> list[tuple[str, str, str]]:
  """(mount point, fs type, super options) of every cgroup mount, from mountinfo."""
  mounts = []
  with open("/proc/self/mountinfo") as f:
    for line in f:
      fields = line.split()
      separator = fields.index("-")
      fstype, options = fields[separator + 1], fields[separator + 3]
      if fstype in ("cgroup", "cgroup2"):
        mounts.append((fields[4], fstype, options))
  return mounts


def _own_cgroups() -> dict[str, str]:
  """'' (v2) or a v1 controller name -> this process's cgroup path in that hierarchy."""
  paths = {}
  with open("/proc/self/cgroup") as f:
    for line in f:
      _, controllers, path = line.rstrip("\n").split(":", 2)
      for controller in controllers.split(",") if controllers else [""]:
        paths[controller] = path
  return paths


def _read(path: str) -> str:
  with open(path) as f:
    return f.read()


def _find_v2(mounts, own) -> tuple[Hierarchy | None, str]:
  points = [point for point, fstype, _ in mounts if fstype == "cgroup2"]
  if not points or "" not in own:
    return None, "no cgroup v2 hierarchy is mounted"
  directory = os.path.join(points[0], own[""].lstrip("/"))
  try:
    if "memory" not in _read(os.path.join(directory, "cgroup.controllers")).split():
      return None, f"cgroup v2: {directory} does not offer the memory controller"
    control = os.path.join(directory, "cgroup.subtree_control")
    if "memory" not in _read(control).split():
      with open(control, "w") as f:
        f.write("+memory")
  except OSError as e:
    return None, (f"cgroup v2: cannot enable the memory controller for children of "
                  f"{directory} ({e.strerror}; it must be delegated to us and hold no "
                  f"processes but in leaves)")
  if not os.access(directory, os.W_OK):
    return None, f"cgroup v2: {directory} is not writable"
  return Hierarchy(2, directory), ""


def _find_v1(mounts, own) -> tuple[Hierarchy | None, str]:
  points = [point for point, fstype, options in mounts
            if fstype == "cgroup" and "memory" in options.split(",")]
  if not points or "memory" not in own:
    return None, "no cgroup v1 memory hierarchy is mounted"
  directory = os.path.join(points[0], own["memory"].lstrip("/"))
  if not os.access(directory, os.W_OK):
    return None, f"cgroup v1: {directory} is not writable"
  return Hierarchy(1, directory), ""


def find() -> tuple[Hierarchy | None, str]:
  """The hierarchy to make capped leaves in (v2 first), or None and why there is none."""
  try:
    mounts, own = _mounts(), _own_cgroups()
  except (OSError, ValueError, IndexError) as e:
    return None, f"cannot read this process's cgroups: {e}"
  v2, why_not_v2 = _find_v2(mounts, own)
  if v2 is not None:
    remove_stale_leaves(v2)
    return v2, ""
  v1, why_not_v1 = _find_v1(mounts, own)
  if v1 is not None:
    remove_stale_leaves(v1)
    return v1, ""
  return None, f"{why_not_v2}; {why_not_v1}"


def remove_stale_leaves(hierarchy: Hierarchy) -> None:
  """Removes the (empty) leaves of evaluators that died without removing them."""
  for name in os.listdir(hierarchy.directory):
    fields = name.split(".")
    if (len(fields) == 3 and fields[0] == "phi_sandbox" and fields[1].isdigit()
        and not os.path.exists(f"/proc/{fields[1]}")):
      try:
        os.rmdir(os.path.join(hierarchy.directory, name))
      except OSError:  # processes still in it, or raced with another evaluator
        pass


class Leaf:
  """One worker's cgroup, with a memory limit (swap included); remove with close()."""

  def __init__(self, hierarchy: Hierarchy, limit_mb: int):
    self.hierarchy = hierarchy
    with _COUNTER_LOCK:
      name = f"phi_sandbox.{os.getpid()}.{next(_COUNTER)}"
    self.path = os.path.join(hierarchy.directory, name)
    os.mkdir(self.path)
    try:
      limit = str(limit_mb << 20)
      if hierarchy.version == 2:
        self._write("memory.max", limit)
        if os.path.exists(os.path.join(self.path, "memory.swap.max")):
          self._write("memory.swap.max", "0")
      else:
        self._write("memory.limit_in_bytes", limit)
        if os.path.exists(os.path.join(self.path, "memory.memsw.limit_in_bytes")):
          self._write("memory.memsw.limit_in_bytes", limit)  # memory + swap
      self.procs_fd = os.open(os.path.join(self.path, "cgroup.procs"),
                              os.O_WRONLY | os.O_CLOEXEC)
    except BaseException:
      os.rmdir(self.path)
      raise

  def _write(self, name: str, value: str) -> None:
    with open(os.path.join(self.path, name), "w") as f:
      f.write(value)

  def oom_kills(self) -> int:
    """How many processes the OOM killer has ended in this leaf so far."""
    name = "memory.events" if self.hierarchy.version == 2 else "memory.oom_control"
    for line in _read(os.path.join(self.path, name)).splitlines():
      key, _, value = line.partition(" ")
      if key == "oom_kill":
        return int(value)
    return 0

  def pids(self) -> list[int]:
    return [int(pid) for pid in _read(os.path.join(self.path, "cgroup.procs")).split()]

  def kill_all(self, spare: Container[int] = (), timeout_s: float = 10.0) -> bool:
    """SIGKILLs every process in the leaf but `spare` until none is left; False if some
    outlived timeout_s."""
    return _isolation.kill_until_gone(
        lambda: [pid for pid in self.pids() if pid not in spare], timeout_s)

  def close(self) -> None:
    """Kills what is left in the leaf and removes it."""
    os.close(self.procs_fd)
    self.kill_all()
    for pause in (0.0, 0.01, 0.05, 0.2):  # the last process may still be leaving
      time.sleep(pause)
      try:
        os.rmdir(self.path)
        return
      except FileNotFoundError:
        return
      except OSError:
        continue
