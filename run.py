"""phi_jax's one entry point: runs the stages a config names, each resumable.

    python run.py                                   # configs/tiny.py: whole pipeline on CPU
    python run.py --config=configs/phi1.py --workdir=/data/phi1
    python run.py --config=configs/tiny.py --config.model.num_layers=2 --stages=init,sample

Every stage writes under WORKDIR/<stage>/ and is skipped when its output is complete
and its inputs did not change, so a run that died resumes where it stopped.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "configs", "tiny.py")

_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (default: config.workdir).")
_STAGES = flags.DEFINE_list("stages", None, "Stages to run, in order (default: config.stages).")
_FORCE = flags.DEFINE_list("force", None, "Stages to rerun even if complete (default: config.force).")


def _define_config_flag():
  # config_flags applies --config.X overrides when the flag is defined, so unknown
  # fields are checked (with a clear message) before this runs.
  return config_flags.DEFINE_config_file(
      "config", DEFAULT_CONFIG, "Run config file (configs/*.py); override fields with "
      "--config.FIELD=VALUE.", lock_config=True)


def _config_path(argv: list[str]) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return DEFAULT_CONFIG


def _check_overrides(argv: list[str]) -> None:
  """Names an unknown --config.X override clearly (config_flags only says AttributeError)."""
  path = _config_path(argv)
  if not os.path.isfile(path.split(":", 1)[0]):
    raise app.UsageError(f"--config: no config file {path}")
  config = config_flags.config_flags._LoadConfigModule("config", path.split(":", 1)[0])  # pylint: disable=protected-access
  config = config.get_config()
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    field = arg[len("--config."):].split("=", 1)[0]
    node, parts = config, field.split(".")
    for depth, part in enumerate(parts):
      if not hasattr(node, "keys") or part not in node.keys():
        where = "config" + "".join("." + p for p in parts[:depth])
        known = sorted(node.keys()) if hasattr(node, "keys") else []
        raise app.UsageError(
            f"unknown config field '{field}' in {arg!r} ({path}): {where} has no field "
            f"'{part}'" + (f"; its fields are: {', '.join(known)}" if known else ""))
      node = node[part]


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    _check_overrides(argv[1:])
  except app.UsageError as e:
    print(f"FATAL: {e}", file=sys.stderr)
    sys.exit(2)
  _define_config_flag()
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"FATAL: {e}\nPass --help to see the flags.", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  # imported after flag parsing, so --help and flag errors are instant
  from phi_jax import stages  # pylint: disable=g-import-not-at-top
  from phi_jax.config import ConfigError, PhiConfig  # pylint: disable=g-import-not-at-top

  from phi_jax.train.loop import maybe_initialize_distributed  # pylint: disable=g-import-not-at-top
  maybe_initialize_distributed()  # multi-host jobs: before any JAX computation
  config = flags.FLAGS.config
  workdir = _WORKDIR.value or config.workdir
  names = _STAGES.value or [s.strip() for s in config.stages.split(",") if s.strip()]
  force = _FORCE.value or [s.strip() for s in config.force.split(",") if s.strip()]
  ctx = stages.Context(config, workdir)
  try:
    PhiConfig.from_mapping(config.model)  # fail on a bad model config before any work
    print(f"phi_jax: stages {', '.join(names)} in {ctx.workdir}", flush=True)
    stages.run_stages(ctx, names, force=frozenset(force))
  except (ConfigError, stages.StageError, FileNotFoundError, FileExistsError) as e:
    print(f"FATAL: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=_parse_flags)
