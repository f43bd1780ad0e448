"""Tests of eval/languages.py: programs in MultiPL-E's languages are contained in the
sandbox as Python programs are (tests/eval/test_sandbox.py).

For each language, a program that loops forever ends as a `timeout`, one that allocates
without end as `memory`, one that starts processes without end (a fork bomb that execs
`sleep <marker>`) ends at the limits and leaves none behind, and attempts to reach the
host fail: a TCP connection to a port listening on the host's loopback, and writing (as
root also reading a root-only file) in a world-writable host directory. Each program
passes only if it escaped, so the verdict `runtime_error` shows that it compiled, ran
and was refused. Compiling is slow: the fast suite keeps the host checks of JavaScript
and Bash.
"""

import dataclasses
import os
import secrets
import shutil
import socket
import tempfile

import pytest

from eval import _isolation
from eval import languages
from eval import sandbox as sb

LIMITS = sb.SandboxLimits(timeout_s=40, cpu_s=6, memory_mb=512)

# language -> behaviour -> program; MARK, PORT and DIR are filled in per test.
PROGRAMS = {
    "js": {
        "timeout": "while (true) {}\n",
        "memory": "const a = [];\nwhile (true) a.push(new Array(1 << 20).fill(7));\n",
        "processes": "const cp = require('child_process');\n"
                     "while (true) { try { cp.spawn('sleep', ['MARK']); } catch (e) {} }\n",
        "network": "const s = require('net').connect(PORT, '127.0.0.1', () => "
                   "process.exit(0));\n"
                   "s.on('error', (e) => { console.error(e.message); process.exit(1); });\n",
        "files": "const fs = require('fs');\nlet escaped = false;\n"
                 "try { fs.writeFileSync('DIR/escaped', 'x'); escaped = true; } catch (e) {}\n"
                 "try { fs.readFileSync('DIR/secret'); escaped = true; } catch (e) {}\n"
                 "process.exit(escaped ? 0 : 1);\n",
    },
    "sh": {
        "timeout": "while true; do :; done\n",
        "memory": "s=xxxxxxxxxxxxxxxx\nwhile true; do s=$s$s; done\n",
        "processes": "while true; do sleep MARK & done\n",
        "network": "exec 3<>/dev/tcp/127.0.0.1/PORT\n",
        "files": "escaped=1\necho x > DIR/escaped && escaped=0\n"
                 "cat DIR/secret > /dev/null && escaped=0\nexit $escaped\n",
    },
    "cpp": {
        "timeout": "int main() { volatile unsigned long i = 0; while (true) i++; }\n",
        "memory": "#include <cstring>\n#include <vector>\nint main() {\n"
                  "  std::vector<char*> v;\n  while (true) {\n    char* p = new char[1 << 24];\n"
                  "    memset(p, 1, 1 << 24);\n    v.push_back(p);\n  }\n}\n",
        "processes": "#include <unistd.h>\nint main() {\n  while (true) if (fork() == 0) {\n"
                     "    execlp(\"sleep\", \"sleep\", \"MARK\", (char*)0);\n"
                     "    _exit(0);\n  }\n}\n",
        "network": "#include <arpa/inet.h>\n#include <sys/socket.h>\nint main() {\n"
                   "  int s = socket(AF_INET, SOCK_STREAM, 0);\n  sockaddr_in a{};\n"
                   "  a.sin_family = AF_INET;\n  a.sin_port = htons(PORT);\n"
                   "  inet_pton(AF_INET, \"127.0.0.1\", &a.sin_addr);\n"
                   "  return connect(s, (sockaddr*)&a, sizeof a) == 0 ? 0 : 1;\n}\n",
        "files": "#include <cstdio>\nint main() {\n  bool escaped = false;\n"
                 "  if (FILE* f = fopen(\"DIR/escaped\", \"w\")) { fputs(\"x\", f); fclose(f); "
                 "escaped = true; }\n  if (fopen(\"DIR/secret\", \"r\")) escaped = true;\n"
                 "  return escaped ? 0 : 1;\n}\n",
    },
    "java": {
        "timeout": "class Problem { public static void main(String[] a) { long i = 0; "
                   "while (true) i++; } }\n",
        "memory": "import java.util.*;\nclass Problem { public static void main(String[] a) {\n"
                  "  List<long[]> l = new ArrayList<>();\n"
                  "  while (true) l.add(new long[1 << 20]);\n} }\n",
        "processes": "class Problem { public static void main(String[] a) {\n  while (true) { "
                     "try { new ProcessBuilder(\"sleep\", \"MARK\").start(); }\n"
                     "  catch (Exception e) {} }\n} }\n",
        "network": "import java.net.*;\nclass Problem { public static void main(String[] a) "
                   "throws Exception {\n  new Socket(\"127.0.0.1\", PORT).close();\n} }\n",
        "files": "import java.nio.file.*;\nclass Problem { public static void main(String[] a) {\n"
                 "  boolean escaped = false;\n  try { Files.writeString(Path.of(\"DIR/escaped\"), "
                 "\"x\"); escaped = true; } catch (Exception e) {}\n  try { Files.readAllBytes("
                 "Path.of(\"DIR/secret\")); escaped = true; } catch (Exception e) {}\n"
                 "  System.exit(escaped ? 0 : 1);\n} }\n",
    },
    "go": {
        "timeout": "package p_test\nimport \"testing\"\nfunc TestLoop(t *testing.T) {\n\tfor {\n\t}"
                   "\n}\n",
        "memory": "package p_test\nimport \"testing\"\nvar keep [][]byte\n"
                  "func TestHog(t *testing.T) {\n\tfor {\n\t\tb := make([]byte, 1<<24)\n"
                  "\t\tfor i := range b {\n\t\t\tb[i] = 1\n\t\t}\n"
                  "\t\tkeep = append(keep, b)\n\t}\n}\n",
        "processes": "package p_test\nimport (\n\t\"os/exec\"\n\t\"testing\"\n)\n"
                     "func TestFlood(t *testing.T) {\n\tfor {\n"
                     "\t\t_ = exec.Command(\"sleep\", \"MARK\").Start()\n\t}\n}\n",
        "network": "package p_test\nimport (\n\t\"net\"\n\t\"testing\"\n)\n"
                   "func TestNet(t *testing.T) {\n\tc, err := net.Dial(\"tcp\", \"127.0.0.1:PORT\")"
                   "\n\tif err != nil {\n\t\tt.Fatal(err)\n\t}\n\tc.Close()\n}\n",
        "files": "package p_test\nimport (\n\t\"os\"\n\t\"testing\"\n)\n"
                 "func TestFiles(t *testing.T) {\n\tescaped := false\n"
                 "\tif os.WriteFile(\"DIR/escaped\", []byte(\"x\"), 0o644) == nil {\n"
                 "\t\tescaped = true\n\t}\n\tif _, err := os.ReadFile(\"DIR/secret\"); err == nil {"
                 "\n\t\tescaped = true\n\t}\n\tif !escaped {\n\t\tt.Fatal(\"contained\")\n\t}\n}\n",
    },
    "rs": {
        "timeout": "fn main() {\n    loop {}\n}\n",
        "memory": "fn main() {\n    let mut v: Vec<Vec<u8>> = Vec::new();\n"
                  "    loop {\n        v.push(vec![1u8; 1 << 24]);\n    }\n}\n",
        "processes": "fn main() {\n    loop {\n"
                     "        let _ = std::process::Command::new(\"sleep\")"
                     ".arg(\"MARK\").spawn();\n"
                     "    }\n}\n",
        "network": "fn main() {\n"
                   "    std::net::TcpStream::connect(\"127.0.0.1:PORT\").unwrap();\n}\n",
        "files": "fn main() {\n    let mut escaped = false;\n"
                 "    if std::fs::write(\"DIR/escaped\", \"x\").is_ok() { escaped = true; }\n"
                 "    if std::fs::read(\"DIR/secret\").is_ok() { escaped = true; }\n"
                 "    std::process::exit(if escaped { 0 } else { 1 });\n}\n",
    },
}
EXPECTED = {"timeout": {"timeout"}, "memory": {"memory"},
            # ended by the CPU limit while retrying refused forks, by its own exit once
            # fork keeps failing, or by memory (Node keeps every failed child's object;
            # a JVM reports a refused thread as an OutOfMemoryError)
            "processes": {"timeout", "runtime_error", "memory"},
            "network": {"runtime_error"}, "files": {"runtime_error"}}


