"""The one convention of phi_jax's command-line entry points (absl flags).

Every entry point (`run.py`, `python -m eval.run`, `python -m phi_jax.serve`,
`python -m phi_jax.convert`, `python -m data_pipeline.decontaminate`, ...) is an absl
app started with `cli.run(main)`: absl because run.py's configs are ml_collections
files read by absl's `config_flags`, so one flag syntax (`--name=value`, lists as
`--k=1,10,100`) and one `--help` work everywhere.

`run` turns the errors a user can cause into one line on stderr instead of a
traceback:

    exit 2  a bad command line or config (UsageError, ConfigError, absl flag errors):
            nothing was read, written or deleted;
    exit 1  a failure while running (a missing or corrupt file, an unreachable
            endpoint, a diverged run: every phi_jax error and the expected OS errors);
    exit 130 interrupted (Ctrl-C): the entry point says what it kept.

`PHI_JAX_TRACEBACK=1` shows the full traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

TRACEBACK_ENV = "PHI_JAX_TRACEBACK"

# Errors raised for bad input that the user can fix by changing the command line or
# config: exit code 2. Subclassed (or registered with `register_usage_error`) by the
# layers' own config errors.
_USAGE_ERRORS: list[type[BaseException]] = []
# Errors of the run itself: exit code 1.
_RUN_ERRORS: list[type[BaseException]] = [OSError, ValueError, RuntimeError]


class UsageError(ValueError):
  """A bad flag, path or config value, found before any work: exit code 2."""


_USAGE_ERRORS.append(UsageError)


def register_usage_error(*types: type[BaseException]) -> None:
  """Treats `types` as bad-input errors (exit 2) in every entry point."""
  _USAGE_ERRORS.extend(t for t in types if t not in _USAGE_ERRORS)


def show_traceback() -> bool:
  return os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0", "false", "False")


def describe(error: BaseException) -> str:
  """One line: the error's own message, or its type and errno text for OS errors."""
  if isinstance(error, OSError) and error.filename and not str(error).startswith("["):
    text = str(error)
  elif isinstance(error, OSError) and error.strerror:
    where = f": {error.filename}" if error.filename else ""
    text = f"{error.strerror}{where}"
  else:
    text = str(error) or type(error).__name__
  text = " ".join(text.split()) if "\n" in text and len(text) < 2000 else text
  return text


def exit_code(error: BaseException) -> int:
  if isinstance(error, tuple(_USAGE_ERRORS)):
    return 2
  return 1


def fail(prog: str, error: BaseException) -> None:
  """Prints `prog: error: <one line>` (and a hint) and exits with the error's code."""
  code = exit_code(error)
  kind = "usage error" if code == 2 else "error"
  hint = ("pass --help for the flags; nothing was changed." if code == 2
          else f"set {TRACEBACK_ENV}=1 for the traceback.")
  # One write per line: library threads may print to stderr at the same time.
  sys.stderr.write(f"{prog}: {kind}: {describe(error)}\n")
  sys.stderr.write(f"{prog}: {hint}\n")
  sys.stderr.flush()
  sys.exit(code)


def guarded(prog: str, main: Callable[..., object],
            on_interrupt: Callable[[], str] | None = None) -> Callable[..., object]:
  """`main` with the exit-code convention above applied to what it raises."""

  def wrapper(*args, **kwargs):
    _quiet_library_logs()
    if show_traceback():
      return main(*args, **kwargs)
    try:
      return main(*args, **kwargs)
    except KeyboardInterrupt:
      message = on_interrupt() if on_interrupt is not None else "interrupted"
      print(f"{prog}: {message}", file=sys.stderr)
      # What the command keeps is written and closed by now; native threads (XLA's
      # compiler, Orbax's writers) interrupted mid-way can crash a normal interpreter
      # shutdown, so the process ends here.
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(130)
    except SystemExit:
      raise
    except tuple(_USAGE_ERRORS + _RUN_ERRORS) as e:  # pylint: disable=catching-non-exception
      fail(prog, e)

  return wrapper


