"""Stages `pretrain` and `finetune`: the training loop on the data stage's datasets.

    pretrain   config.train: from config.train.model ('init' by default: the init
               stage's model), on config.train.data (CodeTextbook in the paper)
    finetune   config.finetune: from config.finetune.model ('pretrain' by default: the
               latest pretrain checkpoint; 'pretrain:24000' for phi-1-base), on
               config.finetune.data (CodeExercises), with its own optimizer and schedule

Each writes WORKDIR/<stage>/checkpoints/<step>/, metrics.jsonl and tensorboard/
(phi_jax/train/loop.py). The stage builds what the loop is given: the starting model
(recipe/models.py), the mesh and its rules, the batches from the grain loader
(data_pipeline/batches.py) and the held-out batches. Its output depends on its config
sections, the starting model and the data stage's output, so a rebuilt dataset or
starting model is never silently trained on: the runner refuses until --force.

A run killed mid-way resumes from its latest complete checkpoint on the next run.
"""

from __future__ import annotations

import functools
import os
import signal

from data_pipeline import batches as batches_lib
from data_pipeline import catalog
from eval import bpb as eval_bpb
from phi_jax import checkpoint
from phi_jax.cli import UsageError
from phi_jax.config import PhiConfig, with_context
from phi_jax.train import loop
from phi_jax.train import mesh as mesh_lib
from phi_jax import bpb as bpb_lib
from recipe import models
from recipe.runner import Context, Node, StageError
from recipe.stages import evaluate as eval_stage
from recipe.stages import init as init_stage

# Test hook: the process SIGKILLs itself right after completing this step.
KILL_AFTER_STEP_ENV = "PHI_JAX_TEST_KILL_AFTER_STEP"


def _field(section: str) -> str:
  return f"config.{section}.model"


def start_ref(ctx: Context, name: str, section: str) -> models.ModelRef:
  return models.resolve(ctx, ctx.config[section].model, _field(section), allow_random=True,
                        before=name)


def _kill_after(step: int, done: int) -> None:
  if done == step:
    os.kill(os.getpid(), signal.SIGKILL)


def train(ctx: Context, name: str, section: str) -> dict:
  cfg = ctx.config[section]
  ref = start_ref(ctx, name, section)
  model_config, tokenizer, load_params = init_stage.load_start(ctx, ref, _field(section))
  model_config = with_context(model_config, cfg.context, f"config.{section}.context")
  if tokenizer is None:
    raise StageError(f"the starting model {ref.spec!r} has no tokenizer to tokenize the "
                     f"data with; set config.init.tokenizer")
  seed = int(ctx.config.seed)
  allow_partial = bool(ctx.config.data.allow_partial_mixtures)
  skipped: list[str] = []
  try:
    batches_lib.dataset_dirs(cfg.data, ctx.workdir, f"config.{section}.data",
                             allow_partial=allow_partial, skipped=skipped)
  except batches_lib.DataError as e:
    raise StageError(str(e)) from None
  if skipped:
    print(f"[{name}] training without {', '.join(skipped)}: not built by the data stage "
          f"(config.data.allow_partial_mixtures)", flush=True)
  make = functools.partial(batches_lib.make_batches, cfg, ctx.workdir, tokenizer, seed=seed,
                           where=section, allow_partial=allow_partial)
  try:
    batches = make(split="train")
  except batches_lib.DataError as e:
    raise StageError(str(e)) from None
  summary_extra = {"skipped_components": skipped}
  eval_batches = None
  if int(cfg.eval_every) > 0:
    try:
      make(split="validation")
      eval_batches = functools.partial(make, split="validation")
    except batches_lib.DataError as e:
      print(f"[{name}] no held-out loss: {e}", flush=True)
  eval_hooks = ()
  if int(cfg.eval_every) > 0:
    sets = eval_stage.bpb_sets(ctx, tokenizer, model_config.max_seq_len, where=name)
    if sets:
      eval_hooks = (functools.partial(_bpb_hook, sets=sets, batch_size=int(cfg.batch_size)),)
  kill_after = int(os.environ.get(KILL_AFTER_STEP_ENV, "0") or 0)
  job = loop.TrainJob(
      name=name, out_dir=ctx.node_dir(name), model_config=model_config, tokenizer=tokenizer,
      cfg=cfg, mesh=mesh_lib.make_mesh(ctx.config.mesh),
      rules=mesh_lib.parse_rules(ctx.config.mesh.rules), seed=seed, batches=batches,
      eval_batches=eval_batches, init_params=load_params,
      source=f"{name}:{ref.spec}", metadata={"run_config": ctx.config.to_dict()},
      eval_hooks=eval_hooks,
      step_hooks=(functools.partial(_kill_after, kill_after),) if kill_after else (),
      on_corrupt_checkpoint=cfg.on_corrupt_checkpoint)
  return dict(loop.train(job), **summary_extra)


def _bpb_hook(step, state, trainer, *, sets, batch_size) -> dict[str, float]:
  """Bits per byte of the benchmarks' canonical solutions at this evaluation."""
  del step
  return eval_bpb.evaluate_bpb(bpb_lib.trainer_nll_sums(trainer, state), sets, batch_size)


