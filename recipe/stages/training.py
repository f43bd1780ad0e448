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
from phi_jax import settings as settings_lib
from recipe import models
from recipe.runner import Context, Node, StageError
from recipe.stages import evaluate as eval_stage
from recipe.stages import init as init_stage

# Test hook: the process SIGKILLs itself right after completing this step (or sends
# itself the signal KILL_SIGNAL_ENV names: 'TERM', 'INT'; 'HOST': process 0 SIGKILLs
# the coordination service's process beside it and itself, as if its host were lost).
KILL_AFTER_STEP_ENV = "PHI_JAX_TEST_KILL_AFTER_STEP"
KILL_SIGNAL_ENV = "PHI_JAX_TEST_KILL_SIGNAL"


def _field(section: str) -> str:
  return f"config.{section}.model"


def start_ref(ctx: Context, name: str, section: str) -> models.ModelRef:
  return models.resolve(ctx, ctx.settings.sections[section].model, _field(section),
                        allow_random=True, before=name)


def _kill_after(step: int, checkpoints: str, done: int) -> None:
  """The test hook; it first says what became of this step's checkpoint so far:
  'committed' (its directory is there), 'in flight' (Orbax's temporary directory only:
  the save started and is not committed) or 'not saved'."""
  if done == step:
    name = os.environ.get(KILL_SIGNAL_ENV, "KILL")
    if os.path.isdir(os.path.join(checkpoints, str(step))):
      save = "committed"
    elif any(n.startswith(f"{step}.orbax-checkpoint-tmp") for n in os.listdir(checkpoints)):
      save = "in flight"
    else:
      save = "not saved"
    print(f"test hook: SIG{name} after step {step}; its checkpoint: {save}", flush=True)
    if name == "HOST":
      from jax._src import distributed  # pylint: disable=g-import-not-at-top,protected-access
      os.kill(distributed.global_state.service.proc.pid, signal.SIGKILL)
      name = "KILL"
    os.kill(os.getpid(), getattr(signal, f"SIG{name}"))


def train(ctx: Context, reads: dict, name: str, section: str) -> dict:
  cfg = reads[section]
  ref = reads["start"]
  model_config, tokenizer, load_params = init_stage.load_start(
      ctx, ref, _field(section), model=reads["model"],
      init_tokenizer=reads.get("init.tokenizer"))
  model_config = with_context(model_config, cfg.context, f"config.{section}.context")
  if tokenizer is None:
    raise StageError(f"the starting model {ref.spec!r} has no tokenizer to tokenize the "
                     f"data with; set config.init.tokenizer")
  seed = int(reads["seed"])
  allow_partial = bool(reads["data.allow_partial_mixtures"])
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
  measured = reads["eval"].value  # the bits-per-byte settings, recorded with the curve
  summary_extra = {"skipped_components": skipped,
                   "measurements": measurement_settings(cfg, measured)}
  eval_batches = None
  if cfg.eval_every > 0:
    try:
      make(split="validation")
      eval_batches = functools.partial(make, split="validation")
    except batches_lib.DataError as e:
      print(f"[{name}] no held-out loss: {e}", flush=True)
  eval_hooks = ()
  if cfg.eval_every > 0:
    sets = eval_stage.bpb_sets(measured, tokenizer, model_config.max_seq_len, where=name)
    if sets:
      eval_hooks = (functools.partial(_bpb_hook, sets=sets, batch_size=cfg.batch_size),)
  kill_after = int(os.environ.get(KILL_AFTER_STEP_ENV, "0") or 0)
  job = loop.TrainJob(
      name=name, out_dir=ctx.node_dir(name), model_config=model_config, tokenizer=tokenizer,
      cfg=cfg, mesh=mesh_lib.make_mesh(reads["mesh"]),
      rules=mesh_lib.parse_rules(reads["mesh"].rules), seed=seed, batches=batches,
      eval_batches=eval_batches, init_params=load_params,
      source=f"{name}:{ref.spec}",
      metadata={"run_config": settings_lib.to_json(reads),
                "measurements": summary_extra["measurements"]},
      eval_hooks=eval_hooks,
      step_hooks=((functools.partial(_kill_after, kill_after,
                                     os.path.join(ctx.node_dir(name), "checkpoints")),)
                  if kill_after else ()),
      on_corrupt_checkpoint=cfg.on_corrupt_checkpoint)
  return dict(loop.train(job), **summary_extra)


