"""phi-1-small (350M): 20 layers, d_model 1024, MLP 4096, 16 heads x 64.

The paper's smaller model: "trained with the same pipeline as phi-1" and 45% on
HumanEval after finetuning (abstract, Table 1); 356,794,368 parameters with vocab
51200. Data, tokenizer, architecture details and optimizer as configs/phi1.py.

Its training length is a choice: the paper gives none for phi-1-small. phi-1's
step-24000 base (a checkpoint of its 36k-step run) is phi-1's, not a budget the paper
reports for 350M. Here pretraining runs 36k steps of 1024 x 2048 tokens (75.5B tokens:
§2.1 states 36k steps for its 350M model on the filtered code, and Figure 2.1's larger
350M budget is 76B tokens), and finetuning (phi-1's 6k steps, §2.3) starts from its last
step. Figure 2.1's 350M budgets are configs/ablation_phi1_small.py.
"""

from configs import phi1


def get_config():
  config = phi1.get_config()
  config.workdir = "workdir/phi1_small"
  config.model.update(dict(d_model=1024, num_layers=20, num_heads=16, mlp_dim=4096))
  # a choice (above): 36k steps, finetuning from the last one; no phi-1-base checkpoint
  config.train.steps = 36_000
  config.train.keep_steps = ()
  config.finetune.model = "pretrain"
  # the base model phi1.py's sweep names (pretrain:<step>) is this run's last step here
  config.eval.checkpoints = tuple(
      "pretrain" if str(ref).startswith("pretrain:") else ref for ref in config.eval.checkpoints)
  return config
