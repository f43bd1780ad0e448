"""The paper's Figure 2.1 at 350M (phi-1-small's shape), for GPUs.

    python -m recipe.ablation --config=configs/ablation_phi1_small.py --workdir=DIR

The same arms as configs/ablation_quality.py (recipe/ablation.py) on configs/
phi1_small.py: 20 layers, d_model 1024, The Stack (online), the LLM annotator, GPT-3.5
as the teacher (so the textbook arms run; they need an API key in the variable
config.synth.teacher.api_key_env names). Run it in the same DIR as the tiny ablation and
the summary draws both sizes side by side.

Budgets: Figure 2.1's two 350M groups are 26B and 76B tokens. At phi-1's batch of 1024
x 2048 tokens (2,097,152 a step; the paper does not state the 350M batch, a choice)
they are 12,400 steps (26.0B) and 36,000 steps (75.5B); 36k steps is also the length
§2.1 states for the 350M model on the filtered code. One seed: the paper reports one run
per bar. Finetuning: phi-1's 6k steps (§2.3) from the end of each pretraining run.
"""

import ml_collections

from configs import phi1_small


def get_config():
  config = phi1_small.get_config()
  config.workdir = "workdir/ablation_phi1_small"
  config.train.keep_steps = ()  # each budget is a run of its own; its last step is scored
  config.finetune.model = "pretrain"
  config.ablation = ml_collections.ConfigDict(dict(
      size="350M",
      arms=("stack_plus", "filtered", "code_textbook", "code_textbook_exercises"),
      budgets=(12_400, 36_000),
      seeds=(0,),
      textbooks=(),
      exercises=(),
      # every arm tokenizes with the first run's tokenizer when data.tokenizer.spec is
      # 'train' (recipe/ablation.py: shared_tokenizer), so bits per byte compares data
      shared_tokenizer=True,
  ))
  return config
