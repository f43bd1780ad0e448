"""The training loop shared by the pretrain and finetune stages.

`train(ctx, stage_name, train_cfg, init)` trains under WORKDIR/<stage_name>/:

    checkpoints/<step>/   params, metadata, tokenizer, opt_state, train_state, data_iterator
    metrics.jsonl         the loss curve (one record per logged step)
    tensorboard/          TensorBoard event files

It resumes from the latest complete checkpoint there (parameters, optimizer state,
step and data position), so an interrupted run continues bit-identically; otherwise
it starts from `init`: 'random' (config.model, config.init.tokenizer) or a model
checkpoint / transformers directory / hub repo id, with a fresh optimizer. The dropout
key of step s is fold_in(key(config.seed), s).
"""

from __future__ import annotations

import math
import os
import signal
import time
from typing import Any

import jax

from phi_jax import checkpoint, hf_io, pretrained
from phi_jax.config import PhiConfig
from phi_jax.stages.base import Context, StageError
from phi_jax.stages.init_model import RUNTIME_FIELDS, load_tokenizer
from phi_jax.stages.training import RANDOM
from phi_jax.tokenizer import Tokenizer
from phi_jax.train import data as data_lib
from phi_jax.train import flops
from phi_jax.train import mesh as mesh_lib
from phi_jax.train.checkpointing import TrainCheckpointer
from phi_jax.train.metrics import MetricsWriter
from phi_jax.train.step import Trainer

# Test hook: the process SIGKILLs itself right after completing this step.
KILL_AFTER_STEP_ENV = "PHI_JAX_TEST_KILL_AFTER_STEP"


class TrainingDivergedError(RuntimeError):
  """The loss became NaN or infinite."""


# ---------------------------------------------------------------------- set-up
def maybe_initialize_distributed() -> None:
  """jax.distributed.initialize() when the environment describes a multi-host job."""
  multi_host = (os.environ.get("JAX_COORDINATOR_ADDRESS")
                or "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
                or int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1)
  if not multi_host or jax.distributed.is_initialized():
    return
  try:
    jax.distributed.initialize()
  except RuntimeError as e:
    raise RuntimeError(
        f"multi-host training: jax.distributed.initialize() failed ({e}); it must run "
        f"before any JAX computation, so call phi_jax.train.loop."
        f"maybe_initialize_distributed() at program start (run.py)") from e


def starting_point(ctx: Context, init: str) -> tuple[PhiConfig, Tokenizer | None, Any]:
  """(model config, tokenizer, params loader) of `init`.

  'random': config.model and config.init.tokenizer; the loader is None (the Trainer
  initialises). Otherwise a phi_jax checkpoint, transformers dir or hub repo id: its
  architecture and tokenizer (config.init.tokenizer when a transformers dir has
  none), with config.model's numerics and dropout (RUNTIME_FIELDS); the loader
  returns its parameters.
  """
  if init == RANDOM:
    model_config = PhiConfig.from_mapping(ctx.config.model)
    tokenizer = load_tokenizer(ctx.config.init.tokenizer, None, ctx.workdir)
    return model_config, tokenizer, None
  runtime = {f: ctx.config.model[f] for f in RUNTIME_FIELDS}
  if os.path.isdir(init) and checkpoint.is_checkpoint(init):
    model_config = checkpoint.read_config(init).replace(**runtime)
    tokenizer = checkpoint.read_tokenizer(init)
    return model_config, tokenizer, lambda: checkpoint.load_params(init, model_config)
  try:
    directory = hf_io.resolve_model_dir(init)
  except Exception as e:  # pylint: disable=broad-except
    raise StageError(f"cannot start training from {init!r}: not a phi_jax checkpoint, and "
                     f"not a transformers directory or hub repo id ({e})") from e
  if not hf_io.is_hf_dir(directory):
    raise StageError(f"cannot start training from {init!r}: neither a phi_jax checkpoint nor "
                     f"a transformers directory")
  model_config, params, tokenizer = pretrained.load_hf(directory, **runtime)
  if tokenizer is None and ctx.config.init.tokenizer:
    tokenizer = load_tokenizer(ctx.config.init.tokenizer, None, ctx.workdir)
  return model_config, tokenizer, lambda: params