def processes_running(marker: str) -> list[int]:
  """Host pids whose command line holds `marker`."""
  found = []
  for name in os.listdir("/proc"):
    try:
      with open(f"/proc/{name}/cmdline", "rb") as f:
        if marker.encode() in f.read():
          found.append(int(name))
    except (OSError, ValueError):
      continue
  return found


@pytest.fixture
def host_dir():
  """A world-writable directory on the host (outside the sandbox's private tmpfs), with
  a root-only `secret` in it."""
  path = tempfile.mkdtemp(prefix="phi_escape_", dir="/var/tmp")
  os.chmod(path, 0o1777)
  with open(os.path.join(path, "secret"), "w") as f:
    f.write("secret")
  os.chmod(os.path.join(path, "secret"), 0o600)
  yield path
  shutil.rmtree(path)


@pytest.fixture
def listener():
  """A TCP socket listening on the host's loopback."""
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(8)
  server.setblocking(False)
  yield server
  server.close()


def check_contained(language, behaviour, host_dir, listener):
  marker = f"3600.{secrets.randbelow(10 ** 6):06d}"
  program = PROGRAMS[language][behaviour]
  program = (program.replace("MARK", marker).replace("PORT", str(listener.getsockname()[1]))
             .replace("DIR", host_dir))
  if behaviour == "files" and not _isolation.is_root():  # the secret is the test uid's own
    os.remove(os.path.join(host_dir, "secret"))
  box = sb.Sandbox(LIMITS, language=language)
  result = box.run(program)
  assert not result.passed and result.failure in EXPECTED[behaviour], result
  assert result.duration_s < LIMITS.timeout_s + 5  # the kill and the clean-up
  assert processes_running(marker) == []
  assert os.listdir(host_dir) in ([], ["secret"])
  with pytest.raises(BlockingIOError):  # no connection from the sandbox reached the host
    listener.accept()


