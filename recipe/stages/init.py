"""Stage `init`: the starting model, random or imported, as an Orbax checkpoint.

Writes WORKDIR/init/checkpoints/0/ with the parameters, the model config and the
tokenizer. `config.init.model` is 'random' (a random init of config.model) or a model
to import: a transformers directory, a hub repo id or a phi_jax checkpoint, whose
architecture and weights are kept while config.model sets the numerics and dropout.
"""

from __future__ import annotations

import os
import shutil

import jax

from data_pipeline import catalog
from data_pipeline import tokenizer as tokenizers
from phi_jax import checkpoint, hf_io, pretrained
from phi_jax import settings as settings_lib
from phi_jax import tokenizer as tokenizer_lib
from phi_jax.config import PhiConfig
from phi_jax.model import count_params
from recipe import models
from recipe.runner import Context, Node, StageError

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


def runtime_fields(model: PhiConfig) -> dict:
  return {f: getattr(model, f) for f in RUNTIME_FIELDS}


def start_reads(ctx: Context, ref: models.ModelRef) -> dict:
  """What a node starting from `ref` reads of config.model and config.init: all of
  config.model for a random start, its numerics and dropout (RUNTIME_FIELDS) otherwise;
  config.init.tokenizer where the starting model may lack one."""
  s = ctx.settings
  if ref.is_random:
    return {"model": s.model, "init.tokenizer": s.init.tokenizer}
  reads = {"model": settings_lib.Part(s.model, RUNTIME_FIELDS)}
  if ref.node is None and not (os.path.isdir(ref.spec) and checkpoint.is_checkpoint(ref.spec)):
    reads["init.tokenizer"] = s.init.tokenizer  # a transformers model without a tokenizer
  return reads


def load_start(ctx: Context, ref: models.ModelRef, field: str, *, model,
               init_tokenizer: str | None):
  """(model config, tokenizer, params loader) of a starting model.

  'random': `model` and `init_tokenizer`, loader None (random init). A phi_jax
  checkpoint: its architecture and tokenizer. A transformers dir or hub id: its
  architecture and tokenizer (`init_tokenizer` when it has none). Both with `model`'s
  numerics and dropout (RUNTIME_FIELDS). `model` is a PhiConfig or a Part of one. The
  loader takes optional target shardings: a checkpoint is restored straight into them
  (each host reads its own shards); an imported model's parameters are whole on every
  host.
  """
  model = model.value if isinstance(model, settings_lib.Part) else model
  if ref.is_random:
    return model, load_tokenizer(init_tokenizer, None, ctx.workdir), None
  path = ref.spec
  if os.path.isdir(path) and checkpoint.is_checkpoint(path):
    model_config = checkpoint.read_config(path).replace(**runtime_fields(model))
    tokenizer = checkpoint.read_tokenizer(path)
    return model_config, tokenizer, lambda shardings=None: checkpoint.load_params(
        path, model_config, shardings)
  if ref.node is not None:
    raise StageError(f"{field}: {path} holds no complete checkpoint of the {ref.node} stage"
                     + (f" at step {ref.step}" if ref.step is not None else ""))
  try:
    directory = hf_io.resolve_model_dir(path)
  except Exception as e:  # pylint: disable=broad-except
    raise StageError(f"{field} = {path!r}: not a phi_jax checkpoint, and not a transformers "
                     f"directory or reachable hub repo id ({e})") from e
  if not hf_io.is_hf_dir(directory):
    raise StageError(f"{field} = {path!r}: neither a phi_jax checkpoint nor a transformers "
                     f"directory")
  model_config, params, tokenizer = pretrained.load_hf(directory, **runtime_fields(model))
  if tokenizer is None and init_tokenizer:
    tokenizer = load_tokenizer(init_tokenizer, None, ctx.workdir)
  return model_config, tokenizer, lambda shardings=None: params


def _ref(ctx: Context) -> models.ModelRef:
  return models.resolve(ctx, ctx.settings.init.model, "config.init.model", allow_random=True,
                        before="init")


def run(ctx: Context, reads: dict) -> dict:
  ref = reads["start"]
  tokenizer_spec = reads["init.tokenizer"]
  model_config, tokenizer, load_params = load_start(ctx, ref, "config.init.model",
                                                    model=reads["model"],
                                                    init_tokenizer=tokenizer_spec)
  if ref.is_random:
    params = pretrained.params_of(pretrained.init_model(model_config, reads["seed"]))
  else:
    params = load_params()
    if tokenizer_spec:  # '' keeps the imported model's own tokenizer
      tokenizer = load_tokenizer(tokenizer_spec, None, ctx.workdir)
  if tokenizer is not None and tokenizer.vocab_size > model_config.vocab_size:
    raise StageError(f"the tokenizer has {tokenizer.vocab_size} tokens but the model's "
                     f"vocab_size is {model_config.vocab_size} (config.model.vocab_size)")
  root = os.path.join(ctx.node_dir("init"), "checkpoints")
  if checkpoint.steps(root):  # output of an interrupted run: replaced
    shutil.rmtree(root)
  source = "random_init" if ref.is_random else f"import:{ref.spec}"
  step_dir = checkpoint.save(root, 0, params, model_config, tokenizer=tokenizer, source=source)
  n_params = count_params(model_config)
  print(f"[init] {'random init' if ref.is_random else 'imported ' + ref.spec}: "
        f"{n_params:,} parameters -> {step_dir}", flush=True)
  jax.clear_caches()
  return {"checkpoint": step_dir, "params": n_params,
          "tokenizer_vocab": tokenizer.vocab_size if tokenizer else None}


def _after(ctx: Context) -> list[str]:
  after = models.upstream_of(ctx, ctx.settings.init.model, "config.init.model",
                             allow_random=True, before="init")
  if ctx.settings.init.tokenizer == DATA_TOKENIZER:
    after.append("tokenizer")
  return after


def _reads(ctx: Context) -> dict:
  ref = _ref(ctx)
  return {"start": ref, **start_reads(ctx, ref), "init.tokenizer": ctx.settings.init.tokenizer,
          **({"seed": ctx.settings.seed} if ref.is_random else {"seed": None})}


NODES = (Node(name="init", run=run, doc="the starting model: init/checkpoints/0",
              reads=_reads, after=_after, produces_model=True),)
