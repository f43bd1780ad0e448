"""Building models: fresh, from parameters, or from a checkpoint of either format."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from phi_jax import checkpoint, hf_convert, hf_io
from phi_jax.config import PhiConfig
from phi_jax.model import PhiForCausalLM, abstract_model
from phi_jax.settings import setting, text
from phi_jax.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class InitSettings:
  """`config.init`: the model a run starts from (the init stage's checkpoint)."""
  model: str = setting(
      "random", "'random' (a random init of config.model, seeded by config.seed), or a "
      "transformers dir or hub repo id (e.g. 'microsoft/phi-1') to import, or a phi_jax "
      "checkpoint. On import the architecture comes from the model; the numerics and "
      "dropout fields come from config.model", check=text())
  tokenizer: str = setting(
      "data", "the tokenizer stored with the model: 'data' (the one the data stage trained "
      "or loaded: config.data.tokenizer), 'byte_level' (256 bytes + <|endoftext|>), a "
      "tokenizer.json path or model dir, or '' (the imported model's own, if any)",
      check=text())


def init_model(config: PhiConfig, seed: int = 0) -> PhiForCausalLM:
  """A freshly initialised model (initialised in one compiled program)."""
  graphdef, _ = nnx.split(abstract_model(config))
  state = jax.jit(lambda key: nnx.state(PhiForCausalLM(config, rngs=nnx.Rngs(key))))(
      jax.random.key(seed))
  return nnx.merge(graphdef, state)


def model_from_params(config: PhiConfig, params: Mapping) -> PhiForCausalLM:
  """A model holding `params` (nested dict, as `params_of` returns), without an init."""
  graphdef, state = nnx.split(abstract_model(config))
  state.replace_by_pure_dict(jax.tree.map(jnp.asarray, dict(params)))
  return nnx.merge(graphdef, state)


def params_of(model: PhiForCausalLM) -> dict:
  """The model's parameters as a nested dict of arrays (the checkpoint's `params`)."""
  return nnx.state(model, nnx.Param).to_pure_dict()


_HF_DTYPES = ("float32", "bfloat16", "float16")


def load_hf(directory: str, **overrides: Any) -> tuple[PhiConfig, dict, Tokenizer | None]:
  """Config, parameters (numpy) and tokenizer of a transformers directory."""
  config = hf_convert.config_from_hf(
      hf_io.read_json(os.path.join(directory, "config.json")),
      where=os.path.join(directory, "config.json")).replace(**overrides)
  params = hf_convert.hf_to_params(hf_io.read_state_dict(directory), config, source=directory)
  return config, params, Tokenizer.from_dir(directory)


def hf_stored_dtype(directory: str) -> str | None:
  """The dtype a transformers config.json records (`dtype`, or `torch_dtype` in older
  files) when phi_jax computes in it, else None."""
  hf = hf_io.read_json(os.path.join(directory, "config.json"))
  stored = hf.get("dtype") or hf.get("torch_dtype")
  return stored if stored in _HF_DTYPES else None


def default_compute_dtype(stored: str | None, platform: str | None = None) -> tuple[str, str]:
  """The compute dtype `from_pretrained` picks, and why.

  stored: the checkpoint's compute dtype (an Orbax checkpoint's model config, or a
    transformers config.json's `dtype`), None when it records none.
  platform: the JAX platform ('cpu', 'gpu', 'tpu'); default: jax.default_backend().

  On CPU: float32, since CPUs compute bf16/fp16 matmuls slower than fp32, and fp32
  logits equal transformers' fp32 ones (bf16 differs by ~1e-2). On an accelerator: the
  checkpoint's dtype, else bfloat16.
  """
  platform = platform or jax.default_backend()
  if platform == "cpu":
    return "float32", "float32 on CPU"
  if stored:
    return stored, f"the checkpoint's, on {platform.upper()}"
  return "bfloat16", f"checkpoint records none: bfloat16 on {platform.upper()}"


def from_pretrained(path: str, **overrides: Any) -> PhiForCausalLM:
  """Loads a model from an Orbax checkpoint, a transformers directory, or a hub repo id.

  path: an Orbax checkpoint root (its latest step is used) or step directory; a
    directory with a transformers `config.json` and weights (safetensors or
    pytorch_model.bin, sharded or not, transformers or legacy mixformer names); or
    a Hugging Face repo id such as 'microsoft/phi-1' (downloaded when online).
  overrides: PhiConfig fields to change, e.g. dtype='float32', attention='xla',
    scan_layers=False. Architecture fields must still match the stored weights.

  The compute dtype (`dtype`), unless given: float32 on CPU (faster there than bf16,
  and the logits match transformers in fp32); on a GPU or TPU the checkpoint's own (an
  Orbax checkpoint's training dtype, a transformers config.json's `dtype`), bfloat16
  when it records none. `repr(model)` says which dtype was picked and why.

  Returns the model; `model.config` is its PhiConfig and `model.tokenizer` the
  tokenizer stored with it (None when there is none).
  """
  requested = "dtype" in overrides
  if os.path.isdir(path) and checkpoint.is_checkpoint(path):
    stored = checkpoint.read_config(path)
    dtype, source = (overrides["dtype"], "requested") if requested else (
        default_compute_dtype(stored.dtype))
    config = stored.replace(**{**overrides, "dtype": dtype})
    model = model_from_params(config, checkpoint.load_params(path, config))
    model.tokenizer = checkpoint.read_tokenizer(path)
    model.dtype_source = source
    return model
  directory = hf_io.resolve_model_dir(path)
  if not hf_io.is_hf_dir(directory):
    raise FileNotFoundError(
        f"No checkpoint at {path}: it is neither an Orbax checkpoint (step directories "
        f"with '{checkpoint.PARAMS}/' and '{checkpoint.METADATA}/') nor a transformers "
        f"directory (config.json with model.safetensors or pytorch_model.bin); found "
        f"{sorted(os.listdir(directory))[:10]}")
  dtype, source = (overrides["dtype"], "requested") if requested else (
      default_compute_dtype(hf_stored_dtype(directory)))
  config, params, tokenizer = load_hf(directory, **{**overrides, "dtype": dtype})
  model = model_from_params(config, params)
  model.tokenizer = tokenizer
  model.dtype_source = source
  return model