def measurement_settings(cfg, measured) -> dict:
  """The settings of the measurements a training run takes along the way (the held-out
  loss and the benchmarks' bits per byte), as recorded with its curves."""
  return {"eval_every": cfg.eval_every, "eval_batches": cfg.eval_batches,
          "bpb": eval_stage.bpb_settings(measured)}


def _bpb_hook(step, state, trainer, *, sets, batch_size) -> dict[str, float]:
  """Bits per byte of the benchmarks' canonical solutions at this evaluation."""
  del step
  return eval_bpb.evaluate_bpb(bpb_lib.trainer_nll_sums(trainer, state), sets, batch_size)


def validate(ctx: Context, section: str) -> None:
  """What the schema cannot check: the starting model reference (ranges and cross-field
  rules: phi_jax/train/settings.py)."""
  cfg = ctx.settings.sections[section]
  with_context(PhiConfig(), cfg.context, f"config.{section}.context")  # no model takes it
  ref = start_ref(ctx, section_node(section), section)  # a malformed model reference
  _check_start_is_kept(ctx, ref, section)


def _check_start_is_kept(ctx: Context, ref: models.ModelRef, section: str) -> None:
  """A start at '<stage>:<step>' of this run names a step that stage keeps (or has)."""
  if ref.node not in ("pretrain", "finetune") or ref.step is None or os.path.isdir(ref.spec):
    return
  source = "train" if ref.node == "pretrain" else "finetune"
  kept = ctx.settings.sections[source]
  if ref.step not in kept.kept_steps():
    raise UsageError(
        f"config.{section}.model = '{ref.node}:{ref.step}': {ref.node} will not keep step "
        f"{ref.step} (it saves every {kept.checkpoint_every} steps and keeps "
        f"the last {kept.keep_checkpoints}); add {ref.step} to "
        f"config.{source}.keep_steps")


def section_node(section: str) -> str:
  return "pretrain" if section == "train" else section


def _after(ctx: Context, name: str, section: str) -> list[str]:
  after = []
  if any(catalog.is_catalog_name(spec) for spec in ctx.settings.sections[section].data):
    after.append(catalog.DATA_STAGE)
  return after + models.upstream_of(ctx, ctx.settings.sections[section].model,
                                    _field(section), allow_random=True, before=name)


def _reads(ctx: Context, name: str, section: str) -> dict:
  """The training settings, the resolved starting model (and what a random start or its
  tokenizer is made of), the mesh, the seed and the data options; the bits-per-byte
  settings as a measurement taken along the way."""
  s = ctx.settings
  ref = start_ref(ctx, name, section)
  reads = {section: s.sections[section], "start": ref, "mesh": s.mesh,
           "seed": s.seed, "data.allow_partial_mixtures": s.data.allow_partial_mixtures,
           "eval": settings_lib.Measured(s.eval)}
  reads.update(init_stage.start_reads(ctx, ref))
  return reads


def _partial(ctx: Context, name: str) -> str | None:
  steps = checkpoint.steps(os.path.join(ctx.node_dir(name), "checkpoints"))
  return f"checkpoint step {steps[-1]}" if steps else None


def _interrupted(ctx: Context, name: str) -> str:
  partial = _partial(ctx, name)
  return f"the checkpoints up to {partial}" if partial else "no checkpoint yet"


def _node(name: str, section: str, doc: str) -> Node:
  return Node(
      name=name, doc=doc, run=functools.partial(train, name=name, section=section),
      reads=functools.partial(_reads, name=name, section=section), measures_along=True,
      after=functools.partial(_after, name=name, section=section),
      validate=functools.partial(validate, section=section), expensive=True,
      produces_model=True, partial=functools.partial(_partial, name=name),
      interrupted=functools.partial(_interrupted, name=name))


NODES = (
    _node("pretrain", "train", "the pretrained model: pretrain/checkpoints"),
    _node("finetune", "finetune", "the finetuned model: finetune/checkpoints"),
)
