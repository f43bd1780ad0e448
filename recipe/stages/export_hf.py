"""Stage `export_hf`: a model of the run as a transformers directory.

Writes WORKDIR/export_hf/hf/ (config.json, safetensors, tokenizer), loadable with
`transformers.AutoModelForCausalLM.from_pretrained` and servable by vLLM. The model is
config.export_hf.model (recipe/models.py: '' = the latest model of the run).
"""

from __future__ import annotations

import os

from phi_jax import checkpoint, convert, hosts
from recipe.runner import Context
from recipe.stages import common

def run(ctx: Context, reads: dict) -> dict:
  path = reads["model"].spec
  out = os.path.join(ctx.node_dir("export_hf"), "hf")
  if hosts.index() == 0:
    convert.orbax_to_hf(path, out, dtype=reads["export_hf"].dtype, overwrite=True)
  else:  # loading a checkpoint is a collective of the job: every host loads, one writes
    checkpoint.load_params(path, checkpoint.read_config(path))
  step = checkpoint.read_metadata(path)["step"]
  print(f"[export_hf] step {step} of {path} -> {out}", flush=True)
  return {"hf_dir": out, "source": path, "step": step}


NODES = (common.model_reader_node("export_hf", "export_hf", run,
                                   "the model for transformers: export_hf/hf"),)
