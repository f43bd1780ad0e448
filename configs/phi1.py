"""phi-1 (1.3B): 24 layers, d_model 2048, MLP 8192, 32 heads x 64, rotary on 32 dims.

The paper's model (Gunasekar et al. 2023, arXiv 2306.11644): 1,418,270,720 parameters
with the CodeGen tokenizer padded to 51200, trained with the paper's hyperparameters
(config.train: pretraining on CodeTextbook; config.finetune: finetuning on
CodeExercises) on data the `data` stage curates from The Stack (Python, streamed from
the Hugging Face hub: online) with GPT-4-style annotation through config.llm.

The tokenizer is CodeGen's, from `microsoft/phi-1` (online) or a local transformers
directory (config.data.tokenizer.spec). To evaluate the released weights instead:
--stages=init,eval --config.init.model=microsoft/phi-1 --config.init.tokenizer=''.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.workdir = "workdir/phi1"
  config.data.update(dict(
      sources=("hf:bigcode/the-stack-dedup:data/python",), text_field="content",
      license_field="max_stars_repo_licenses", validation_fraction=0.002))
  config.data.tokenizer.spec = "microsoft/phi-1"  # the CodeGen tokenizer (50295 tokens)
  # the paper: GPT-4 labelled ~100k samples; a random forest on CodeGen-350M embeddings
  # predicted the rest (phi_jax embeds with any phi checkpoint: here phi-1.5)
  config.data.quality.update(dict(annotator="llm", annotate=100_000,
                                  embed_model="microsoft/phi-1_5"))
  config.llm.model = "gpt-4o"
  # the paper's synthetic data came from GPT-3.5 (textbooks and CodeExercises); its
  # annotator/judge was GPT-4 (config.llm)
  config.synth.teacher.model = "gpt-3.5-turbo"
  return config