@pytest.mark.parametrize("behaviour", ["network", "files"])
@pytest.mark.parametrize("language", ["js", "sh"])
def test_scripts_cannot_reach_the_host(language, behaviour, host_dir, listener):
  check_contained(language, behaviour, host_dir, listener)


@pytest.mark.slow
@pytest.mark.parametrize("behaviour", list(EXPECTED))
@pytest.mark.parametrize("language", list(PROGRAMS))
def test_programs_are_contained(language, behaviour, host_dir, listener):
  check_contained(language, behaviour, host_dir, listener)


def test_each_language_has_its_limits_and_steps():
  assert languages.PYTHON.address_space and languages.PYTHON.is_python
  for name in PROGRAMS:
    language = languages.get_language(name)
    assert not language.address_space and language.max_processes >= 64
    assert [kind for kind, _ in language.steps][-1] == "run"
    assert language.packages
  go = dict(languages.get_language("go").env)
  assert go["GOCACHE"].startswith("{workdir}/")
  with pytest.raises(ValueError, match="unknown sandbox language 'cobol'"):
    languages.get_language("cobol")
  with pytest.raises(sb.SandboxUnavailableError, match="need namespaces"):
    sb.Sandbox(language="sh", isolation="rlimits")
  described = sb.Sandbox(dataclasses.replace(LIMITS, max_processes=5), language="java").describe()
  assert described.startswith("java programs: isolation") and "256 processes" in described
  assert "data (RLIMIT_DATA) 512 MiB/process" in described
