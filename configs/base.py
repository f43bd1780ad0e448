"""The run config every size file (phi1.py, tiny.py, ...) edits: one section per library
settings schema, built from the schema's defaults.

Each field's default, valid range, documentation and kind (output-determining or
operational) are defined once, in the schema of the library that uses it:

    (top level)      phi_jax.settings.RunSettings
    model            phi_jax.config.PhiConfig
    mesh             phi_jax.train.mesh.MeshSettings
    train, finetune  phi_jax.train.settings.TrainSettings (finetune: its FINETUNE values)
    data             data_pipeline.settings.DataSettings
    llm              phi_jax.llm.LLMConfig
    init             phi_jax.pretrained.InitSettings
    sample           phi_jax.sampling.SampleSettings
    eval             eval.settings.EvalSettings (its seed is the top-level seed)
    serve            phi_jax.serving.settings.ServeSettings
    export_hf        phi_jax.convert.ExportSettings
    synth            data_pipeline.synth.config.SynthConfig
    decontaminate    data_pipeline.decontaminate.config.DecontConfig (its embedder:
                     data.quality's)

`python run.py --describe_config` prints every field with its default, kind and
documentation. Config files change values only; override any field on the command line:
`python run.py --config=configs/tiny.py --config.model.num_layers=2`.
"""

import ml_collections

from data_pipeline.decontaminate.config import RUN_DERIVED, DecontConfig
from data_pipeline.settings import DataSettings
from data_pipeline.synth.config import SynthConfig
from eval.settings import section_defaults as eval_section_defaults
from phi_jax import settings
from phi_jax.config import PhiConfig
from phi_jax.convert import ExportSettings
from phi_jax.llm.config import LLMConfig
from phi_jax.pretrained import InitSettings
from phi_jax.sampling import SampleSettings
from phi_jax.serving.settings import ServeSettings
from phi_jax.train.mesh import MeshSettings
from phi_jax.train.settings import FINETUNE, TrainSettings

# The run config's sections and the schema of each (recipe/settings.py validates them).
SECTIONS = {
    "model": PhiConfig, "mesh": MeshSettings, "train": TrainSettings, "finetune": TrainSettings,
    "data": DataSettings, "llm": LLMConfig, "init": InitSettings, "sample": SampleSettings,
    "serve": ServeSettings, "export_hf": ExportSettings, "synth": SynthConfig,
}


def get_config() -> ml_collections.ConfigDict:
  config = settings.to_config(settings.RunSettings())
  config.model = settings.to_config(PhiConfig())
  config.mesh = settings.to_config(MeshSettings())
  # Pretraining: the paper's AdamW, lr 1e-3, warmup 750, linear decay, wd 0.1, batch
  # 1024 x 2048 tokens, 36k steps (§2.3); phi-1-base is the 24k-step checkpoint.
  config.train = settings.to_config(TrainSettings())
  # Finetuning on exercises from the pretrained model: batch 256, lr 1e-4, warmup 50,
  # 6k steps, weight decay 0.01 (§2.3); its own optimizer state, schedule and data.
  config.finetune = settings.to_config(FINETUNE)
  config.data = settings.to_config(DataSettings())
  config.llm = settings.to_config(LLMConfig())
  config.init = settings.to_config(InitSettings())
  config.sample = settings.to_config(SampleSettings())
  config.eval = ml_collections.ConfigDict(eval_section_defaults())
  config.serve = settings.to_config(ServeSettings())
  config.export_hf = settings.to_config(ExportSettings())
  config.synth = settings.to_config(SynthConfig())
  # the paper's synthetic data (§2.2): under 1B tokens of textbooks (the section count
  # is a choice: ~650k sections of ~1.5k tokens) and CodeExercises, 879.5K exercises of
  # about 180M tokens (§2.2, §5.2): one request each, before verification rejects some
  config.synth.textbooks.count = 650_000
  config.synth.exercises.count = 879_500
  decontaminate = settings.to_dict(DecontConfig())
  for field in RUN_DERIVED:
    decontaminate.pop(field)
  config.decontaminate = ml_collections.ConfigDict(decontaminate)
  return config
