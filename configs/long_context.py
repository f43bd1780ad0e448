"""long_context: phi-1 finetuned from its 2,048-token context to 8,192 tokens.

Position interpolation (Chen et al. 2023, "Extending Context Window of Large Language
Models via Positional Interpolation"): linear RoPE scaling by 4 maps positions 0-8191
onto the angles of 0-2047 that pretraining taught the model, and a short finetune at
the new length adapts it; the paper used about 1,000 steps of 64 sequences at lr 2e-5
and no weight decay. The `finetune` stage here starts from a complete phi-1
pretraining run (workdir/phi1, config.train of configs/phi1.py: phi-1-base) and trains
on the same CodeTextbook data in 8,192-token sequences; its checkpoints, samples,
pass@k and transformers export carry the scaling (config.json `rope_parameters`
{"rope_type": "linear", "factor": 4.0}).

Code Llama's recipe instead raises the rotary base: --config.finetune.context.rope_base=1e6
--config.finetune.context.rope_scaling_type=none (docs/long_context.md). The context
settings work with any config; on a small machine, configs/tiny.py (512 tokens) with
--config.finetune.context.max_seq_len=2048 --config.finetune.context.rope_scaling_type=linear
--config.finetune.context.rope_scaling_factor=4 --config.finetune.seq_len=2048.
"""

from configs import base, phi1

FROM_MODEL = "workdir/phi1/pretrain/checkpoints"  # phi-1-base: a phi1 run's pretraining
CONTEXT = 8192
FACTOR = 4.0  # 8192 / 2048


def get_config():
  config = phi1.get_config()
  config.workdir = "workdir/phi1_long_context"
  # the data stage builds CodeTextbook in this work directory as the phi1 run did;
  # then the long-context finetune and the stages that use its model
  config.stages = ("data", "finetune", "sample", "eval", "export_hf")
  config.finetune.update(dict(
      model=FROM_MODEL, steps=1000, batch_size=64, seq_len=CONTEXT, microbatches=8,
      data=("phi1_code_textbook",), loss_on_solution_only=False, checkpoint_every=250,
      eval_every=250))
  config.finetune.optimizer.update(dict(lr=2e-5, warmup_steps=20, weight_decay=0.0))
  config.finetune.context.update(dict(max_seq_len=CONTEXT, rope_scaling_type="linear",
                                      rope_scaling_factor=FACTOR))
  return config
