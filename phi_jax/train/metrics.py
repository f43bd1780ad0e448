"""Training metrics: TensorBoard event files, metrics.jsonl and a console progress line.

    <stage_dir>/tensorboard/   tensorboardX event files (train/*, eval/* scalars)
    <stage_dir>/metrics.jsonl  one JSON object per logged step: the loss curve, resumable

Only process 0 writes. On resume, `MetricsWriter(..., resume_step=N)` drops the records
after step N (written before a crash, then recomputed), so metrics.jsonl always reads
as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax

from phi_jax import atomic

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(stage_dir: str) -> list[dict]:
  """The records of <stage_dir>/metrics.jsonl (a torn last line is ignored)."""
  path = os.path.join(stage_dir, METRICS_FILE)
  if not os.path.isfile(path):
    return []
  rows = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        break
  return rows


def _format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class MetricsWriter:
  """Writes scalars to TensorBoard and metrics.jsonl, and prints progress lines.

  stage_dir: where tensorboard/ and metrics.jsonl go. total_steps: for the progress
  line's step/total and ETA. resume_step: the step training restarts from (records
  after it are dropped); 0 for a fresh run (any old records are dropped).
  """

  def __init__(self, stage_dir: str, total_steps: int, *, resume_step: int = 0,
               name: str = "train", enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.total_steps = total_steps
    self.name = name
    self.path = os.path.join(stage_dir, METRICS_FILE)
    self._start_time, self._start_step = time.time(), resume_step
    self._tb = None
    if not self.enabled:
      return
    kept = [row for row in read_metrics(stage_dir) if row.get("step", 0) <= resume_step]
    atomic.write_jsonl(kept, self.path)
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    # purge_step: TensorBoard hides the events after the resume point of an earlier run.
    self._tb = SummaryWriter(os.path.join(stage_dir, TENSORBOARD_DIR),
                             purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, scalars: dict[str, Any], kind: str = "train") -> None:
    """Records `scalars` (None values skipped) of `step` under `kind` (train / eval)."""
    if not self.enabled:
      return
    values = {k: float(v) for k, v in scalars.items() if v is not None}
    for key, value in values.items():
      self._tb.add_scalar(f"{kind}/{key}", value, step)
    record = {"step": int(step), "kind": kind, **values}
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(record) + "\n")

  def progress(self, step: int, scalars: dict[str, Any]) -> None:
    """Prints `[name] step s/total  loss ..  lr ..  tok/s ..  mfu ..  ETA ..`."""
    if not self.enabled:
      return
    parts = [f"[{self.name}] step {step}/{self.total_steps}"]
    for key, fmt in (("loss", "loss {:.4f}"), ("eval_loss", "eval {:.4f}"),
                     ("lr", "lr {:.3g}"), ("grad_norm", "gnorm {:.3g}"),
                     ("tokens_per_s", "{:,.0f} tok/s"), ("mfu", "mfu {:.1%}")):
      value = scalars.get(key)
      if value is not None and math.isfinite(float(value)):
        parts.append(fmt.format(float(value)))
    done = step - self._start_step
    if 0 < done and step < self.total_steps:
      per_step = (time.time() - self._start_time) / done
      parts.append(f"ETA {_format_duration(per_step * (self.total_steps - step))}")
    print("  ".join(parts), flush=True)

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None
