"""phi-1-small (350M): 20 layers, d_model 1024, MLP 4096, 16 heads x 64.

The paper's smaller model (45% HumanEval after finetuning); 356,794,368 parameters
with vocab 51200. Data, tokenizer and training recipe as configs/phi1.py.
"""

from configs import phi1


def get_config():
  config = phi1.get_config()
  config.workdir = "workdir/phi1_small"
  config.model.update(dict(d_model=1024, num_layers=20, num_heads=16, mlp_dim=4096))
  return config