def _oom_error(e: Exception, train_cfg: Any, model_config: PhiConfig) -> Exception:
  return RuntimeError(
      f"out of device memory at the first training step (batch_size={train_cfg.batch_size}, "
      f"microbatches={train_cfg.microbatches}, seq_len={train_cfg.seq_len}, "
      f"model.remat={model_config.remat!r}). Lower the per-step memory: raise "
      f"train.microbatches (gradient accumulation), lower train.batch_size or "
      f"train.seq_len, or set model.remat='full' (or 'dots'); more fsdp devices "
      f"(config.mesh) also help. Original error: {str(e)[:500]}")


# ---------------------------------------------------------------------- the loop
class _Run:
  """One training run's objects; `train` below drives it."""

  def __init__(self, ctx: Context, stage_name: str, section: str, init: str):
    maybe_initialize_distributed()
    train_cfg = ctx.config[section]
    self.ctx, self.cfg, self.init, self.name = ctx, train_cfg, init, stage_name
    self.section = section
    self.stage_dir = ctx.stage_dir(stage_name)
    self.total_steps = int(train_cfg.steps)
    self.seed = int(ctx.config.seed)
    self.model_config, self.tokenizer, self.load_params = starting_point(ctx, init)
    if self.tokenizer is None:
      raise StageError(f"the starting model {init!r} has no tokenizer to tokenize the data "
                       f"with; set config.init.tokenizer")
    if self.tokenizer.vocab_size > self.model_config.vocab_size:
      raise StageError(f"the tokenizer has {self.tokenizer.vocab_size} tokens but the model's "
                       f"vocab_size is {self.model_config.vocab_size}")
    if int(train_cfg.seq_len) > self.model_config.max_seq_len:
      raise StageError(f"seq_len {train_cfg.seq_len} exceeds the model's max_seq_len "
                       f"{self.model_config.max_seq_len}")
    self.mesh = mesh_lib.make_mesh(ctx.config.mesh)
    self.trainer = Trainer(self.model_config, train_cfg, self.mesh,
                           mesh_lib.parse_rules(ctx.config.mesh.rules), self.total_steps)
    self.iterator = data_lib.make_batches(train_cfg, ctx.workdir, self.tokenizer,
                                          split="train", seed=self.seed, where=self.section)
    self.has_eval = int(train_cfg.eval_every) > 0
    if self.has_eval:
      try:
        self.make_eval_batches()
      except data_lib.DataError as e:
        print(f"[{stage_name}] no held-out loss: {e}", flush=True)
        self.has_eval = False
    self.checkpointer = TrainCheckpointer(
        os.path.join(self.stage_dir, "checkpoints"), self.model_config, self.tokenizer,
        every=int(train_cfg.checkpoint_every), keep=int(train_cfg.keep_checkpoints),
        source=f"{stage_name}:{init}", stage=stage_name, run_config=ctx.config.to_dict())

  def initial_state(self):
    restored = self.checkpointer.restore(self.trainer.abstract_state())
    if restored is not None:
      state, iterator_state = restored
      self.iterator.set_state(iterator_state)
      print(f"[{self.name}] resuming from step {int(state.step)} "
            f"({self.checkpointer.step_dir(int(state.step))})", flush=True)
      return state
    if self.load_params is None:
      return self.trainer.init_state(self.seed)
    return self.trainer.state_from_params(self.load_params())

  def make_eval_batches(self):
    """The validation split, from its start (the same batches at every evaluation)."""
    return data_lib.make_batches(self.cfg, self.ctx.workdir, self.tokenizer,
                                 split="validation", seed=self.seed, where=self.section)

  def evaluate(self, state) -> float:
    iterator = self.make_eval_batches()
    loss_sum, tokens = 0.0, 0.0
    for _ in range(int(self.cfg.eval_batches)):
      out = jax.device_get(self.trainer.eval_step(state, self.trainer.shard_batch(next(iterator))))
      loss_sum += float(out["loss"]) * float(out["tokens"])
      tokens += float(out["tokens"])
    return loss_sum / max(tokens, 1.0)

  def last_good(self) -> str:
    self.checkpointer.wait()
    step = self.checkpointer.latest_step()
    return "none" if step is None else f"{self.checkpointer.step_dir(step)} (step {step})"

  def check_finite(self, pending: list[tuple[int, dict]]) -> None:
    for step, metrics in pending:
      loss = float(metrics["loss"])
      if not math.isfinite(loss):
        raise TrainingDivergedError(
            f"[{self.name}] the training loss is {loss} at step {step}; stopped. The last good "
            f"checkpoint is {self.last_good()}. Lower the learning rate (optimizer.lr), raise "
            f"optimizer.warmup_steps or keep optimizer.grad_clip on, and rerun: training "
            f"resumes from that checkpoint")

  def run(self) -> dict:
    state = self.initial_state()
    start_step = int(state.step)
    writer = MetricsWriter(self.stage_dir, self.total_steps, resume_step=start_step,
                           name=self.name)
    kill_after = int(os.environ.get(KILL_AFTER_STEP_ENV, "0") or 0)
    log_every, eval_every = int(self.cfg.log_every), int(self.cfg.eval_every)
    seq_len, n_devices = int(self.cfg.seq_len), len(self.mesh.devices.flat)
    base_key = jax.random.key(self.seed)
    pending: list[tuple[int, dict]] = []  # metrics since the last log
    n_fetched = 0  # how many of them are on the host already (checked and counted)
    last_loss, tokens_seen = None, 0.0
    window_start, window_steps = time.time(), 0
    run_start = time.time()
    saved_step = start_step
    try:
      for step in range(start_step, self.total_steps):
        batch = self.trainer.shard_batch(next(self.iterator))
        rng = jax.random.fold_in(base_key, step)
        try:
          state, metrics = self.trainer.train_step(state, batch, rng)
        except Exception as e:  # pylint: disable=broad-except
          if step == start_step and "RESOURCE_EXHAUSTED" in str(e):
            raise _oom_error(e, self.cfg, self.model_config) from e
          raise
        done = step + 1
        pending.append((done, metrics))
        window_steps += 1
        eval_now = self.has_eval and (
            done % eval_every == 0 or done == self.total_steps)
        log_now = done % log_every == 0 or done == self.total_steps or eval_now
        save_now = done % int(self.cfg.checkpoint_every) == 0 or done == self.total_steps
        if log_now or save_now:
          fetched = [(s, jax.device_get(m)) for s, m in pending[n_fetched:]]
          self.check_finite(fetched)  # never checkpoint a diverged state
          tokens_seen += sum(float(m["tokens"]) for _, m in fetched)
          pending, n_fetched = pending[:n_fetched] + fetched, len(pending)
          last_loss = float(pending[-1][1]["loss"])
        if log_now:
          elapsed = time.time() - window_start
          tokens_per_s = window_steps * int(self.cfg.batch_size) * seq_len / max(elapsed, 1e-9)
          scalars = {"loss": last_loss, "lr": float(pending[-1][1]["lr"]),
                     "grad_norm": float(pending[-1][1]["grad_norm"]),
                     "tokens_per_s": tokens_per_s, "step_time_s": elapsed / window_steps,
                     "mfu": flops.mfu(tokens_per_s, self.model_config, seq_len, n_devices,
                                      jax.devices()[0])}
          for s, m in pending[:-1]:  # every step's loss goes into the record
            writer.write(s, {"loss": float(m["loss"]), "lr": float(m["lr"]),
                             "grad_norm": float(m["grad_norm"])})
          writer.write(done, scalars)
          if eval_now:
            scalars["eval_loss"] = self.evaluate(state)
            writer.write(done, {"loss": scalars["eval_loss"]}, kind="eval")
          writer.progress(done, scalars)
          pending, n_fetched = [], 0
          window_start, window_steps = time.time(), 0
        if save_now:
          self.checkpointer.save(state, self.iterator.get_state(), force=True)
          saved_step = done
        if kill_after and done == kill_after:
          writer.flush()
          os.kill(os.getpid(), signal.SIGKILL)
      if saved_step != int(state.step):  # resumed at the end: nothing new to save
        self.checkpointer.save(state, self.iterator.get_state(), force=True)
    finally:
      writer.close()
      self.checkpointer.close()
    final_step = int(state.step)
    last = self.checkpointer.latest_step()
    return {"final_loss": last_loss, "steps": final_step, "resumed_from": start_step,
            "tokens": tokens_seen, "seconds": round(time.time() - run_start, 3),
            "checkpoint": None if last is None else self.checkpointer.step_dir(last),
            "model_config": self.model_config.to_dict()}


def train(ctx: Context, stage_name: str, section: str, init: str = RANDOM) -> dict:
  """Trains (or resumes training) under ctx.stage_dir(stage_name); returns a summary.

  section: the config section of the run ('train' or 'finetune': steps, batches,
  optimizer, data). init: 'random' or the path / repo id of the starting model (ignored on resume).
  Summary: final_loss, steps, resumed_from, tokens (trained on in this process),
  seconds, checkpoint (the last step directory), model_config.
  """
  return _Run(ctx, stage_name, section, init).run()
