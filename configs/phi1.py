"""phi-1 (1.3B): 24 layers, d_model 2048, MLP 8192, 32 heads x 64, rotary on 32 dims.

The paper's model (Gunasekar et al. 2023, arXiv 2306.11644): 1,418,270,720 parameters
with the CodeGen tokenizer padded to 51200, trained with the paper's hyperparameters
(config.train: pretraining; config.finetune: finetuning). The tokenizer comes from
`microsoft/phi-1` (online) or a local transformers directory (config.init.tokenizer).

To evaluate the released weights instead: --stages=init,eval
--config.init.from_hf=microsoft/phi-1 (or a local transformers directory).
"""

from configs import base


def get_config():
  config = base.get_config()
  config.workdir = "workdir/phi1"
  config.stages = "pretrain,finetune,sample,eval,export_hf"
  config.init.tokenizer = "microsoft/phi-1"  # the CodeGen tokenizer (hub id or local dir)
  return config
