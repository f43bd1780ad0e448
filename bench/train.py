"""Benchmark: tokens/s and MFU of phi_jax's train step for a config and mesh.

    python bench/train.py [--config configs/tiny.py] [--batch 8] [--seq 128] \
        [--microbatches 1] [--remat none] [--steps 10] [--mesh 1,-1,1] \
        [--dropout config|off|both] [--no_record]

Times `Trainer.train_step` (one jitted step, donated state, bf16/fp32 compute as the
config says) on random tokens after one warm-up (compile) step, and reports tokens/s,
step time and MFU (6N + 12·L·T·E FLOPs per token against the device's bf16 peak; none
on CPU). On a GPU/TPU host run it for phi-1 at seq 2048 with the largest batch that fits.

--dropout: 'config' trains with the config's dropout (phi-1: attention and residual
0.1, the paper's); 'off' with none (the dropout-free MFU that published MFU figures
usually quote); 'both' measures the config's, then without dropout in the same process
and with the same remat and micro-batches (dropout off needs no more memory), one row
each. The row's `dropout` column says which.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from bench import record  # noqa: E402  pylint: disable=g-import-not-at-top

SECTION = "## bench/train.py: train step throughput and MFU"
COLUMNS = ("date", "machine", "jax", "config", "params", "mesh", "batch", "seq", "microbatches",
           "remat", "dtype", "dropout", "step s", "tokens/s", "MFU")
INTRO = """
One jitted train step (AdamW, donated state) on random tokens, median over `steps`
timed steps after one warm-up step. MFU = tokens/s x FLOPs per token (6N + 12·L·T·E)
/ (devices x bf16 peak); '-' where the device's peak is unknown (CPU). `dropout`: the
rates trained with (attn: attention probabilities, resid: residual branches, embed:
embeddings), 'off' for none: MFU without dropout is the figure usually quoted.

""" + record.table_header(COLUMNS)


def load_config(path: str):
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  module = config_flags.config_flags._LoadConfigModule("config", path)  # pylint: disable=protected-access
  return module.get_config()


DROPOUT_FIELDS = (("embed", "embed_dropout"), ("attn", "attention_dropout"),
                  ("resid", "residual_dropout"))


def dropout_label(model_config) -> str:
  """'attn 0.1, resid 0.1'-style: the nonzero dropout rates, or 'off'."""
  rates = [f"{short} {getattr(model_config, field):g}" for short, field in DROPOUT_FIELDS
           if getattr(model_config, field) > 0]
  return ", ".join(rates) or "off"


def without_dropout(model_config):
  return model_config.replace(**{field: 0.0 for _, field in DROPOUT_FIELDS})


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=os.path.join(REPO_ROOT, "configs", "tiny.py"))
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--microbatches", type=int, default=1,
                      help="0: the fewest whose step fits the device (phi_jax.train.fit)")
  parser.add_argument("--remat", default=None, help="override config.model.remat ('auto': "
                      "the lightest that fits, phi_jax.train.fit)")
  parser.add_argument("--dtype", default=None, help="override config.model.dtype")
  parser.add_argument("--mesh", default=None, help="data,fsdp,tensor (default: config.mesh)")
  parser.add_argument("--dropout", default="config", choices=("config", "off", "both"),
                      help="the config's dropout, none (dropout-free MFU), or both (two rows)")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--no_record", action="store_true")
  args = parser.parse_args(argv)

  import jax  # pylint: disable=g-import-not-at-top

  from phi_jax.config import PhiConfig  # pylint: disable=g-import-not-at-top
  from phi_jax.model import count_params  # pylint: disable=g-import-not-at-top
  from phi_jax.train import fit as fit_lib, flops, mesh as mesh_lib  # pylint: disable=g-import-not-at-top

  config = load_config(args.config)
  if args.remat:
    config.model.remat = args.remat
  if args.dtype:
    config.model.dtype = args.dtype
  if args.mesh:
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = map(int, args.mesh.split(","))
  config.train.update(dict(batch_size=args.batch, seq_len=args.seq,
                           microbatches=args.microbatches))
  model_config = PhiConfig.from_mapping(config.model)
  if args.dropout == "off":
    model_config = without_dropout(model_config)
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = mesh_lib.parse_rules(config.mesh.rules)
  fit = fit_lib.resolve(model_config, config.train, mesh, rules)  # as run.py chooses
  print(fit.describe())
  model_config = model_config.replace(remat=fit.remat)
  args.microbatches = fit.microbatches
  variants = [model_config] + ([without_dropout(model_config)] if args.dropout == "both" else [])
  device = jax.devices()[0]
  machine = (f"{len(jax.devices())}x {device.device_kind}" if device.platform != "cpu"
             else record.cpu_description())
  mesh_shape = "x".join(str(mesh.shape[a]) for a in mesh_lib.MESH_AXES)
  name = os.path.splitext(os.path.basename(args.config))[0]
  for variant in variants:
    step_s, tokens_s, compile_s = measure(variant, config.train, mesh, rules,
                                          fit.microbatches, args)
    mfu = flops.mfu(tokens_s, variant, args.seq, len(jax.devices()), device)
    dropout = dropout_label(variant)
    print(f"\n{name}: {count_params(variant):,} params, mesh {mesh_shape}, batch "
          f"{args.batch} x {args.seq}, microbatches {args.microbatches}, remat "
          f"{variant.remat}, {variant.dtype}, dropout {dropout}; compile + first step "
          f"{compile_s:.1f}s")
    print(f"step {step_s * 1000:.1f} ms   {tokens_s:,.0f} tokens/s   MFU "
          f"{'-' if mfu is None else f'{100 * mfu:.1f}%'}   (dropout {dropout})")
    if not args.no_record:
      row = record.markdown_row([
          record.now(), machine, jax.__version__, name, f"{count_params(variant):,}",
          mesh_shape, args.batch, args.seq, args.microbatches, variant.remat,
          variant.dtype, dropout, f"{step_s:.4f}", f"{tokens_s:,.0f}",
          "-" if mfu is None else f"{100 * mfu:.1f}%"])
      record.append_row(SECTION, INTRO, row)
      print(f"\nappended to {record.BENCHMARKS_FILE}:\n{row}")


def measure(model_config, train_cfg, mesh, rules, microbatches: int,
            args) -> tuple[float, float, float]:
  """(median step seconds, tokens/s, compile + first step seconds) of one model config
  (args: --batch, --seq, --steps)."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  from phi_jax.train.step import Trainer  # pylint: disable=g-import-not-at-top

  trainer = Trainer(model_config, train_cfg, mesh, rules,
                    total_steps=args.steps + train_cfg.optimizer.warmup_steps + 1,
                    microbatches=microbatches)
  state = trainer.init_state(0)
  rng = np.random.default_rng(0)

  def batch():
    tokens = rng.integers(0, model_config.vocab_size, (args.batch, args.seq), dtype=np.int32)
    return trainer.shard_batch({"tokens": tokens, "loss_mask": np.ones_like(tokens)})

  key = jax.random.key(0)
  start = time.perf_counter()
  state, metrics = trainer.train_step(state, batch(), key)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  seconds = []
  for _ in range(args.steps):
    b = batch()
    start = time.perf_counter()
    state, metrics = trainer.train_step(state, b, key)
    jax.block_until_ready(metrics)
    seconds.append(time.perf_counter() - start)
  step_s = statistics.median(seconds)
  return step_s, args.batch * args.seq / step_s, compile_s


if __name__ == "__main__":
  main()
