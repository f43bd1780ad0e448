"""TFDS builders of the curated sets as tokenized ArrayRecord datasets (data stage only).

Imports TensorFlow Datasets: only the data stage uses this module. Training reads the
datasets with `data_pipeline.loader`, without TensorFlow.

Three builders, one per curated set, all with the features
  id: text, tokens: int32 [n] (the document's tokens, no trailing <|endoftext|>),
  prompt_length: int32 (exercises: leading prompt tokens; else 0), origin: text,
and `train` / `validation` splits (`token_dataset.JsonlDocuments`: validation = the
documents whose stable id hash falls below validation_fraction):

  phi1_filtered_code   {"id", "text", "origin", ...}       filtered web code
  phi1_textbooks       {"id", "text", "origin", ...}       synthetic textbooks
  phi1_exercises       {"id", "prompt", "solution", ...}   exercises; tokens =
                       encode(prompt) + encode(solution), prompt_length = len(encode(prompt))
  phi1_mined_exercises {"id", "prompt", "solution", ...}   exercises mined from the
                       curated code, likewise

The dataset's metadata.json records the tokenizer (sha256, eos id, vocab size), the
documents and tokens of each split, the skipped JSONL lines by reason, and what it was
built from. `build_dataset` is what the data stage calls.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data_pipeline import token_dataset
from data_pipeline.fim import FimConfig
from data_pipeline.token_dataset import DATASETS, DatasetError, JsonlDocuments
from phi_jax.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class _TokenDatasetBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Builds one curated set; `jsonl_paths`/`tokenizer` are needed only to generate.

  Args (besides tfds.core.GeneratorBasedBuilder's, e.g. data_dir, file_format):
    jsonl_paths: the curated JSONL files.
    tokenizer: the phi_jax Tokenizer to tokenize with.
    validation_fraction: in [0, 1).
    fim: the fill-in-the-middle transform of text documents (None = none).
  """

  VERSION = tfds.core.Version(token_dataset.VERSION)
  RELEASE_NOTES = {token_dataset.VERSION: "Tokenized documents."}
  KIND = "text"

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> None:
    """No source path: these builders download nothing and have no checksums file.

    (TFDS 4.9.10 resolves it through the `importlib_resources` backport, which
    requirements do not install.)
    """
    return None

  def __init__(self, *, jsonl_paths: Sequence[str] = (), tokenizer: Tokenizer | None = None,
               validation_fraction: float = 0.0, fim: FimConfig | None = None, **kwargs):
    self._jsonl_paths = list(jsonl_paths)
    self._fim = fim
    self._tokenizer = tokenizer
    self._validation_fraction = float(validation_fraction)
    self._documents: JsonlDocuments | None = None
    kwargs.setdefault("file_format", token_dataset.FILE_FORMAT)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"phi_jax token dataset {self.name} ({self.KIND} documents)",
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            "tokens": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "prompt_length": tfds.features.Scalar(dtype=np.int32),
            "origin": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the inputs are local files
    if self._tokenizer is None or not self._jsonl_paths:
      raise DatasetError(f"{self.name}: building needs jsonl_paths and a tokenizer")
    self._documents = JsonlDocuments(self._jsonl_paths, self.KIND, self._validation_fraction,
                                     fim=self._fim)
    metadata = self.info.metadata
    metadata.update(token_dataset.base_metadata(self._tokenizer, self.KIND))
    metadata["skipped"] = dict(sorted(self._documents.skipped.items()))
    if not self._documents.splits():
      raise DatasetError(f"{self.name}: no usable documents in {self._jsonl_paths} "
                         f"(skipped: {metadata['skipped']})")
    return {split: self._generate_examples(split) for split in self._documents.splits()}

  def _generate_examples(self, split: str):
    counts = {"documents": 0, "tokens": 0}
    for record in self._documents.records(split, self._tokenizer):
      counts["documents"] += 1
      counts["tokens"] += len(record.tokens)
      yield record.id, {"id": record.id, "tokens": record.tokens,
                        "prompt_length": np.int32(record.prompt_length),
                        "origin": record.origin}
    self.info.metadata["splits"][split] = counts


