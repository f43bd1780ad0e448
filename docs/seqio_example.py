"""Reads phi_jax's SeqIO tasks and mixtures as a T5X/SeqIO program does: by importing
the registry module, with no other phi_jax call (docs/data.md, "SeqIO").

    PHI_JAX_DATA_DIR=workdir/tiny/data/tfds python docs/seqio_example.py
    python docs/seqio_example.py --tfds_data_dir=workdir/tiny/data/tfds \
        --mixture_or_task=phi1_code_textbook,humaneval --num_examples=2

(After `pip install "phi-jax[data]"` it runs from any directory.) The data directory is
the data stage's WORKDIR/data/tfds: $PHI_JAX_DATA_DIR, else SeqIO's TFDS data-dir
override, which --tfds_data_dir sets here as T5X's flag of that name does.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # a checkout

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app, flags
import seqio

import data_pipeline.seqio_registry  # noqa: F401  (registers the tasks and mixtures)

_NAMES = flags.DEFINE_list("mixture_or_task", ["phi1_code_textbook"], "Tasks or mixtures.")
_SPLIT = flags.DEFINE_string("split", "train", "Split (a task without it: its first).")
_NUM = flags.DEFINE_integer("num_examples", 3, "Examples to print of each.")
_TFDS_DATA_DIR = flags.DEFINE_string("tfds_data_dir", None, "SeqIO's TFDS data-dir override.")


def main(argv):
  del argv
  if _TFDS_DATA_DIR.value:
    seqio.set_tfds_data_dir_override(_TFDS_DATA_DIR.value)
  for name in _NAMES.value:
    provider = seqio.get_mixture_or_task(name)
    splits = provider.splits
    split = _SPLIT.value if _SPLIT.value in splits else splits[0]
    ds = provider.get_dataset(sequence_length=None, split=split, shuffle=False)
    vocabulary = provider.output_features["targets"].vocabulary
    for i, example in enumerate(ds.take(_NUM.value).as_numpy_iterator()):
      text = vocabulary.decode(example["targets"].tolist())
      print(f"{name} {split} {i}: {len(example['targets'])} target tokens, "
            f"features {sorted(example)}: {text[:60]!r}")


if __name__ == "__main__":
  app.run(main)
