"""Stage `init`: the starting model, random or imported, as an Orbax checkpoint.

Writes WORKDIR/init/checkpoints/0/ with the parameters, the model config and the
tokenizer. With config.init.from_hf set, the weights and architecture come from a
transformers directory or hub repo id; config.model then only sets the numerics.
"""

from __future__ import annotations

import os

import jax

from data_pipeline import catalog
from phi_jax import checkpoint, hf_io, pretrained, tokenizer as tokenizer_lib
from phi_jax.config import PhiConfig
from phi_jax.model import count_params
from phi_jax.stages.base import Context, Stage, StageError

# PhiConfig fields an imported model takes from config.model (not from its config.json).
RUNTIME_FIELDS = ("attention", "attention_block_q", "attention_block_kv", "dtype",
                  "param_dtype", "scan_layers", "remat", "embed_dropout", "attention_dropout",
                  "residual_dropout")


DATA_TOKENIZER = "data"  # config.init.tokenizer: the tokenizer the data stage built


def load_tokenizer(spec: str, model_dir: str | None,
                   workdir: str | None = None) -> tokenizer_lib.Tokenizer | None:
  """config.init.tokenizer: 'data' (the data stage's, under `workdir`), '' (the imported
  model's own in `model_dir`, if any), or any spec data_pipeline.tokenizer.load_tokenizer
  takes: 'byte_level', a tokenizer.json, a directory, a hub repo id."""
  from data_pipeline import tokenizer as tokenizers  # pylint: disable=g-import-not-at-top
  if spec == DATA_TOKENIZER:
    directory = catalog.tokenizer_dir(workdir or ".")
    tokenizer = tokenizer_lib.Tokenizer.from_dir(directory)
    if tokenizer is None:
      raise StageError(f"config.init.tokenizer = 'data': no tokenizer in {directory}; run "
                       f"the data stage first (--stages=data,...) or name a tokenizer")
    return tokenizer
  if not spec:
    return None if model_dir is None else tokenizer_lib.Tokenizer.from_dir(model_dir)
  try:
    return tokenizers.load_tokenizer(spec)
  except (OSError, ValueError) as e:
    raise StageError(f"config.init.tokenizer: {e}") from None


class InitStage(Stage):
  name = "init"
  config_sections = ("model", "init", "seed")
  produces_checkpoint = True

  def inputs(self, ctx: Context) -> dict:
    inputs = super().inputs(ctx)
    if ctx.config.init.tokenizer == DATA_TOKENIZER:  # the data stage's tokenizer
      marker = ctx.marker(catalog.DATA_STAGE)
      inputs["data"] = marker["fingerprint"] if marker else None
    return inputs

  def run(self, ctx: Context) -> dict:
    model_config = PhiConfig.from_mapping(ctx.config.model)
    from_hf = ctx.config.init.from_hf
    if from_hf:
      directory = hf_io.resolve_model_dir(from_hf)
      runtime = {f: getattr(model_config, f) for f in RUNTIME_FIELDS}
      model_config, params, _ = pretrained.load_hf(directory, **runtime)
    else:
      directory = None
      params = pretrained.params_of(pretrained.init_model(model_config, ctx.config.seed))
    tokenizer = load_tokenizer(ctx.config.init.tokenizer, directory, ctx.workdir)
    if tokenizer is not None and tokenizer.vocab_size > model_config.vocab_size:
      raise StageError(f"the tokenizer has {tokenizer.vocab_size} tokens but "
                       f"config.model.vocab_size is {model_config.vocab_size}")
    root = os.path.join(ctx.stage_dir(self.name), "checkpoints")
    if checkpoint.steps(root):  # a rerun: replace the previous start
      import shutil  # pylint: disable=g-import-not-at-top
      shutil.rmtree(root)
    step_dir = checkpoint.save(root, 0, params, model_config, tokenizer=tokenizer,
                               source=f"transformers:{from_hf}" if from_hf else "random_init")
    n_params = count_params(model_config)
    print(f"[init] {'imported ' + from_hf if from_hf else 'random init'}: "
          f"{n_params:,} parameters -> {step_dir}", flush=True)
    jax.clear_caches()
    return {"checkpoint": step_dir, "params": n_params,
            "tokenizer_vocab": tokenizer.vocab_size if tokenizer else None}
