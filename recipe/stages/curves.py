"""Stage `curves`: the measurements training takes along the way, as the current
settings would take them.

Pretraining and finetuning measure the held-out loss and the benchmarks' bits per byte
every `eval_every` steps (metrics.jsonl) and record the settings they measured with
(their marker's `measurements`). Those settings are measurements, not the model: they
never make a finished training rerun (phi_jax/settings.py, MEASUREMENT). This node
makes WORKDIR/curves/<stage>.json, what the report draws:

  - settings unchanged: the points measured during training, as they are;
  - bits-per-byte settings changed (config.eval.bpb_*, the benchmark files): bits per
    byte re-measured at the training stage's kept checkpoints with the current
    settings (the points measured during training with other settings are dropped);
    the held-out loss points stay, measured as recorded;
  - held-out loss settings changed (eval_every, eval_batches): the points measured
    during training stay, labelled with the settings they were measured with (their
    steps' parameters are gone; rerun the training to measure at other steps).

It is cheap: a rerun of this node reads kept checkpoints; nothing is trained.
"""

from __future__ import annotations

import json
import os

from eval import bpb as eval_bpb
from phi_jax import atomic, checkpoint, hosts
from phi_jax import bpb as bpb_lib
from phi_jax import settings as settings_lib
from phi_jax.train.metrics import read_metrics
from recipe.runner import Context, Node
from recipe.stages import evaluate as eval_stage
from recipe.stages import training

NAME = "curves"
SECTIONS = {"pretrain": "train", "finetune": "finetune"}


def curve_path(workdir: str, stage: str) -> str:
  return os.path.join(workdir, NAME, f"{stage}.json")


def _stages(ctx: Context) -> list[str]:
  return [stage for stage in SECTIONS if ctx.complete_or_selected(stage)]


def _reads(ctx: Context) -> dict:
  """The measurement settings of each training stage of the run, and the bits-per-byte
  settings they name."""
  s = ctx.settings
  # what bits per byte reads of config.eval is in each stage's `measurements` (resolved:
  # the benchmarks it scores, their files, lengths and prompt format)
  return {"eval": settings_lib.Part(s.eval, ()),
          "measurements": {stage: training.measurement_settings(s.sections[section], s.eval)
                           for stage, section in SECTIONS.items() if stage in _stages(ctx)}}


def _same(a, b) -> bool:
  return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _remeasure_bpb(eval_settings, stage_dir: str) -> dict[int, dict[str, float]]:
  """{step: {'bpb_<benchmark>': value}} at every kept checkpoint of a training stage."""
  import phi_jax  # pylint: disable=g-import-not-at-top
  root = os.path.join(stage_dir, "checkpoints")
  points = {}
  for step in checkpoint.steps(root):
    model = phi_jax.from_pretrained(os.path.join(root, str(step)))
    sets = eval_stage.bpb_sets(eval_settings, model.tokenizer, model.config.max_seq_len,
                               where=NAME)
    points[step] = eval_bpb.evaluate_bpb(bpb_lib.model_nll_sums(model), sets,
                                         eval_settings.batch_size)
  return points


def curve(ctx: Context, stage: str, want: dict, eval_settings) -> dict:
  """The measurements of `stage` as `want` (its current measurement settings) says."""
  marker = ctx.marker(stage) or {}
  recorded = (marker.get("summary") or {}).get("measurements")
  evals = [r for r in read_metrics(ctx.node_dir(stage)) if r.get("kind") == "eval"]
  out = {"stage": stage, "measurements": want, "recorded": recorded, "notes": []}
  if recorded is not None and _same(recorded.get("bpb"), want["bpb"]):
    points = [dict(r) for r in evals]
    out["bpb_source"] = "measured during training"
  else:
    points = [{k: v for k, v in r.items() if not k.startswith("bpb_")} for r in evals]
    remeasured = _remeasure_bpb(eval_settings, ctx.node_dir(stage))
    by_step = {p["step"]: p for p in points}
    for step, scores in remeasured.items():
      by_step.setdefault(step, {"step": step, "kind": "eval"}).update(scores)
    points = [by_step[step] for step in sorted(by_step)]
    out["bpb_source"] = (f"re-measured at the kept checkpoints (steps "
                         f"{', '.join(map(str, sorted(remeasured))) or 'none'}) with the "
                         f"current settings")
    out["notes"].append(f"bits per byte re-measured: training measured it with "
                        f"{json.dumps((recorded or {}).get('bpb'), sort_keys=True)}")
  if recorded is not None and not _same(
      {k: recorded.get(k) for k in ("eval_every", "eval_batches")},
      {k: want[k] for k in ("eval_every", "eval_batches")}):
    out["notes"].append(
        f"held-out loss measured during training every {recorded.get('eval_every')} steps "
        f"on {recorded.get('eval_batches')} batches (now eval_every={want['eval_every']}, "
        f"eval_batches={want['eval_batches']}: rerun {stage} to measure so)")
  out["points"] = points
  return out


def run(ctx: Context, reads: dict) -> dict:
  eval_settings = reads["eval"].value
  summary = {}
  for stage, want in reads["measurements"].items():
    result = curve(ctx, stage, want, eval_settings)
    if hosts.index() == 0:  # every host measures (checkpoint loads are collective); one writes
      atomic.write_json(result, curve_path(ctx.workdir, stage))
    for note in result["notes"]:
      print(f"[{NAME}] {stage}: {note}", flush=True)
    summary[stage] = {"points": len(result["points"]), "bpb_source": result["bpb_source"]}
  return summary


NODES = (Node(name=NAME, run=run, reads=_reads, after=_stages,
              doc="training's measurements as the current settings take them: curves/"),)