def _quiet_library_logs() -> None:
  """Library INFO logs (Orbax, absl) only with an explicit --verbosity/-v: the console
  shows phi_jax's own lines."""
  from absl import flags, logging  # pylint: disable=g-import-not-at-top
  if not (flags.FLAGS.is_parsed() and flags.FLAGS["verbosity"].present):
    logging.set_verbosity(logging.WARNING)


def help_shows_flags_of(module_name: str) -> None:
  """`--help` lists the flags `module_name` defines.

  absl's --help lists the flags of the program's main module, which for a console
  script (`phi-jax-run`, ...) is the installed wrapper, defining none; `python -m X` and
  run.py need nothing (the module is the main one).
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  if module_name == "__main__":
    return
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run(main: Callable[[list[str]], object], prog: str | None = None,
        flags_parser: Callable[[list[str]], list[str]] | None = None,
        on_interrupt: Callable[[], str] | None = None) -> None:
  """absl `app.run(main)` with phi_jax's error convention; absl flag errors exit 2."""
  from absl import app  # pylint: disable=g-import-not-at-top

  from absl import flags  # pylint: disable=g-import-not-at-top

  help_shows_flags_of(main.__module__)
  prog = prog or os.path.basename(sys.argv[0])

  def parse(argv: list[str]) -> list[str]:
    try:
      return (flags_parser or flags.FLAGS)(argv)
    except flags.Error as e:  # an unknown flag, a value of the wrong type: exit 2
      fail(prog, UsageError(str(e)))
      raise  # not reached: fail exits

  app.run(guarded(prog, main, on_interrupt), flags_parser=parse)


# ----------------------------------------------------------------------------- paths
# Checks of the paths a command line names, run before any work: each raises
# UsageError naming the flag (`what`, e.g. '--out') and the path.


def check_file(path: str, what: str) -> str:
  """`path`, an existing readable file."""
  if not os.path.exists(path):
    raise UsageError(f"{what} {path} does not exist")
  if not os.path.isfile(path):
    raise UsageError(f"{what} {path} is not a file")
  if not os.access(path, os.R_OK):
    raise UsageError(f"{what} {path}: no permission to read it")
  return path


def check_dir(path: str, what: str) -> str:
  """`path`, an existing readable directory."""
  if not os.path.exists(path):
    raise UsageError(f"{what} {path} does not exist")
  if not os.path.isdir(path):
    raise UsageError(f"{what} {path} is not a directory")
  if not os.access(path, os.R_OK | os.X_OK):
    raise UsageError(f"{what} {path}: no permission to read it")
  return path


def check_output_dir(path: str, what: str) -> str:
  """The absolute `path`, a directory that exists or can be created: not a file, not
  under a file, its nearest existing ancestor writable."""
  path = os.path.abspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise UsageError(f"{what} {path} is a file, not a directory")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise UsageError(f"{what} {path}: {existing} is a file, not a directory")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise UsageError(f"{what} {path}: no permission to write in {existing}")
  return path


def builtin_config_args(argv: list[str], builtin_dir: str) -> list[str]:
  """`--config=NAME` (or `--config NAME`, with an optional ':...' suffix) as the path of
  the built-in config builtin_dir/NAME.py when NAME is no file: an installed user names
  `--config=tiny` or `--config=phi1` without a checkout. Other arguments are unchanged.
  """

  def resolve(value: str) -> str:
    path, sep, rest = value.partition(":")
    if os.path.exists(path) or os.sep in path or path.endswith(".py"):
      return value
    builtin = os.path.join(builtin_dir, path + ".py")
    if not os.path.isfile(builtin):
      names = sorted(n[:-3] for n in os.listdir(builtin_dir)
                     if n.endswith(".py") and not n.startswith("_") and n != "base.py")
      raise UsageError(f"--config: {path!r} is neither a config file nor a built-in config "
                       f"({', '.join(names)})")
    return builtin + sep + rest

  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith("--config="):
      out[i] = "--config=" + resolve(arg.split("=", 1)[1])
    elif arg == "--config" and i + 1 < len(out):
      out[i + 1] = resolve(out[i + 1])
  return out
