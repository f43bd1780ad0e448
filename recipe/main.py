"""phi_jax's one entry point: runs the stages a config names, each resumable.

`python run.py` in a checkout and `phi-jax-run` once installed (`pip install .`):

    phi-jax-run                                     # configs/tiny.py: whole pipeline on CPU
    phi-jax-run --config=phi1 --workdir=/data/phi1  # a built-in config by name
    phi-jax-run --config=my_config.py               # or any config file
    phi-jax-run --config=tiny --config.model.num_layers=2 --stages=init,sample
    phi-jax-run --plan                              # what would run, be skipped or refused
    phi-jax-run --serve                             # the run's model behind the server
    phi-jax-run --config=phi1 --coordinator_address=10.0.0.1:1234 --num_processes=4 \
        --process_id=$RANK                          # multi-host (docs/multihost.md)

Every stage (and every step of the data stage) writes under WORKDIR and is skipped when
its output is complete and its inputs did not change, so a run that died resumes where
it stopped (recipe/runner.py decides; docs/architecture.md).
"""

from __future__ import annotations

import ast
import os
import sys

from absl import flags
from ml_collections import config_flags

import configs
from phi_jax import cli

PROG = "phi-jax-run"
CONFIGS_DIR = os.path.dirname(os.path.abspath(configs.__file__))  # the built-in configs
DEFAULT_CONFIG = os.path.join(CONFIGS_DIR, "tiny.py")

_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (default: config.workdir).")
_STAGES = flags.DEFINE_list("stages", None, "Stages or data steps to run, in pipeline order "
                            "(default: config.stages).")
_FORCE = flags.DEFINE_list("force", None, "Stages or steps to rebuild even if complete "
                           "(default: config.force).")
_PLAN = flags.DEFINE_bool("plan", False, "Print what would run, be skipped or be refused, "
                          "and why, then exit without doing anything.")
_REPORT = flags.DEFINE_string("report", None, "Rebuild WORKDIR/report/report.md and "
                              "report.html from what the stages of WORKDIR wrote, without "
                              "running any stage (also while a run is going).")
_DESCRIBE = flags.DEFINE_bool("describe_config", False, "Print every config field with its "
                              "value, default, kind (output-determining or operational) and "
                              "documentation, then exit.")
_SERVE = flags.DEFINE_bool("serve", False, "Serve the run's model (config.serve) with the "
                           "OpenAI-compatible server until Ctrl-C, instead of running stages.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-host: process 0's host:port, reachable from every "
    "host (with --num_processes and --process_id). Without it, a TPU pod, SLURM job or "
    "JAX_COORDINATOR_ADDRESS is detected from the environment (docs/multihost.md).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-host: the number of "
                                      "processes (one per host).", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-host: this process's index, "
                                   "0 .. num_processes-1.", lower_bound=0)
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
    "heartbeat_timeout_s", None, "Multi-host: a process that sends no heartbeat for this "
    "many seconds counts as lost, and every other process of the job stops (default: "
    "phi_jax.train.mesh.HEARTBEAT_TIMEOUT_S, 60).", lower_bound=1)


def _config_path(argv: list[str]) -> str:
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return DEFAULT_CONFIG


def _as_tuple_literal(value: str, default: tuple) -> str:
  """The comma form of a tuple override ('a,b', '1,10') as the literal config_flags reads."""
  text = value.strip()
  if text.startswith(("(", "[")):
    return value
  items = [item.strip() for item in text.split(",") if item.strip()]
  kinds = {type(x) for x in default}
  if kinds and kinds <= {int}:
    try:
      return repr(tuple(int(item) for item in items))
    except ValueError:
      pass
  if kinds and kinds <= {int, float}:
    try:
      return repr(tuple(float(item) for item in items))
    except ValueError:
      pass
  return repr(tuple(items))


def _check_overrides(argv: list[str]) -> list[str]:
  """Names an unknown --config.X override clearly (config_flags only says AttributeError)
  and rewrites the comma form of tuple fields; returns the arguments to parse."""
  path = _config_path(argv)
  if not os.path.isfile(path.split(":", 1)[0]):
    raise cli.UsageError(f"--config: no config file {path}")
  module = config_flags.config_flags._LoadConfigModule("config", path.split(":", 1)[0])  # pylint: disable=protected-access
  config = module.get_config()
  out = []
  for i, arg in enumerate(argv):
    if not arg.startswith("--config.") or (i and argv[i - 1] == "--config"):
      out.append(arg)
      continue
    field, has_value, value = arg[len("--config."):].partition("=")
    node, parts = config, field.split(".")
    for depth, part in enumerate(parts):
      if not hasattr(node, "keys") or part not in node.keys():
        where = "config" + "".join("." + p for p in parts[:depth])
        known = sorted(node.keys()) if hasattr(node, "keys") else []
        raise cli.UsageError(
            f"unknown config field '{field}' in {arg!r} ({path}): {where} has no field "
            f"'{part}'" + (f"; its fields are: {', '.join(known)}" if known else ""))
      node = node[part]
    if has_value and isinstance(node, tuple):
      arg = f"--config.{field}={_as_tuple_literal(value, node)}"
    out.append(arg)
  return out