def validate(ctx: Context, section: str) -> None:
  """The training section's values, before any stage runs (ranges: configs/base.py)."""
  cfg = ctx.config[section]
  where = f"config.{section}"
  steps = int(cfg.steps)
  if steps < 1:
    raise UsageError(f"{where}.steps = {steps}: must be >= 1")
  warmup = int(cfg.optimizer.warmup_steps)
  if not 0 <= warmup < steps:
    raise UsageError(f"{where}.optimizer.warmup_steps = {warmup}: must be >= 0 and below "
                     f"{where}.steps ({steps})")
  for field in ("batch_size", "seq_len", "microbatches", "checkpoint_every",
                "keep_checkpoints", "log_every", "eval_batches"):
    if int(cfg[field]) < 1:
      raise UsageError(f"{where}.{field} = {cfg[field]}: must be >= 1")
  for field in ("eval_every", "loader_workers"):
    if int(cfg[field]) < 0:
      raise UsageError(f"{where}.{field} = {cfg[field]}: must be >= 0")
  if int(cfg.batch_size) % int(cfg.microbatches):
    raise UsageError(f"{where}.batch_size = {cfg.batch_size}: must be a multiple of "
                     f"{where}.microbatches ({cfg.microbatches})")
  opt = cfg.optimizer
  if not float(opt.lr) > 0:
    raise UsageError(f"{where}.optimizer.lr = {opt.lr}: must be > 0")
  if not 0 <= float(opt.end_lr) <= float(opt.lr):
    raise UsageError(f"{where}.optimizer.end_lr = {opt.end_lr}: must be in [0, lr]")
  if float(opt.weight_decay) < 0 or float(opt.grad_clip) < 0 or not float(opt.eps) > 0:
    raise UsageError(f"{where}.optimizer: weight_decay and grad_clip must be >= 0 and eps "
                     f"> 0 (got {opt.weight_decay}, {opt.grad_clip}, {opt.eps})")
  for field in ("b1", "b2"):
    if not 0 <= float(opt[field]) < 1:
      raise UsageError(f"{where}.optimizer.{field} = {opt[field]}: must be in [0, 1)")
  if not list(cfg.data):
    raise UsageError(f"{where}.data names no dataset")
  if cfg.on_corrupt_checkpoint not in ("fail", "previous"):
    raise UsageError(f"{where}.on_corrupt_checkpoint = {cfg.on_corrupt_checkpoint!r}: must "
                     f"be 'fail' or 'previous'")
  with_context(PhiConfig(), cfg.context, f"{where}.context")  # values no model can take
  if any(int(s) < 1 for s in cfg.keep_steps):
    raise UsageError(f"{where}.keep_steps = {tuple(cfg.keep_steps)}: steps must be >= 1")
  ref = start_ref(ctx, section_node(section), section)  # a malformed model reference
  _check_start_is_kept(ctx, ref, section)


def kept_steps(cfg) -> set[int]:
  """The steps a training section's run leaves on disk: its keep_steps, and the last
  keep_checkpoints of its saves (every checkpoint_every steps and the last step)."""
  steps = int(cfg.steps)
  saves = sorted(set(range(int(cfg.checkpoint_every), steps + 1, int(cfg.checkpoint_every)))
                 | {steps} | {int(s) for s in cfg.keep_steps if int(s) <= steps})
  return {int(s) for s in cfg.keep_steps if int(s) <= steps} | set(
      saves[-int(cfg.keep_checkpoints):])


def _check_start_is_kept(ctx: Context, ref: models.ModelRef, section: str) -> None:
  """A start at '<stage>:<step>' of this run names a step that stage keeps (or has)."""
  if ref.node not in ("pretrain", "finetune") or ref.step is None or os.path.isdir(ref.spec):
    return
  source = "train" if ref.node == "pretrain" else "finetune"
  if ref.step not in kept_steps(ctx.config[source]):
    raise UsageError(
        f"config.{section}.model = '{ref.node}:{ref.step}': {ref.node} will not keep step "
        f"{ref.step} (it saves every {ctx.config[source].checkpoint_every} steps and keeps "
        f"the last {ctx.config[source].keep_checkpoints}); add {ref.step} to "
        f"config.{source}.keep_steps")


def section_node(section: str) -> str:
  return "pretrain" if section == "train" else section


def _after(ctx: Context, name: str, section: str) -> list[str]:
  after = []
  if any(catalog.is_catalog_name(spec) for spec in ctx.config[section].data):
    after.append(catalog.DATA_STAGE)
  return after + models.upstream_of(ctx, ctx.config[section].model, _field(section),
                                    allow_random=True, before=name)


def _extra(ctx: Context, name: str, section: str) -> dict:
  return {"start": models.describe(start_ref(ctx, name, section))}


def _partial(ctx: Context, name: str) -> str | None:
  steps = checkpoint.steps(os.path.join(ctx.node_dir(name), "checkpoints"))
  return f"checkpoint step {steps[-1]}" if steps else None


def _interrupted(ctx: Context, name: str) -> str:
  partial = _partial(ctx, name)
  return f"the checkpoints up to {partial}" if partial else "no checkpoint yet"


def _node(name: str, section: str, doc: str) -> Node:
  return Node(
      name=name, doc=doc, run=functools.partial(train, name=name, section=section),
      config=(section, "model", "mesh", "seed"),
      operational=(f"{section}.on_corrupt_checkpoint", f"{section}.loader_workers"),
      after=functools.partial(_after, name=name, section=section),
      extra=functools.partial(_extra, name=name, section=section),
      validate=functools.partial(validate, section=section), expensive=True,
      produces_model=True, partial=functools.partial(_partial, name=name),
      interrupted=functools.partial(_interrupted, name=name))


NODES = (
    _node("pretrain", "train", "the pretrained model: pretrain/checkpoints"),
    _node("finetune", "finetune", "the finetuned model: finetune/checkpoints"),
)
