"""Training batches: the datasets a training stage names, read by the grain loader.

`config.train.data` (and `config.finetune.data`) names what to train on: datasets and
mixtures the `data` stage built (`data_pipeline/catalog.py`: phi1_code_textbook,
phi1_exercises, ...) or paths of built dataset directories. `make_loader` resolves the
names under WORKDIR/data/tfds, checks the datasets were tokenized with the model's
tokenizer, and returns `data_pipeline.loader`'s packed, shuffled, host-sharded and
resumable batches:

    {"tokens": int32 [b, seq_len], "loss_mask": int32 [b, seq_len],
     "segment_ids", "positions": int32 [b, seq_len] (with train.segment_ids)}

where b = batch_size / hosts; the loss at position t (predicting t+1) counts iff
loss_mask[t + 1] == 1. With `loss_on_solution_only` exercises carry 0 on their prompt
tokens; without it every token counts. No TensorFlow is imported here.
"""

from __future__ import annotations

from typing import Any

from data_pipeline import catalog
from data_pipeline import loader as loader_lib
from data_pipeline import token_dataset
from phi_jax.tokenizer import Tokenizer
from phi_jax.train.settings import TrainSettings

SPLITS = ("train", "validation")


class DataError(ValueError):
  """The training data is missing, was built with another tokenizer, or is too small."""


def dataset_dirs(spec, workdir: str, where: str, *, allow_partial: bool = False,
                 skipped: list[str] | None = None) -> list[str]:
  """The built dataset directories `spec` names (see the module docstring); with
  `allow_partial`, unbuilt mixture components are left out and listed in `skipped`."""
  try:
    return catalog.resolve(spec, catalog.tfds_dir(workdir), where=where,
                           allow_partial=allow_partial, skipped=skipped)
  except catalog.CatalogError as e:
    raise DataError(str(e)) from None


def make_batches(train_cfg: TrainSettings, workdir: str, tokenizer: Tokenizer, *, split: str,
                 seed: int, where: str, allow_partial: bool = False) -> loader_lib.Loader:
  """Batches of train_cfg.data's `split` for one training stage (this host's rows);
  `allow_partial`: a mixture may miss components the data stage did not build."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  if tokenizer.eos_id is None:
    raise DataError("the tokenizer has no <|endoftext|> token to join documents with")
  dirs = dataset_dirs(train_cfg.data, workdir, f"config.{where}.data",
                      allow_partial=allow_partial)
  try:
    loader = loader_lib.make_loader(
        dirs, split=split, seq_len=int(train_cfg.seq_len),
        batch_size=int(train_cfg.batch_size), seed=seed, eos_id=tokenizer.eos_id,
        segment_ids=bool(train_cfg.segment_ids), worker_count=int(train_cfg.loader_workers),
        tokenizer_sha256=token_dataset.tokenizer_sha256(tokenizer),
        mask_prompts=bool(train_cfg.loss_on_solution_only),
        host_sharding=train_cfg.host_sharding)
  except token_dataset.DatasetError as e:
    raise DataError(f"config.{where}.data = {train_cfg.data!r}: {e}") from None
  return loader