def _parse_flags(argv: list[str]) -> list[str]:
  try:
    args = _check_overrides(cli.builtin_config_args(argv[1:], CONFIGS_DIR))
    config_flags.DEFINE_config_file(
        "config", DEFAULT_CONFIG, "Run config: a file or a built-in config's name (tiny, "
        "phi1_small, phi1); override fields with --config.FIELD=VALUE (tuples also as --config.FIELD=a,b).", lock_config=True)
    cli.help_shows_flags_of(__name__)  # --config too, defined only now
    return flags.FLAGS([argv[0]] + args)
  except (cli.UsageError, flags.Error, ValueError, SyntaxError) as e:
    cli.fail(PROG, e if isinstance(e, cli.UsageError) else cli.UsageError(str(e)))
  return []  # not reached


def _workdir(config) -> str:
  workdir = os.path.abspath(_WORKDIR.value or config.workdir)
  probe = workdir
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise cli.UsageError(f"--workdir {workdir}: {probe} is a file, not a directory")
  if not os.access(probe, os.W_OK):
    raise cli.UsageError(f"--workdir {workdir}: {probe} is not writable")
  return workdir


def _enable_compilation_cache(ctx) -> None:
  """config.compilation_cache_dir, relative to WORKDIR ('' = off)."""
  cache_dir = ctx.settings.run.compilation_cache_dir
  if cache_dir:
    # pylint: disable=g-import-not-at-top
    from phi_jax import compilation_cache
    from recipe import runner
    path = compilation_cache.enable(os.path.join(ctx.workdir, os.path.expanduser(cache_dir)))
    runner.say(f"phi_jax: compiled programs are kept in {path} (config.compilation_cache_dir)")


def _serve(ctx) -> None:
  from phi_jax import serve  # pylint: disable=g-import-not-at-top
  from recipe import models  # pylint: disable=g-import-not-at-top
  cfg = ctx.settings.serve
  path = models.resolve(ctx, cfg.model, "config.serve.model").spec
  api_key = (serve.api_key_from_env(cfg.api_key_env, "config.serve.api_key_env")
             if cfg.api_key_env else None)
  model = serve.load_model(path, cfg.dtype or None)
  server = serve.Server(model, host=cfg.host, port=cfg.port, model_name=cfg.model_name or path,
                        max_batch=cfg.max_batch, chunk_size=cfg.chunk_size,
                        max_queue=cfg.max_queue, batching=cfg.batching, api_key=api_key)
  if cfg.warm_up_prompt_tokens:
    serve.warm_up(server, cfg.warm_up_prompt_tokens, cfg.warm_up_new_tokens)
  serve.serve_until_signalled(server)


def _report(workdir: str, config, graph) -> None:
  from recipe import report  # pylint: disable=g-import-not-at-top
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise cli.UsageError(f"--report {workdir}: no such work directory")
  # the config the report stage recorded; else the one these flags name
  recorded = os.path.isfile(os.path.join(workdir, report.REPORT_DIR, report.CONFIG_FILE))
  paths = report.build_report(workdir, graph.nodes, None if recorded else config.to_dict())
  print(f"{paths['markdown']}\n{paths['html']}")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments: {argv[1:]}")
  os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
  # imported after flag parsing, so --help and flag errors are instant
  # pylint: disable=g-import-not-at-top
  from phi_jax import hosts
  from phi_jax.train.mesh import HEARTBEAT_TIMEOUT_S, maybe_initialize_distributed
  from recipe import graph, runner

  config = flags.FLAGS.config
  if _REPORT.value is not None:
    _report(_REPORT.value, config, graph.build())
    return
  if _DESCRIBE.value:
    from recipe.settings import describe_config  # pylint: disable=g-import-not-at-top
    print(describe_config(config))
    return
  # every section is checked here, before any work (recipe/settings.py)
  ctx = runner.Context(config, _workdir(config), graph.build())
  if _SERVE.value:
    ctx.selected = []
    _enable_compilation_cache(ctx)
    _serve(ctx)
    return
  stages = _STAGES.value or list(ctx.settings.run.stages) or ctx.graph.stage_names()
  force = _FORCE.value if _FORCE.value is not None else list(ctx.settings.run.force)
  plan = runner.make_plan(ctx, stages, force)
  if _PLAN.value:
    print(runner.format_plan(plan, ctx.workdir, ctx))
    return
  runner.check_refusals(plan, ctx.workdir)
  # multi-host jobs: before any JAX computation
  heartbeat = {} if _HEARTBEAT_TIMEOUT.value is None else {
      "heartbeat_timeout_s": _HEARTBEAT_TIMEOUT.value}
  maybe_initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                               **heartbeat)
  # several processes: a lost or interrupted one stops them all, with one line
  hosts.watch(PROG, heartbeat.get("heartbeat_timeout_s", HEARTBEAT_TIMEOUT_S))
  _enable_compilation_cache(ctx)
  todo = [d.node.name for d in plan if d.action != "skip"]
  runner.say(f"phi_jax: {len(plan)} nodes in {ctx.workdir}; to build: "
             f"{', '.join(todo) if todo else 'nothing'}")
  try:
    runner.execute(ctx, plan)
  except BaseException as e:
    hosts.settle(e)  # a collective that failed because a process went away: name it
    hosts.finish(failed=True)
    raise
  hosts.finish(failed=False)


def entry() -> None:
  """The `phi-jax-run` console script (and run.py)."""
  cli.run(main, prog=PROG, flags_parser=_parse_flags)


if __name__ == "__main__":
  entry()
