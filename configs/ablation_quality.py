"""The paper's central experiment (Figure 2.1) at small scale: does data quality pay?

Three arms train the same model on the same token budget (config.train: steps x
batch_size x seq_len) and differ only in their training data; each is then finetuned
on the same exercises and evaluated:

    unfiltered          the curated web code with no quality filter
                        (data.quality.keep_threshold = 0: the classifier keeps all)
    filtered            the code the educational-value classifier keeps (threshold 0.5)
    filtered_textbooks  the filtered code + synthetic textbooks (CodeTextbook)

`python -m recipe.ablation --config=configs/ablation_quality.py --workdir=DIR` runs each
arm's whole pipeline in DIR/<arm> (resumable, like run.py) and writes DIR/ablation.md
and DIR/ablation.png: pass@1 and benchmark bits per byte side by side, per arm.

The base is configs/tiny.py (CPU, minutes per arm). To run at the paper's 350M scale,
change the size fields only: `--config.model.d_model=1024 --config.model.num_layers=20
--config.model.num_heads=16 --config.model.mlp_dim=4096` (and the training length and
batch fields to a real budget); `arms` stays as it is. The textbook arm needs synthetic
textbooks: JSONL records {"id", "text", "origin", "license", "meta"} (the synthesize
stage's output, or --config.ablation.textbooks=PATH).

Caveat, stated in the report: each arm trains its own tokenizer on its own data
(config.data.tokenizer.spec = 'train'), so bits per byte, which does not depend on the
tokenizer, is the comparable loss; point data.tokenizer.spec at one tokenizer.json to
hold it fixed as well.
"""

import ml_collections

from configs import tiny


def get_config():
  config = tiny.get_config()
  config.workdir = "workdir/ablation_quality"
  # what each arm builds: no sampling or export, the report last
  config.stages = ("data", "init", "pretrain", "finetune", "eval", "report")
  config.ablation = ml_collections.ConfigDict(dict(
      # the arms, in order; each names the config fields it changes (and nothing but data)
      arms=("unfiltered", "filtered", "filtered_textbooks"),
      # JSONL files of synthetic textbooks for the filtered_textbooks arm (records
      # {"id", "text", "origin", "license", "meta"}: data_pipeline/records.py)
      textbooks=(),
  ))
  return config


def arm_overrides(name: str, textbooks: tuple[str, ...]) -> dict:
  """The config fields arm `name` sets: {dotted field: value}. Only data fields."""
  arms = {
      "unfiltered": {"data.quality.keep_threshold": 0.0, "data.textbooks": (),
                     "train.data": ("phi1_filtered_code",)},
      "filtered": {"data.quality.keep_threshold": 0.5, "data.textbooks": (),
                   "train.data": ("phi1_filtered_code",)},
      "filtered_textbooks": {"data.quality.keep_threshold": 0.5,
                             "data.textbooks": tuple(textbooks),
                             "train.data": ("phi1_code_textbook",)},
  }
  if name not in arms:
    raise ValueError(f"unknown ablation arm {name!r}; arms: {', '.join(arms)}")
  if name == "filtered_textbooks" and not textbooks:
    raise ValueError("the filtered_textbooks arm needs synthetic textbooks: set "
                     "config.ablation.textbooks to JSONL files of {\"id\", \"text\"}")
  return arms[name]
