"""Stage `export_hf`: the run's latest model as a transformers directory.

Writes WORKDIR/export_hf/hf/ (config.json, safetensors, tokenizer), loadable with
`transformers.AutoModelForCausalLM.from_pretrained` and servable by vLLM.
"""

from __future__ import annotations

import os

from phi_jax import checkpoint, convert
from phi_jax.stages.base import Context, Stage


class ExportHfStage(Stage):
  name = "export_hf"
  config_sections = ("export_hf",)
  model_section = "export_hf"

  def run(self, ctx: Context) -> dict:
    path, _ = self.model_checkpoint(ctx)
    out = os.path.join(ctx.stage_dir(self.name), "hf")
    convert.orbax_to_hf(path, out, dtype=ctx.config.export_hf.dtype, overwrite=True)
    step = checkpoint.read_metadata(path)["step"]
    print(f"[export_hf] step {step} of {path} -> {out}", flush=True)
    return {"hf_dir": out, "source": path, "step": step}
