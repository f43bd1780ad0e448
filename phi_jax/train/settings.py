"""The settings of one training run (`config.train` for pretraining, `config.finetune`
for finetuning): length, batches, optimizer, checkpoints and data, as typed schemas.

`TrainSettings()` holds the paper's pretraining values (§2.3); `FINETUNE` its finetuning
values. The run configs (configs/base.py) are built from these; phi_jax/settings.py has
the kind rule (operational fields never make a finished training rerun).
"""

from __future__ import annotations

import dataclasses

from phi_jax.settings import (MEASUREMENT, OPERATIONAL, SettingsError, at_least, boolean,
                              check_all, each, in_range, number_at_least, one_of, positive,
                              setting, text)

HOST_SHARDING = ("documents", "rows")
ON_CORRUPT = ("fail", "previous")


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
  """AdamW with linear warmup and linear decay."""
  lr: float = setting(1e-3, "peak learning rate (after warmup)", check=positive())
  warmup_steps: int = setting(750, "linear warmup from 0 to lr (below steps)",
                              check=at_least(0))
  end_lr: float = setting(
      0.0, "learning rate at the last step (linear decay from lr). A choice: the paper "
      "says 'linear decay' without a floor; 0 is the usual reading", check=number_at_least(0))
  weight_decay: float = setting(
      0.1, "AdamW decoupled weight decay (not on biases/LayerNorm): the paper's 0.1 for "
      "pretraining and 0.01 for finetuning", check=number_at_least(0))
  b1: float = setting(0.9, "Adam beta1. A choice: the paper does not state it",
                      check=in_range(0, 1, high_open=True))
  b2: float = setting(
      0.98, "Adam beta2. A choice: below the 0.999 default is the common choice for "
      "stable large-batch LM pretraining", check=in_range(0, 1, high_open=True))
  eps: float = setting(1e-7, "Adam epsilon. A choice: small, so Adam's step size stays intact",
                       check=positive())
  grad_clip: float = setting(
      1.0, "global gradient-norm clipping (0 = off). A choice: the paper does not say; 1.0 "
      "is the common default for transformer LMs at this scale", check=number_at_least(0))


@dataclasses.dataclass(frozen=True)
class ContextSettings:
  """Longer context (docs/long_context.md): given to the starting model before training
  (phi_jax.config.with_context); 0 / '' keep the model's own."""
  max_seq_len: int = setting(0, "the context length to train for (>= seq_len; 0 = the "
                             "model's)", check=at_least(0))
  rope_base: float = setting(0.0, "a larger rotary base (Code Llama: 1e6); 0 = the model's",
                             check=number_at_least(0))
  rope_scaling_type: str = setting("", "'linear': position interpolation; 'none': no "
                                   "scaling; '' = the model's", check=one_of("", "none", "linear"))
  rope_scaling_factor: float = setting(0.0, "'linear': positions are divided by this "
                                       "(new/old); 0 = the model's", check=number_at_least(0))


