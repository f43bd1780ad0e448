"""The paper's Figure 2.1 at the tiny model's scale: does data quality pay?

`python -m recipe.ablation --config=configs/ablation_quality.py --workdir=DIR` runs the
arms of Figure 2.1 (recipe/ablation.py, docs/ablation.md): pretraining on the unfiltered
code (The Stack+), on the filtered code and on CodeTextbook (filtered code + synthetic
textbooks), each scored after pretraining alone, and CodeTextbook -> CodeExercises
after finetuning; every pretraining run is also finetuned and scored (on CodeExercises,
or without a teacher on the mined exercises: a stand-in). Benchmark bits per byte is the
primary metric; pass@1 is beside it. Each budget of `budgets` and each seed of `seeds`
is a run of its own.

The base is configs/tiny.py (CPU). No teacher is configured, so the arms that need
synthetic data are skipped with that reason and the rest run offline; give a teacher
(`--config.synth.teacher.model=... --config.synth.teacher.base_url=...`) or files
(`--config.ablation.textbooks=books.jsonl --config.ablation.exercises=ex.jsonl`: JSONL
of data_pipeline/records.py's records, as the synthesize stage writes them) to run them.
The paper's 350M is configs/ablation_phi1_small.py.

Every arm tokenizes with one tokenizer, the first run's (shared_tokenizer below), so a
difference in bits per byte is a difference of data; with shared_tokenizer=False each
arm trains its own tokenizer on its own data and the report says so.
"""

import ml_collections

from configs import tiny


def get_config():
  config = tiny.get_config()
  config.workdir = "workdir/ablation_quality"
  # no teacher: tiny's random local teacher accepts no sample, so it would only make the
  # textbook arm train on filtered code under another name
  config.synth.local_teacher = ""
  config.ablation = ml_collections.ConfigDict(dict(
      # the model-size group this config runs (the summary's group label)
      size="tiny",
      # the figure's arms, in its order (recipe/ablation.py: ARMS)
      arms=("stack_plus", "filtered", "code_textbook", "code_textbook_exercises"),
      # pretraining lengths in steps of 16 x 128 tokens: ~143k and ~410k tokens, the
      # ratio of the figure's 26B and 76B (a choice); one run each
      budgets=(70, 200),
      # each run repeated per seed: initialisation, data order, dropout, sampling
      seeds=(0, 1, 2),
      # JSONL files of synthetic textbooks / exercises, for the arms that need them
      # when no teacher is configured
      textbooks=(),
      exercises=(),
      # every arm tokenizes with the first run's tokenizer when data.tokenizer.spec is
      # 'train' (recipe/ablation.py: shared_tokenizer), so bits per byte compares data
      shared_tokenizer=True,
  ))
  return config
