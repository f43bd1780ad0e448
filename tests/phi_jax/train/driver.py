"""Runs training stages of a tiny config through the recipe's runner, in this process
(the tests run it as a subprocess).

    python -m tests.phi_jax.train.driver WORKDIR STAGES '{"train.steps": 12, ...}'

Prints one JSON line per stage: {"stage": ..., "summary": ...}. The tests run it
without the 8 simulated devices of conftest: XLA_FLAGS is set by the caller. The
training data is what the data stage would build, written without TensorFlow: 50
stdlib files as phi1_filtered_code and exercises mined from stdlib as phi1_exercises,
byte-level tokenized, under WORKDIR/data/tfds; the stages read those directories by
path (no data stage ran), pretraining from a random init.
"""

import json
import sys

from configs import tiny


def tiny_config(overrides: dict):
  config = tiny.get_config()
  config.model.update(dict(vocab_size=320, d_model=64, num_layers=2, num_heads=4, mlp_dim=256,
                           rotary_dim=8, max_seq_len=64, dtype="float32"))
  config.mesh.update(dict(data=1, fsdp=-1, tensor=1))
  config.init.tokenizer = "byte_level"
  config.train.model = "random"
  for section in (config.train, config.finetune):
    section.update(dict(steps=12, batch_size=4, seq_len=64, checkpoint_every=3,
                        keep_checkpoints=10, log_every=1, eval_every=6, eval_batches=2))
    section.optimizer.update(dict(lr=3e-3, warmup_steps=2))
  for key, value in overrides.items():
    node = config
    *parents, leaf = key.split(".")
    for parent in parents:
      node = node[parent]
    node[leaf] = tuple(value) if isinstance(value, list) else value
  return config


def build_data(workdir: str, seed: int = 0) -> None:
  """The datasets the training stages read (once per workdir: reruns must see the same)."""
  # pylint: disable=g-import-not-at-top
  import os
  from data_pipeline import catalog, exercises, records, sources, token_dataset
  from phi_jax import tokenizer as tokenizer_lib
  data_dir = catalog.tfds_dir(workdir)
  if catalog.built_version_dir(data_dir, catalog.EXERCISES):
    return
  curated = os.path.join(workdir, "data", "curated")
  code = list(sources.installed_python(50, seed, which="stdlib"))
  mined = list(exercises.mine_exercises(sources.installed_python(150, seed, which="stdlib")))
  records.write_records(code, os.path.join(curated, "code.jsonl"))
  records.write_records(mined, os.path.join(curated, "exercises.jsonl"))
  tok = tokenizer_lib.byte_level()
  token_dataset.write_jsonl_dataset(catalog.FILTERED_CODE, [os.path.join(curated, "code.jsonl")],
                                    tok, data_dir, validation_fraction=0.1)
  token_dataset.write_jsonl_dataset(catalog.EXERCISES, [os.path.join(curated, "exercises.jsonl")],
                                    tok, data_dir, validation_fraction=0.1)


def main(argv):
  # Nothing here needs torch; blocking it stops tensorboardX importing it (~3 s).
  sys.modules["torch"] = None
  workdir, stages = argv[1], argv[2].split(",")
  overrides = json.loads(argv[3]) if len(argv) > 3 else {}
  # pylint: disable=g-import-not-at-top
  from data_pipeline import catalog
  from recipe import graph, runner
  config = tiny_config(overrides)
  build_data(workdir, int(config.seed))
  data_dir = catalog.tfds_dir(workdir)
  config.train.data = (catalog.built_version_dir(data_dir, catalog.FILTERED_CODE),)
  config.finetune.data = (catalog.built_version_dir(data_dir, catalog.EXERCISES),)
  ctx = runner.Context(config, workdir, graph.build())
  for name, marker in zip(stages, runner.execute(ctx, runner.make_plan(ctx, stages))):
    print(json.dumps({"stage": name, "summary": marker["summary"]}), flush=True)


if __name__ == "__main__":
  main(sys.argv)
