"""The training loop: steps a model over batches, checkpoints, logs and evaluates.

`train(job)` trains `job.model_config` under `job.out_dir`:

    checkpoints/<step>/   params, metadata, tokenizer, opt_state, train_state, data_iterator
    metrics.jsonl         the loss curve (one record per logged step)
    tensorboard/          TensorBoard event files

It resumes from the latest complete checkpoint there (parameters, optimizer state,
step and data position), so an interrupted run continues bit-identically; otherwise it
starts from `job.init_params(shardings)` (or a random init when that is None) with a fresh
optimizer. The dropout key of step s is fold_in(key(job.seed), s).

The loop knows nothing of stages, datasets or benchmarks: the caller (the recipe's
training stages) hands it the batches, a factory of held-out batches, evaluation hooks
that add metrics at every evaluation, and step hooks.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import jax
import numpy as np
from jax.sharding import Mesh

from phi_jax import checkpoint
from phi_jax.config import PhiConfig
from phi_jax.tokenizer import Tokenizer
from phi_jax.train import fit as fit_lib, flops
from phi_jax.train.checkpointing import TrainCheckpointer
from phi_jax.train.metrics import MetricsWriter
from phi_jax.train.step import Trainer, TrainState


class TrainingError(RuntimeError):
  """Training cannot start or continue (bad set-up, out of memory, divergence)."""


class TrainingDivergedError(TrainingError):
  """The loss became NaN or infinite."""


class Batches(Protocol):
  """An iterator of host batches whose position can be saved and restored."""

  def __next__(self) -> Mapping[str, np.ndarray]: ...

  def get_state(self) -> Any: ...

  def set_state(self, state: Any) -> None: ...


# An evaluation hook: (step, train state, trainer) -> extra scalars logged as kind "eval"
# (e.g. bits per byte on benchmark solutions, given by the orchestration).
EvalHook = Callable[[int, TrainState, Trainer], Mapping[str, float]]
# A step hook: called with the number of completed steps after each step.
StepHook = Callable[[int], None]


@dataclasses.dataclass
class TrainJob:
  """Everything one training run needs.

  Attributes:
    name: the run's name in messages and checkpoint metadata ('pretrain').
    out_dir: where checkpoints/, metrics.jsonl and tensorboard/ go.
    model_config: the architecture and numerics to train.
    tokenizer: stored with every checkpoint.
    cfg: the training section (steps, batch_size, seq_len, microbatches,
      checkpoint_every, keep_checkpoints, keep_steps (optional), log_every, eval_every, eval_batches,
      optimizer.*): a ConfigDict or any object with those attributes.
    mesh: the device mesh; rules: logical axis -> mesh axis rules.
    seed: seeds the random init and the dropout keys.
    batches: the training batches (this host's rows), resumable.
    eval_batches: returns a fresh iterator over the held-out batches, or None.
    init_params: returns the starting parameters, or None for a random init. It is
      called with the parameters' target shardings (a tree of NamedSharding) and may
      return arrays placed on them or whole values on every host
      (`Trainer.state_from_params`).
    source: where the starting model came from (checkpoint metadata).
    metadata: more checkpoint metadata fields (the run config, ...).
    eval_hooks: extra metrics at every evaluation.
    step_hooks: called after every step.
    on_corrupt_checkpoint: what a resume does when the latest checkpoint cannot be
      read: 'fail' (stop, naming the step, the item and the next older complete step)
      or 'previous' (resume from that older step).
  """
  name: str
  out_dir: str
  model_config: PhiConfig
  tokenizer: Tokenizer
  cfg: Any
  mesh: Mesh
  rules: Sequence[tuple[str, Any]]
  seed: int
  batches: Batches
  eval_batches: Callable[[], Iterator[Mapping[str, np.ndarray]]] | None = None
  init_params: Callable[[Any], Any] | None = None
  source: str = ""
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  eval_hooks: Sequence[EvalHook] = ()
  step_hooks: Sequence[StepHook] = ()
  on_corrupt_checkpoint: str = "fail"


def _oom_error(e: Exception, train_cfg: Any, model_config: PhiConfig,
               microbatches: int) -> Exception:
  return TrainingError(
      f"out of device memory at the first training step (batch_size={train_cfg.batch_size}, "
      f"microbatches={microbatches}, seq_len={train_cfg.seq_len}, "
      f"model.remat={model_config.remat!r}; the compiled step's peak was checked against "
      f"a budget of (1 - memory_headroom) of the device's limit: raise memory_headroom). "
      f"Lower the per-step memory: raise "
      f"microbatches (gradient accumulation), lower batch_size or seq_len, or set "
      f"model.remat='full' (or 'dots'); more fsdp devices (config.mesh) also help. "
      f"Original error: {str(e)[:500]}")


# ---------------------------------------------------------------------- the loop
class _Run:
  """One training run's objects; `train` below drives it."""

  def __init__(self, job: TrainJob):
    self.job, self.cfg, self.name = job, job.cfg, job.name
    self.total_steps = int(job.cfg.steps)
    self.model_config, self.tokenizer = job.model_config, job.tokenizer
    if self.tokenizer.vocab_size > self.model_config.vocab_size:
      raise TrainingError(f"{job.name}: the tokenizer has {self.tokenizer.vocab_size} tokens "
                          f"but the model's vocab_size is {self.model_config.vocab_size}")
    if int(job.cfg.seq_len) > self.model_config.max_seq_len:
      raise TrainingError(f"{job.name}: seq_len {job.cfg.seq_len} exceeds the model's "
                          f"max_seq_len {self.model_config.max_seq_len}")
    self.mesh = job.mesh
    # 'auto' remat / microbatches 0: chosen (else checked) against the devices' memory,
    # recorded in fit.json and printed; process 0 decides for every host.
    self.fit = fit_lib.resolve(self.model_config, job.cfg, self.mesh, job.rules,
                               record_path=os.path.join(job.out_dir, "fit.json"),
                               where=job.name)
    print(f"[{job.name}] {self.fit.describe()}", flush=True)
    self.model_config = self.model_config.replace(remat=self.fit.remat)
    self.trainer = Trainer(self.model_config, job.cfg, self.mesh, job.rules, self.total_steps,
                           microbatches=self.fit.microbatches)
    self.iterator = job.batches
    self.has_eval = int(job.cfg.eval_every) > 0 and (
        job.eval_batches is not None or bool(job.eval_hooks))
    self.checkpointer = TrainCheckpointer(
        os.path.join(job.out_dir, "checkpoints"), self.model_config, self.tokenizer,
        every=int(job.cfg.checkpoint_every), keep=int(job.cfg.keep_checkpoints),
        keep_steps=tuple(int(s) for s in getattr(job.cfg, "keep_steps", ())),
        source=job.source, stage=job.name, **dict(job.metadata))

  def restore(self):
    """The latest complete checkpoint's (state, iterator state), or None; a corrupt one
    stops the run or, with on_corrupt_checkpoint='previous', gives way to older steps."""
    abstract = self.trainer.abstract_state()
    step = None
    while True:
      try:
        return self.checkpointer.restore(abstract, step=step)
      except checkpoint.CheckpointError as e:
        if self.job.on_corrupt_checkpoint != "previous" or e.older_step is None:
          hint = (f"; set on_corrupt_checkpoint='previous' in the {self.name} config to "
                  f"resume from step {e.older_step}" if e.older_step is not None else "")
          raise TrainingError(f"[{self.name}] {e}{hint}") from None
        print(f"[{self.name}] {e}: resuming from step {e.older_step} "
              f"(on_corrupt_checkpoint='previous')", flush=True)
        step = e.older_step

  def initial_state(self):
    restored = self.restore()
    if restored is not None:
      state, iterator_state = restored
      self.iterator.set_state(iterator_state)
      print(f"[{self.name}] resuming from step {int(state.step)} "
            f"({self.checkpointer.step_dir(int(state.step))})", flush=True)
      return state
    if self.job.init_params is None:
      return self.trainer.init_state(self.job.seed)
    # The loader restores straight into the parameters' global shardings where it can
    # (an Orbax checkpoint), so no host reads or holds more than its own shards.
    return self.trainer.state_from_params(self.job.init_params(self.trainer.param_shardings))

  def evaluate(self, state, step: int) -> dict[str, float]:
    """Held-out loss over the same `eval_batches` batches every time, plus the hooks'."""
    scalars: dict[str, float] = {}
    if self.job.eval_batches is not None:
      iterator = self.job.eval_batches()
      loss_sum, tokens = 0.0, 0.0
      for _ in range(int(self.cfg.eval_batches)):
        out = jax.device_get(
            self.trainer.eval_step(state, self.trainer.shard_batch(next(iterator))))
        loss_sum += float(out["loss"]) * float(out["tokens"])
        tokens += float(out["tokens"])
      scalars["loss"] = loss_sum / max(tokens, 1.0)
    for hook in self.job.eval_hooks:
      scalars.update({k: float(v) for k, v in hook(step, state, self.trainer).items()})
    return scalars

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
    writer = MetricsWriter(self.job.out_dir, self.total_steps, resume_step=start_step,
                           name=self.name)
    log_every, eval_every = int(self.cfg.log_every), int(self.cfg.eval_every)
    seq_len, n_devices = int(self.cfg.seq_len), len(self.mesh.devices.flat)
    base_key = jax.random.key(self.job.seed)
    pending: list[tuple[int, dict]] = []  # metrics since the last log
    n_fetched = 0  # how many of them are on the host already (checked and counted)
    last_loss, tokens_seen = None, 0.0
    window_start, window_steps = time.time(), 0
    run_start = time.time()
    saved_step = start_step
    try:
      if self.has_eval and start_step == 0:  # the curves' starting point: the initial model
        writer.write(0, self.evaluate(state, 0), kind="eval")
      for step in range(start_step, self.total_steps):
        batch = self.trainer.shard_batch(next(self.iterator))
        rng = jax.random.fold_in(base_key, step)
        try:
          state, metrics = self.trainer.train_step(state, batch, rng)
        except Exception as e:  # pylint: disable=broad-except
          if step == start_step and "RESOURCE_EXHAUSTED" in str(e):
            raise _oom_error(e, self.cfg, self.model_config, self.fit.microbatches) from e
          raise
        done = step + 1
        pending.append((done, metrics))
        if step == start_step:
          # The first step of a process compiles: the throughput window starts after it.
          jax.block_until_ready(metrics)
          window_start, window_steps = time.time(), 0
        else:
          window_steps += 1
        eval_now = self.has_eval and (
            done % eval_every == 0 or done == self.total_steps)
        log_now = done % log_every == 0 or done == self.total_steps or eval_now
        save_now = (done % int(self.cfg.checkpoint_every) == 0 or done == self.total_steps
                    or done in self.checkpointer.keep_steps)
        if log_now or save_now:
          fetched = [(s, jax.device_get(m)) for s, m in pending[n_fetched:]]
          self.check_finite(fetched)  # never checkpoint a diverged state
          tokens_seen += sum(float(m["tokens"]) for _, m in fetched)
          pending, n_fetched = pending[:n_fetched] + fetched, len(pending)
          last_loss = float(pending[-1][1]["loss"])
        if log_now:
          scalars = {"loss": last_loss, "lr": float(pending[-1][1]["lr"]),
                     "grad_norm": float(pending[-1][1]["grad_norm"])}
          if window_steps:  # None of these for a window holding only the compiling step
            jax.block_until_ready(state.step)
            elapsed = time.time() - window_start
            tokens_per_s = window_steps * int(self.cfg.batch_size) * seq_len / max(elapsed, 1e-9)
            scalars.update(tokens_per_s=tokens_per_s, step_time_s=elapsed / window_steps,
                           mfu=flops.mfu(tokens_per_s, self.model_config, seq_len, n_devices,
                                         jax.devices()[0]))
          for s, m in pending[:-1]:  # every step's loss goes into the record
            writer.write(s, {"loss": float(m["loss"]), "lr": float(m["lr"]),
                             "grad_norm": float(m["grad_norm"])})
          writer.write(done, scalars)
          if eval_now:
            evaluation = self.evaluate(state, done)
            if "loss" in evaluation:
              scalars["eval_loss"] = evaluation["loss"]
            writer.write(done, evaluation, kind="eval")
          writer.progress(done, scalars)
          pending, n_fetched = [], 0
          window_start, window_steps = time.time(), 0
        if save_now:
          self.checkpointer.save(state, self.iterator.get_state(), force=True)
          saved_step = done
        if self.job.step_hooks:
          writer.flush()
          for hook in self.job.step_hooks:
            hook(done)
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


def train(job: TrainJob) -> dict:
  """Trains (or resumes training) under job.out_dir; returns a summary.

  Summary: final_loss, steps, resumed_from, tokens (trained on in this process),
  seconds, checkpoint (the last step directory), model_config.
  """
  return _Run(job).run()
