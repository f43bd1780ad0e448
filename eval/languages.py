"""The languages the sandbox runs programs in: Python, and MultiPL-E's compiled and
scripted languages (eval/benchmarks/multipl_e.py).

A Python program is exec'd by the harness itself (eval/_harness.py). A program in any
other language is written to `source_name` in the run's work directory and goes through
`steps`, each a process the harness starts and waits for, inside the same isolation, uid,
namespaces, cgroup and rlimits as a Python program: 'compile' steps (a non-zero exit is
a `compile_error`) and then 'run' steps (a non-zero exit is a `runtime_error`). The
program passes when every step exits 0: MultiPL-E's rule (its evaluation containers'
eval_<lang>.py: a compiler's non-zero exit is a "SyntaxError", the run's an "Exception",
exit 0 is "OK").

What differs from Python, and why:
- Memory: JVMs, Node (V8) and Go reserve far more address space than they use, so
  RLIMIT_AS would stop them starting. They run under RLIMIT_DATA instead (memory_mb per
  process: the writable private memory a process has actually mapped, not its
  reservations), beside the cgroup's cap on the whole run where there is one.
- Processes: RLIMIT_NPROC counts threads; a JVM, `go` (compile, link and vet
  processes, each with threads) and Node start dozens. Each language has its own
  budget (`max_processes`); a fork bomb still ends there.
- Go writes its build cache: GOCACHE is in the run's work directory (private, thrown
  away with it).
- The toolchains come from Debian packages (`packages`; `make test` installs them as
  root: the Makefile's `test-deps` target); `missing_tools` names the package of each
  absent one.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

from eval import _isolation

JAVATUPLES_JAR = "/usr/share/java/javatuples.jar"  # Debian libjavatuples-java


@dataclasses.dataclass(frozen=True)
class Language:
  """How programs of one language are built and run in the sandbox.

  steps: ((kind, argv), ...), kind 'compile' or 'run'; in argv '{source}' is the source
    file's path, '{workdir}' the run's work directory and '{memory_mb}' the memory
    limit. Empty for Python (the harness execs it).
  tools: (executable or absolute path, Debian package) pairs that must be installed.
  env: variables added to the sandbox's environment ('{workdir}' substituted).
  address_space: RLIMIT_AS caps each process at memory_mb (Python); else RLIMIT_DATA.
  max_processes: the RLIMIT_NPROC budget; 0 = SandboxLimits.max_processes.
  """
  name: str
  source_name: str
  steps: tuple[tuple[str, tuple[str, ...]], ...] = ()
  tools: tuple[tuple[str, str], ...] = ()
  env: tuple[tuple[str, str], ...] = ()
  address_space: bool = False
  max_processes: int = 0

  @property
  def is_python(self) -> bool:
    return not self.steps

  @property
  def packages(self) -> tuple[str, ...]:
    return tuple(dict.fromkeys(package for _, package in self.tools))

  def missing_tools(self) -> list[str]:
    """'tool (Debian package P)' for each tool not installed (on the sandbox's PATH)."""
    def installed(tool: str) -> bool:
      if os.path.isabs(tool):
        return os.path.isfile(tool)
      return shutil.which(tool, path=_isolation.SANDBOX_PATH) is not None

    return [f"{tool} (Debian package {package})" for tool, package in self.tools
            if not installed(tool)]


PYTHON = Language("python", "program.py", address_space=True)

# The commands are those of MultiPL-E's evaluation containers (eval_javascript.py,
# eval_cpp.py, eval_java.py, eval_go.py, eval_rust.py, eval_sh.py), with these choices:
# Go's `go test <file>` is split into building the test binary (`go test -c`, which also
# runs go test's vet checks: a build or vet failure is a compile error, as MultiPL-E's
# "[build failed]"/"[setup failed]") and running it; the JVMs use the serial collector,
# see at most two processors (fewer threads) and size their heaps from memory_mb, not
# from the machine's memory; Node and Bash first check the syntax (`node --check`,
# `bash -n`: a syntax error is a compile error, as MultiPL-E's "SyntaxError").
_JVM = ("-XX:+UseSerialGC", "-XX:ActiveProcessorCount=2", "-XX:MaxRAM={memory_mb}m")
LANGUAGES = {language.name: language for language in (
    PYTHON,
    Language("js", "program.js", steps=(("compile", ("node", "--check", "{source}")),
                                        ("run", ("node", "{source}"))),
             tools=(("node", "nodejs"),), max_processes=64),
    Language("cpp", "program.cpp",
             steps=(("compile", ("g++", "{source}", "-o", "{workdir}/program", "-std=c++17")),
                    ("run", ("{workdir}/program",))),
             tools=(("g++", "g++"),), max_processes=64),
    Language("java", "Problem.java",
             steps=(("compile", ("javac", *[f"-J{flag}" for flag in _JVM], "-encoding",
                                 "UTF8", "-cp", JAVATUPLES_JAR, "-d", "{workdir}/classes",
                                 "{source}")),
                    ("run", ("java", *_JVM, "-ea", "-cp",
                             f"{{workdir}}/classes:{JAVATUPLES_JAR}", "Problem"))),
             tools=(("javac", "default-jdk-headless"), ("java", "default-jdk-headless"),
                    (JAVATUPLES_JAR, "libjavatuples-java")),
             max_processes=256),
    Language("go", "program_test.go",
             steps=(("compile", ("go", "test", "-c", "-o", "{workdir}/program.test",
                                 "{source}")),
                    ("run", ("{workdir}/program.test",))),
             tools=(("go", "golang-go"),),
             env=(("GOCACHE", "{workdir}/.cache/go-build"), ("GOPATH", "{workdir}/go"),
                  ("GOPROXY", "off"), ("GOTOOLCHAIN", "local"), ("GOTELEMETRY", "off"),
                  ("GOFLAGS", "")),
             max_processes=256),
    Language("rs", "program.rs",
             steps=(("compile", ("rustc", "{source}", "-o", "{workdir}/program")),
                    ("run", ("{workdir}/program",))),
             tools=(("rustc", "rustc"),), max_processes=64),
    Language("sh", "program.sh", steps=(("compile", ("bash", "-n", "{source}")),
                                        ("run", ("bash", "{source}"))),
             tools=(("bash", "bash"),), max_processes=64),
)}


def get_language(name: str) -> Language:
  try:
    return LANGUAGES[name]
  except KeyError:
    raise ValueError(f"unknown sandbox language {name!r}; known: {sorted(LANGUAGES)}") from None
