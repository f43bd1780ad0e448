"""Convert between transformers directories and phi_jax Orbax checkpoints.

    python -m phi_jax.convert hf-to-orbax --hf_dir DIR_OR_REPO_ID --out CKPT_DIR
    python -m phi_jax.convert orbax-to-hf --checkpoint CKPT_DIR --out DIR [--dtype bfloat16]

hf-to-orbax writes step 0 of a checkpoint root (CKPT_DIR/0/{params,metadata,tokenizer});
orbax-to-hf writes config.json, generation_config.json, safetensors weights and the
tokenizer (tokenizer.json, tokenizer_config.json), loadable by transformers'
`AutoModelForCausalLM` and `AutoTokenizer` and by vLLM.
Both write under a temporary name and rename when complete.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import ml_dtypes
import numpy as np
from absl import flags, logging

from phi_jax import atomic, checkpoint, cli, hf_convert, hf_io, pretrained
from phi_jax.config import PhiConfig
from phi_jax.fim import FIM_TOKENS, has_fim_tokens
from phi_jax.settings import one_of, setting, text
from phi_jax.tokenizer import EOS, Tokenizer

EXPORT_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


@dataclasses.dataclass(frozen=True)
class ExportSettings:
  """`config.export_hf`: a model of the run as a transformers directory."""
  model: str = setting("", "the model to export: '' = the latest model of this run",
                       check=text())
  dtype: str = setting("float32", "weight dtype of the export: float32, bfloat16, float16",
                       check=one_of(*EXPORT_DTYPES))


def export_hf(params: Mapping, config: PhiConfig, out_dir: str, *,
              tokenizer: Tokenizer | None = None, dtype: str = "float32",
              overwrite: bool = False, max_shard_bytes: int = 5 * 2**30) -> str:
  """Writes a transformers PhiForCausalLM directory for phi_jax parameters."""
  if dtype not in EXPORT_DTYPES:
    raise ValueError(f"dtype must be one of {sorted(EXPORT_DTYPES)}, got {dtype!r}")
  eos = tokenizer.eos_id if tokenizer is not None else None
  with atomic.AtomicDirectory(out_dir, overwrite=overwrite) as tmp:
    tensors = hf_convert.params_to_hf(params, config, dtype=EXPORT_DTYPES[dtype])
    hf_io.write_safetensors(tensors, tmp, max_shard_bytes=max_shard_bytes)
    atomic.write_json(hf_convert.config_to_hf(config, bos_token_id=eos, eos_token_id=eos,
                                              torch_dtype=dtype),
                      os.path.join(tmp, "config.json"))
    atomic.write_json({"bos_token_id": eos, "eos_token_id": eos, "do_sample": False},
                      os.path.join(tmp, "generation_config.json"))
    if tokenizer is not None:
      tokenizer.save(tmp)
      atomic.write_json(tokenizer_config(tokenizer, config),
                        os.path.join(tmp, "tokenizer_config.json"))
  return out_dir


def tokenizer_config(tokenizer: Tokenizer, config: PhiConfig) -> dict:
  """transformers' tokenizer_config.json of an exported tokenizer: the CodeGen class
  (phi-1's), <|endoftext|> as bos/eos/unk, and the fill-in-the-middle sentinels, when the
  tokenizer has them, as additional special tokens (their ids are in tokenizer.json)."""
  special = {}
  if tokenizer.eos_id is not None:
    special = {"bos_token": EOS, "eos_token": EOS, "unk_token": EOS}
  return {"tokenizer_class": "CodeGenTokenizer", **special,
          "additional_special_tokens": list(FIM_TOKENS) if has_fim_tokens(tokenizer) else [],
          "model_max_length": config.max_seq_len, "add_prefix_space": False,
          "clean_up_tokenization_spaces": False}


def hf_to_orbax(hf_path: str, out: str, step: int = 0) -> str:
  """Imports a transformers directory (or hub repo id) as an Orbax checkpoint root."""
  if checkpoint.steps(out):
    raise FileExistsError(f"{out} already holds checkpoint steps {checkpoint.steps(out)}")
  directory = hf_io.resolve_model_dir(hf_path)
  config, params, tokenizer = pretrained.load_hf(directory)
  return checkpoint.save(out, step, params, config, tokenizer=tokenizer,
                         source=f"transformers:{hf_path}")


def orbax_to_hf(checkpoint_path: str, out: str, *, dtype: str = "float32",
                overwrite: bool = False) -> str:
  """Exports an Orbax checkpoint (root or step) as a transformers directory."""
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f"{os.path.abspath(out)} already exists (pass overwrite to replace it)")
  config = checkpoint.read_config(checkpoint_path)
  params = checkpoint.load_params(checkpoint_path, config)
  return export_hf(params, config, out, tokenizer=checkpoint.read_tokenizer(checkpoint_path),
                   dtype=dtype, overwrite=overwrite)


# ----------------------------------------------------------------------------- CLI

COMMANDS = ("hf-to-orbax", "orbax-to-hf")
_USAGE = ("usage: python -m phi_jax.convert hf-to-orbax --hf_dir DIR --out CKPT_DIR\n"
          "       python -m phi_jax.convert orbax-to-hf --checkpoint CKPT_DIR --out DIR")


def _define_flags() -> None:
  flags.DEFINE_string("hf_dir", None, "hf-to-orbax: transformers directory or repo id.")
  flags.DEFINE_string("checkpoint", None, "orbax-to-hf: checkpoint root or step dir.")
  flags.DEFINE_string("out", None, "Output directory.")
  flags.DEFINE_enum("dtype", "float32", sorted(EXPORT_DTYPES), "orbax-to-hf: weight dtype.")
  flags.DEFINE_bool("overwrite", False, "orbax-to-hf: replace an existing --out.")


def main(argv):
  f = flags.FLAGS
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise cli.UsageError(f"expected one command, {' or '.join(COMMANDS)}; got "
                         f"{' '.join(argv[1:]) or 'none'}\n{_USAGE}")
  if not f.out:
    raise cli.UsageError("--out is required")
  if argv[1] == "hf-to-orbax":
    if not f.hf_dir:
      raise cli.UsageError("hf-to-orbax needs --hf_dir")
    if not hf_io.looks_like_repo_id(f.hf_dir) or os.path.exists(f.hf_dir):
      cli.check_dir(f.hf_dir, "--hf_dir")
    cli.check_output_dir(f.out, "--out")
    if checkpoint.steps(f.out):
      raise cli.UsageError(f"--out {f.out} already holds checkpoint steps "
                           f"{checkpoint.steps(f.out)}; choose another directory")
    path = hf_to_orbax(f.hf_dir, f.out)
  else:
    if not f.checkpoint:
      raise cli.UsageError("orbax-to-hf needs --checkpoint")
    cli.check_dir(f.checkpoint, "--checkpoint")
    if not checkpoint.is_checkpoint(f.checkpoint):
      raise cli.UsageError(f"--checkpoint {f.checkpoint} is not an Orbax checkpoint (no step "
                           f"directory with {checkpoint.PARAMS}/ and {checkpoint.METADATA}/)")
    cli.check_output_dir(f.out, "--out")
    if os.path.exists(f.out) and not f.overwrite:
      raise cli.UsageError(f"--out {f.out} already exists; pass --overwrite to replace it")
    path = orbax_to_hf(f.checkpoint, f.out, dtype=f.dtype, overwrite=f.overwrite)
  logging.info("wrote %s", path)
  print(path)


def entry(prog: str = "phi-jax-convert") -> None:
  """The `phi-jax-convert` console script (and `python -m phi_jax.convert`)."""
  _define_flags()
  cli.run(main, prog=prog)


if __name__ == "__main__":
  entry("python -m phi_jax.convert")