class Phi1FilteredCode(_TokenDatasetBuilder):
  """Filtered web code ({"id", "text", "origin"} JSONL), tokenized."""
  KIND = DATASETS["phi1_filtered_code"]


class Phi1Textbooks(_TokenDatasetBuilder):
  """Synthetic textbooks ({"id", "text", "origin"} JSONL), tokenized."""
  KIND = DATASETS["phi1_textbooks"]


class Phi1Exercises(_TokenDatasetBuilder):
  """Exercises ({"id", "prompt", "solution", "origin"} JSONL), tokenized with the
  prompt/solution boundary in prompt_length."""
  KIND = DATASETS["phi1_exercises"]


class Phi1MinedExercises(_TokenDatasetBuilder):
  """Exercises mined from documented functions of the curated code, tokenized like
  Phi1Exercises."""
  KIND = DATASETS["phi1_mined_exercises"]


BUILDERS = {"phi1_filtered_code": Phi1FilteredCode, "phi1_textbooks": Phi1Textbooks,
            "phi1_exercises": Phi1Exercises, "phi1_mined_exercises": Phi1MinedExercises}


def _existing(path: str) -> dict[str, Any] | None:
  """The metadata.json of a complete dataset at path, else None."""
  try:
    token_dataset.dataset_info(path)
    with open(os.path.join(path, "metadata.json"), encoding="utf-8") as f:
      return json.load(f)
  except (DatasetError, OSError, json.JSONDecodeError):
    return None


def build_dataset(name: str, jsonl_paths: Sequence[str], tokenizer: Tokenizer, data_dir: str,
                  validation_fraction: float = 0.0, fim: FimConfig | None = None) -> str:
  """Builds (or reuses) the token dataset `name`; returns its version directory.

  An already-built dataset with the same inputs (file contents, tokenizer, fraction,
  FIM transform, format) is reused; one built from other inputs is replaced. TFDS writes into an
  `incomplete.*` directory and renames it when done, so an interrupted build never
  looks complete.

  Args:
    name: one of BUILDERS (phi1_filtered_code, phi1_textbooks, phi1_exercises).
    jsonl_paths: the curated JSONL (.jsonl / .jsonl.gz) files, in order.
    tokenizer: a phi_jax Tokenizer with <|endoftext|>.
    data_dir: the TFDS data directory (the dataset goes to <data_dir>/<name>/1.0.0).
    validation_fraction: in [0, 1): the share of documents held out (by id hash).
    fim: the fill-in-the-middle transform (`data_pipeline.fim`) of a text dataset's
      documents; None = none.
  """
  if name not in BUILDERS:
    raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(BUILDERS)}")
  if not jsonl_paths:
    raise ValueError(f"{name}: no JSONL inputs given")
  built_from = token_dataset.inputs_description(name, jsonl_paths, tokenizer,
                                                validation_fraction, fim)
  target = token_dataset.version_dir(data_dir, name)
  existing = _existing(target)
  if existing is not None and existing.get("built_from", {}).get("sha256") == built_from["sha256"]:
    log.info("%s: reusing %s (same inputs)", name, target)
    return target
  if os.path.exists(target):
    log.info("%s: %s was built from other inputs (or is incomplete); rebuilding", name, target)
    shutil.rmtree(target)
  builder = BUILDERS[name](data_dir=os.path.abspath(data_dir), jsonl_paths=jsonl_paths,
                           tokenizer=tokenizer, validation_fraction=validation_fraction,
                           fim=fim)
  builder.info.metadata["built_from"] = built_from
  tfds.display_progress_bar(False)  # the data stage reports its own progress
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  if os.path.abspath(builder.data_dir) != target:
    raise DatasetError(f"{name}: TFDS wrote {builder.data_dir}, expected {target}")
  token_dataset.dataset_info(target)  # the files agree with the metadata
  return target
