"""The names of phi_jax's datasets and mixtures, and where the data stage puts them.

TF-free on purpose: training resolves `config.train.data` with it, SeqIO registers its
tasks and mixtures from it, and the data stage builds exactly these datasets.

    phi1_filtered_code    web code kept by the educational-value filter
    phi1_textbooks        synthetic textbooks (the synthesize stage, and/or given JSONL)
    phi1_exercises        CodeExercises: docstring prompt -> solution (the synthesize
                          stage, and/or given JSONL)
    phi1_mined_exercises  exercises mined from documented functions of the curated code
    phi1_code_textbook    mixture: filtered code + textbooks (CodeTextbook, pretraining)
    phi1_code_exercises   mixture: the exercises (CodeExercises, finetuning)

A mixture is its components' documents together: each epoch visits every document of
every component once (rates proportional to size, as the paper concatenated them). A
component the data stage did not build (no input) is an error naming it, unless the
run allows partial mixtures (`config.data.allow_partial_mixtures`, set by the tiny
config whose random teacher writes no accepted sample).
The data stage writes each dataset in the TFDS layout under WORKDIR/data/tfds:
`<tfds_dir>/<name>/<version>/` with `dataset_info.json` and ArrayRecord shards.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

FILTERED_CODE = "phi1_filtered_code"
TEXTBOOKS = "phi1_textbooks"
EXERCISES = "phi1_exercises"
MINED_EXERCISES = "phi1_mined_exercises"
# dataset -> the kind of its JSONL records: "text" {"id","text",...} or "exercise"
# {"id","prompt","solution",...} (tokens = prompt + solution; the loss may skip the prompt)
DATASETS = {FILTERED_CODE: "text", TEXTBOOKS: "text", EXERCISES: "exercise",
            MINED_EXERCISES: "exercise"}
MIXTURES = {
    "phi1_code_textbook": (FILTERED_CODE, TEXTBOOKS),
    "phi1_code_exercises": (EXERCISES,),
}
DATA_STAGE = "data"  # the stage that builds them: WORKDIR/data/
TFDS_SUBDIR = "tfds"


class CatalogError(ValueError):
  """A dataset name or path that does not resolve to a built dataset."""


def tfds_dir(workdir: str) -> str:
  """Where the data stage of the run in `workdir` writes its TFDS datasets."""
  return os.path.join(workdir, DATA_STAGE, TFDS_SUBDIR)


def tokenizer_dir(workdir: str) -> str:
  """Where the data stage of the run in `workdir` writes its tokenizer.json."""
  return os.path.join(workdir, DATA_STAGE, "tokenizer")


def components(name: str) -> tuple[str, ...]:
  """The datasets a name stands for: a mixture's components, or the dataset itself."""
  if name in MIXTURES:
    return MIXTURES[name]
  if name in DATASETS:
    return (name,)
  raise CatalogError(f"unknown dataset {name!r}; datasets: {', '.join(DATASETS)}; "
                     f"mixtures: {', '.join(MIXTURES)}")


def is_built(directory: str) -> bool:
  """Whether `directory` is a complete dataset version directory (info written last)."""
  return os.path.isfile(os.path.join(directory, "dataset_info.json"))


def built_version_dir(data_dir: str, name: str) -> str | None:
  """The newest complete `<data_dir>/<name>/<version>` directory, or None."""
  root = os.path.join(data_dir, name)
  if not os.path.isdir(root):
    return None
  versions = [v for v in os.listdir(root) if is_built(os.path.join(root, v))]
  if not versions:
    return None
  newest = max(versions, key=lambda v: tuple(int(p) if p.isdigit() else -1
                                            for p in v.split(".")))
  return os.path.join(root, newest)


def is_catalog_name(item: str) -> bool:
  """Whether `item` is a dataset or mixture name (built by the data stage), not a path."""
  return not (os.sep in item or os.path.isdir(item))


def resolve(spec: str | Sequence[str], data_dir: str, *, where: str = "data",
            allow_partial: bool = False, skipped: list[str] | None = None) -> list[str]:
  """Dataset version directories of names and paths (a sequence or a comma string).

  A path (a built dataset directory) is used as is. A name resolves under `data_dir`;
  every component of a mixture must be built, unless `allow_partial`, when components
  the data stage did not build (no input, e.g. no accepted textbook) are left out and
  appended to `skipped`; at least one dataset must be found.
  """
  entries = spec.split(",") if isinstance(spec, str) else list(spec)
  items = [str(item).strip() for item in entries if str(item).strip()]
  if not items:
    raise CatalogError(f"{where}: no dataset named")
  found: list[str] = []
  for item in items:
    if not is_catalog_name(item):
      if not is_built(item):
        raise CatalogError(f"{where}: {item} is not a built dataset directory (no "
                           f"dataset_info.json)")
      found.append(os.path.abspath(item))
      continue
    names = components(item)
    built = {n: built_version_dir(data_dir, n) for n in names}
    missing = [n for n, d in built.items() if d is None]
    dirs = [d for d in built.values() if d is not None]
    if missing and dirs and not allow_partial:
      raise CatalogError(
          f"{where}: {item!r} needs {', '.join(missing)}, which the data stage did not build "
          f"under {data_dir} (no input: see its stats); give it data, name only the built "
          f"components, or set config.data.allow_partial_mixtures=True")
    if skipped is not None:
      skipped.extend(missing)
    if not dirs and not allow_partial:
      raise CatalogError(
          f"{where}: {item!r} is not built under {data_dir}: run the data stage first "
          f"(--stages=data,...) or name a built dataset directory")
    found.extend(dirs)
  if not found:
    raise CatalogError(f"{where}: none of {', '.join(items)} is built under {data_dir}: run "
                       f"the data stage first (--stages=data,...) or name a built dataset "
                       f"directory")
  return list(dict.fromkeys(found))
