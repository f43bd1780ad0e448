"""Isolation levels for eval/sandbox.py: command lines, sandbox uids, process clean-up.

The parent side only; what runs inside is eval/_harness.py. See eval/sandbox.py for the
threat model and what each level enforces.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import pwd
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

LEVELS = ("bwrap", "unshare", "rlimits")  # strongest first


class SandboxError(RuntimeError):
  """The sandbox itself failed (not the program): set-up, spawning, clean-up."""


UID_BASE = 60000  # sandbox uids: UID_BASE .. UID_BASE + NUM_UIDS - 1 (root only)
NUM_UIDS = 256
_LOCK_DIR = os.path.join(tempfile.gettempdir(), f"phi_jax_sandbox_uids.{os.geteuid()}")
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"  # the sandboxed program's PATH
# Directories the sandbox covers with a private tmpfs.
MASKED_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
# Native thread pools (numpy's BLAS, OpenMP) would otherwise start one thread per core,
# each counted by RLIMIT_NPROC and RLIMIT_AS.
_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def is_root() -> bool:
  return os.geteuid() == 0


def sandbox_env(workdir: str) -> dict[str, str]:
  """The whole environment of a sandboxed program; nothing comes from the parent."""
  return {"PATH": SANDBOX_PATH, "HOME": workdir, "LANG": "C.UTF-8",
          "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", **_THREAD_ENV}


def _under(path: str, directory: str) -> bool:
  return path == directory or path.startswith(directory.rstrip("/") + "/")


def visible_paths(python: str, harness: str) -> list[str]:
  """Directories under MASKED_DIRS the harness needs to see again inside the sandbox.

  The interpreter, its prefixes (a venv), the import path and the harness itself live
  under /tmp when the checkout or the venv does (a CI clone in /tmp, say); the private
  tmpfs would hide them, so they are bound back read-only. Nested ones are dropped.
  """
  candidates = {os.path.dirname(os.path.abspath(harness)), os.path.dirname(os.path.abspath(python)),
                os.path.dirname(os.path.realpath(python)), sys.prefix, sys.exec_prefix,
                sys.base_prefix, *[p for p in sys.path if p]}
  found = set()
  for candidate in candidates:
    for path in {os.path.abspath(candidate), os.path.realpath(candidate)}:
      if os.path.isdir(path) and any(_under(path, d) for d in MASKED_DIRS):
        found.add(path)
  return sorted(p for p in found if not any(q != p and _under(p, q) for q in found))


def harness_options(level: str, python: str, harness: str) -> dict:
  """The level-specific part of the harness config (see eval/_harness.py)."""
  if level not in LEVELS:
    raise ValueError(f"unknown isolation level {level!r}; expected one of {LEVELS}")
  return {"private_mounts": level == "unshare", "init": level == "unshare",
          "guard": level == "rlimits",
          # where the harness mounts private tmpfs (at 'bwrap' only a zygote's runs do:
          # bwrap's root is read-only but for its own /tmp and /dev/shm), and what it
          # binds back read-only there
          "masked": ":".join(("/tmp", "/dev/shm") if level == "bwrap" else MASKED_DIRS),
          "keep": ":".join(visible_paths(python, harness)),
          # RLIMIT_NPROC counts all processes of a uid: only a uid (or user namespace)
          # of the sandbox's own makes it a per-sandbox budget.
          "nproc": is_root() or level != "rlimits"}


def command(level: str, python: str, harness: str, config: dict, workdir: str | None,
            tmpfs_mb: int) -> list[str]:
  """The argv that runs the harness under `level`.

  As root, every level starts the harness as root in its namespaces and the harness
  drops to the sandbox uid before the program runs (see _harness._drop_privileges).
  workdir: the run's work directory on the host, bound in; None for a zygote, which
    makes each run's work directory in a tmpfs of the run's own, and keeps
    CAP_SYS_ADMIN (to make the run's namespaces), CAP_CHOWN (to give the work directory
    to the sandbox uid) and CAP_SYS_RESOURCE (to exempt itself from the OOM killer); the
    program's process drops every capability.
  """
  python_argv = [python, "-s", "-B", harness, *_harness_args(config)]
  if level == "bwrap":
    bwrap = shutil.which("bwrap") or "bwrap"
    if is_root():
      # No user namespace: the sandbox runs as a real unprivileged uid, which makes
      # RLIMIT_NPROC and the /proc clean-up by uid exact. Only SETUID/SETGID are kept,
      # for the harness to drop to that uid.
      unshare = ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                 "--unshare-cgroup-try", "--cap-drop", "ALL", "--cap-add", "CAP_SETUID",
                 "--cap-add", "CAP_SETGID"]
    else:
      unshare = ["--unshare-all"]
    if workdir is None:  # the zygote is the namespace's pid-1: it ends all when it ends
      unshare += ["--cap-add", "CAP_SYS_ADMIN", "--cap-add", "CAP_CHOWN", "--cap-add",
                  "CAP_SYS_RESOURCE", "--as-pid-1"]
    argv = [bwrap, *unshare, "--die-with-parent", "--new-session",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--perms", "1777", "--size", str(tmpfs_mb << 20), "--tmpfs", "/tmp",
            "--perms", "1777", "--size", str(tmpfs_mb << 20), "--tmpfs", "/dev/shm"]
    if workdir is not None:
      argv += ["--bind", workdir, workdir]
    argv += ["--chdir", workdir or "/", "--clearenv"]
    for path in visible_paths(python, harness):
      argv += ["--ro-bind", path, path]
    for key, value in sandbox_env(workdir or "/").items():
      argv += ["--setenv", key, value]
    return argv + ["--", *python_argv]
  if level == "unshare":
    # --kill-child ends the namespace with unshare; setpriv ends unshare with us.
    setpriv = ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []
    argv = [*setpriv, "unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc",
            "--ipc", "--uts"]
    if not is_root():
      argv.append("--map-root-user")
    return argv + ["--", *python_argv]
  if level == "rlimits":
    return python_argv
  raise ValueError(f"unknown isolation level {level!r}; expected one of {LEVELS}")


def _harness_args(config: dict) -> list[str]:
  """key=value arguments; booleans as 1/0, None as empty."""
  def encode(value) -> str:
    if value is None:
      return ""
    return str(int(value)) if isinstance(value, bool) else str(value)

  return [f"{key}={encode(value)}" for key, value in config.items()]


def signal_of(returncode: int, level: str) -> int | None:
  """The signal that ended the sandboxed program, if one did."""
  if returncode < 0:
    return -returncode
  if level in ("bwrap", "unshare") and 128 < returncode < 128 + 65:
    return returncode - 128  # bwrap and the harness's pid 1 report signal N as 128 + N
  return None


# --------------------------------------------------------------------------- sandbox uids
class UidPool:
  """Hands out sandbox uids, one per concurrent run, across threads and processes.

  A uid is held through an exclusive flock on its lock file for the whole run, so two
  evaluators on one machine never share a uid (and so never a process budget, nor kill
  each other's programs in the clean-up). uids with a passwd entry are skipped. The lock
  file says 'clean' once a release found no process of the uid left; a uid taken over
  from a holder that died mid-run is cleaned before use.
  """

  def __init__(self, base: int = UID_BASE, count: int = NUM_UIDS):
    self.base, self.count = base, count

  @contextlib.contextmanager
  def acquire(self, timeout_s: float = 600.0) -> Iterator[int]:
    """Holds the lowest free uid (so 60000 + worker slot) until the block exits."""
    os.makedirs(_LOCK_DIR, mode=0o700, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    while True:
      for uid in range(self.base, self.base + self.count):
        if _has_passwd_entry(uid):
          continue
        fd = os.open(os.path.join(_LOCK_DIR, f"{uid}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
          fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
          os.close(fd)
          continue
        try:
          if os.pread(fd, 5, 0) != b"clean" and not kill_uid_processes(uid):
            raise SandboxError(f"processes of sandbox uid {uid} survive SIGKILL")
          os.pwrite(fd, b"dirty", 0)
          yield uid
          if not kill_uid_processes(uid):
            raise SandboxError(f"processes of sandbox uid {uid} survive SIGKILL: "
                               f"{processes_of_uid(uid)}")
          os.pwrite(fd, b"clean", 0)
        finally:
          os.close(fd)  # releases the flock
        return
      if time.monotonic() > deadline:
        raise SandboxError(f"no free sandbox uid in {self.base}..{self.base + self.count - 1} "
                           f"after {timeout_s:.0f}s")
      time.sleep(0.05)


@functools.lru_cache(maxsize=None)
def _has_passwd_entry(uid: int) -> bool:
  try:
    pwd.getpwuid(uid)
    return True
  except KeyError:
    return False


# --------------------------------------------------------------------------- clean-up
def processes_of_uid(uid: int) -> list[int]:
  """pids whose real, effective, saved or filesystem uid is `uid` (zombies included)."""
  wanted, pids = str(uid).encode(), []
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      fd = os.open(f"/proc/{name}/status", os.O_RDONLY)
      try:
        status = os.read(fd, 4096)
      finally:
        os.close(fd)
    except OSError:  # exited meanwhile
      continue
    start = status.find(b"\nUid:")
    if start >= 0 and wanted in status[start:status.find(b"\n", start + 1)].split()[1:]:
      pids.append(int(name))
  return pids


def kill_uid_processes(uid: int, timeout_s: float = 10.0) -> bool:
  """SIGKILLs every process of `uid` until none is left; False if some outlived timeout_s."""
  return kill_until_gone(lambda: processes_of_uid(uid), timeout_s)


def kill_until_gone(find: Callable[[], list[int]], timeout_s: float = 10.0) -> bool:
  """SIGKILLs the pids find() lists until it lists none; False if some outlived timeout_s."""
  deadline, pause = time.monotonic() + timeout_s, 0.002
  while pids := find():
    if time.monotonic() > deadline:
      return False
    for pid in pids:
      with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    time.sleep(pause)
    pause = min(pause * 2, 0.05)
  return True


def children(pid: int) -> list[int]:
  """The child processes of `pid` (of its main thread)."""
  try:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
      return [int(child) for child in f.read().split()]
  except OSError:
    return []


def killpg(pgid: int) -> None:
  with contextlib.suppress(ProcessLookupError, PermissionError):
    os.killpg(pgid, signal.SIGKILL)


def make_workdir(uid: int | None) -> str:
  """A fresh directory the sandbox uid owns (0711: others may only traverse it)."""
  workdir = tempfile.mkdtemp(prefix="phi_sandbox_")
  if uid is not None:
    os.chown(workdir, uid, uid)
    os.chmod(workdir, 0o711)
  return workdir


def remove_workdir(workdir: str) -> None:
  """rm -rf that also gets through directories the program made unreadable."""

  def make_writable_and_retry(function, path, _):
    with contextlib.suppress(OSError):
      os.chmod(os.path.dirname(path), 0o700)
      if os.path.isdir(path) and not os.path.islink(path):
        os.chmod(path, 0o700)
      function(path)

  shutil.rmtree(workdir, onerror=make_writable_and_retry)
  if os.path.exists(workdir):
    shutil.rmtree(workdir, ignore_errors=True)