_DATASET_NAMES = ("phi1_filtered_code, phi1_textbooks, phi1_exercises, phi1_mined_exercises, "
                  "phi1_code_textbook, phi1_code_exercises")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """One training run (the defaults: the paper's pretraining, §2.3)."""
  model: str = setting(
      "init", "the model training starts from (recipe/models.py): 'random' (config.model), "
      "'init' (the init stage's), '<stage>' or '<stage>:<step>' of this run (e.g. "
      "'pretrain:24000'), a phi_jax checkpoint, a transformers dir or a hub repo id",
      check=text())
  steps: int = setting(36000, "optimizer steps", check=at_least(1))
  batch_size: int = setting(1024, "sequences per optimizer step (global, over all hosts)",
                            check=at_least(1))
  seq_len: int = setting(2048, "tokens per sequence (documents joined with <|endoftext|>, "
                         "sliced)", check=at_least(1))
  microbatches: int = setting(
      1, "gradient accumulation: batch_size is split into this many; 0 = auto: the fewest "
      "whose step fits the devices' memory (phi_jax/train/fit.py), chosen before training",
      kind=OPERATIONAL, check=at_least(0))
  memory_headroom: float = setting(
      0.1, "the share of each device's memory limit the step's compiled peak must leave "
      "free (fragmentation, library workspaces, prefetched batches): the budget microbatches "
      "0 / model.remat 'auto' choose within and given values are checked against",
      kind=OPERATIONAL, check=in_range(0, 1, high_open=True))
  device_memory_gib: float = setting(
      0.0, "the memory per device the step must fit in (GiB); 0 = the device's allocator "
      "limit (GPU, TPU; none on CPU, where nothing is checked)", kind=OPERATIONAL,
      check=number_at_least(0))
  loss_chunk: int = setting(
      256, "sequence positions whose lm_head logits and cross entropy are computed at a "
      "time (phi_jax/train/loss.py), forward and backward, so the step never holds the "
      "whole [batch, seq_len, vocab] fp32 logits; 0 = all at once. Equal to the whole "
      "computation up to the order of floating-point sums", kind=OPERATIONAL,
      check=at_least(0))
  checkpoint_every: int = setting(1000, "save an Orbax checkpoint every N steps (and at the "
                                  "end)", kind=OPERATIONAL, check=at_least(1))
  keep_checkpoints: int = setting(3, "keep the last K checkpoints", kind=OPERATIONAL,
                                  check=at_least(1))
  keep_steps: tuple[int, ...] = setting(
      (), "steps whose checkpoints are kept for good besides the last K (each saved when "
      "reached): phi-1-base is pretraining's step 24000", kind=OPERATIONAL,
      check=each(at_least(1)))
  log_every: int = setting(50, "log metrics every N steps (TensorBoard + console)",
                           kind=OPERATIONAL, check=at_least(1))
  eval_every: int = setting(
      1000, "held-out loss and benchmark bits per byte every N steps (0 = never): a "
      "measurement along the way, recorded with its settings (docs/architecture.md)",
      kind=MEASUREMENT, check=at_least(0))
  eval_batches: int = setting(8, "batches of the held-out split per evaluation",
                              kind=MEASUREMENT, check=at_least(1))
  data: tuple[str, ...] = setting(
      ("phi1_code_textbook",), "what to train on: dataset or mixture names built by the "
      f"data stage ({_DATASET_NAMES}) or paths of built dataset directories",
      check=each(text(), non_empty=True))
  loss_on_solution_only: bool = setting(
      False, "exercises: the loss counts only the solution tokens (and the closing "
      "<|endoftext|>), not the prompt. False = the paper's plain next-token loss",
      check=boolean())
  segment_ids: bool = setting(
      False, "packed sequences: keep documents from attending to each other (segment ids "
      "and per-document positions); False = the paper's plain concatenation", check=boolean())
  loader_workers: int = setting(0, "grain worker processes reading the data (0 = in-process)",
                                kind=OPERATIONAL, check=at_least(0))
  on_corrupt_checkpoint: str = setting(
      "fail", "resuming when the latest checkpoint cannot be read: 'fail' (stop, naming the "
      "step, the item and the next older complete step) or 'previous' (resume from it)",
      kind=OPERATIONAL, check=one_of(*ON_CORRUPT))
  host_sharding: str = setting(
      "documents", "several hosts: 'documents' = each reads its share of the documents "
      "(batches depend on the host count); 'rows' = each reads all and keeps its rows of the "
      "global batch (the one-host run's batches). docs/multihost.md",
      check=one_of(*HOST_SHARDING))
  context: ContextSettings = setting(doc="longer context", factory=ContextSettings)
  optimizer: OptimizerSettings = setting(doc="the optimizer", factory=OptimizerSettings)

  def consistent(self, where: str) -> None:
    """Cross-field rules (ranges are each field's own)."""
    if not self.optimizer.warmup_steps < self.steps:
      raise SettingsError(f"{where}.optimizer.warmup_steps = {self.optimizer.warmup_steps}: "
                          f"must be below {where}.steps ({self.steps})")
    if self.microbatches and self.batch_size % self.microbatches:
      raise SettingsError(f"{where}.batch_size = {self.batch_size}: must be a multiple of "
                          f"{where}.microbatches ({self.microbatches})")
    if self.optimizer.end_lr > self.optimizer.lr:
      raise SettingsError(f"{where}.optimizer.end_lr = {self.optimizer.end_lr}: must be in "
                          f"[0, {where}.optimizer.lr ({self.optimizer.lr})]")

  def kept_steps(self) -> set[int]:
    """The steps the run leaves on disk: keep_steps, and the last keep_checkpoints of its
    saves (every checkpoint_every steps and the last step)."""
    kept = {s for s in self.keep_steps if s <= self.steps}
    saves = sorted(set(range(self.checkpoint_every, self.steps + 1, self.checkpoint_every))
                   | {self.steps} | kept)
    return kept | set(saves[-self.keep_checkpoints:])


# The paper's finetuning (§2.3): batch 256, lr 1e-4, warmup 50, 6k steps, weight decay
# 0.01, from the pretrained model on CodeExercises. loss_on_solution_only=True is an
# option the paper did not use (configs/phi1.py sets the paper's False): it spends the
# small budgets of the CPU configs on the solutions.
FINETUNE = dataclasses.replace(
    TrainSettings(), model="pretrain", steps=6000, batch_size=256,
    data=("phi1_code_exercises",), loss_on_solution_only=True,
    optimizer=OptimizerSettings(lr=1e-4, warmup_steps=50, weight_decay=0.01))


def train_settings(*, steps: int, batch_size: int, lr: float, warmup_steps: int,
                   weight_decay: float = 0.1, **changes) -> TrainSettings:
  """A training run's settings from its length, batch and schedule (the other fields:
  TrainSettings' defaults, or `changes`), checked like a config section."""
  optimizer = dataclasses.replace(OptimizerSettings(), lr=lr, warmup_steps=warmup_steps,
                                  weight_decay=weight_decay)
  settings = dataclasses.replace(TrainSettings(), steps=steps, batch_size=batch_size,
                                 optimizer=optimizer, **changes)
  return check_all(settings, "train.")
