"""Importing this module registers phi_jax's SeqIO tasks and mixtures (T5's convention).

    import seqio
    import data_pipeline.seqio_registry  # noqa: F401  (registers; nothing else to call)

    ds = seqio.get_mixture_or_task("phi1_code_textbook").get_dataset(
        sequence_length=None, split="train", shuffle=True, seed=0)

Registered, from the catalog the runner uses (data_pipeline/catalog.py): a task for
every dataset the data stage builds (phi1_filtered_code, phi1_textbooks, phi1_exercises,
phi1_mined_exercises), humaneval, and the mixtures phi1_code_textbook,
phi1_code_exercises (data_pipeline/seqio_tasks.py describes their features). In a gin file: `MIXTURE_OR_TASK_MODULE =
"data_pipeline.seqio_registry"`.

Nothing is read at import. When a program first reads data:

  data directory   the TFDS data directory holding <name>/1.0.0/ (the data stage's
                   WORKDIR/data/tfds): $PHI_JAX_DATA_DIR, else SeqIO's TFDS data-dir
                   override (`seqio.set_tfds_data_dir_override`, what T5X's
                   --tfds_data_dir sets). PHI_JAX_DATA_DIR names these datasets only, so
                   it wins over the override, which a program may set for others.
  vocabulary       the tokenizer the datasets were tokenized with, loaded once:
                   $PHI_JAX_TOKENIZER (a tokenizer.json, a directory, 'byte_level' or a
                   hub id) when set, else the first of DATA_DIR/tokenizer.json,
                   DATA_DIR/tokenizer/ and DATA_DIR/../tokenizer/ (the data stage writes
                   WORKDIR/data/tokenizer beside WORKDIR/data/tfds). Every dataset
                   records its tokenizer's sha256; reading with another one fails.
"""

from __future__ import annotations

import os

import seqio

from data_pipeline import seqio_tasks
from data_pipeline.seqio_vocab import LazyTokenizerVocabulary
from phi_jax.tokenizer import TOKENIZER_FILE, Tokenizer

DATA_DIR_ENV = "PHI_JAX_DATA_DIR"
TOKENIZER_ENV = "PHI_JAX_TOKENIZER"


class RegistryError(ValueError):
  """The data directory or tokenizer of the registered tasks cannot be found."""


def data_dir() -> str:
  """The token datasets' TFDS data directory, as the module docstring finds it."""
  directory = os.environ.get(DATA_DIR_ENV) or seqio.utils._get_data_dir_override(None)  # pylint: disable=protected-access
  if not directory:
    raise RegistryError(
        f"the phi1_* SeqIO tasks need their data directory (the data stage's "
        f"WORKDIR/data/tfds): set ${DATA_DIR_ENV}, or call "
        f"seqio.set_tfds_data_dir_override(...) (T5X: --tfds_data_dir)")
  if not os.path.isdir(directory):
    raise RegistryError(f"{DATA_DIR_ENV} / TFDS data-dir override {directory}: no such "
                        "directory")
  return os.path.abspath(directory)


def tokenizer_candidates(directory: str) -> list[str]:
  """Where the datasets' tokenizer is looked for under a data directory, in order."""
  return [os.path.join(directory, TOKENIZER_FILE),
          os.path.join(directory, "tokenizer", TOKENIZER_FILE),
          os.path.join(os.path.dirname(directory.rstrip(os.sep)), "tokenizer", TOKENIZER_FILE)]


def load_tokenizer() -> Tokenizer:
  """The datasets' tokenizer, as the module docstring finds it."""
  spec = os.environ.get(TOKENIZER_ENV)
  if spec:
    from data_pipeline import tokenizer as tokenizer_lib  # pylint: disable=g-import-not-at-top
    return tokenizer_lib.load_tokenizer(spec)
  candidates = tokenizer_candidates(data_dir())
  for path in candidates:
    if os.path.isfile(path):
      return Tokenizer.from_file(path)
  raise RegistryError(f"no tokenizer for the phi1_* SeqIO tasks: none of "
                      f"{', '.join(candidates)} exists; set ${TOKENIZER_ENV}")


VOCABULARY = LazyTokenizerVocabulary(
    load_tokenizer, description=f"${TOKENIZER_ENV} or the tokenizer beside ${DATA_DIR_ENV}")
seqio_tasks.register(data_dir, VOCABULARY)
