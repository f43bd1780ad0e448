"""Where raw documents come from: directories of .py files, JSONL files, Hugging Face
datasets, and the Python installed on this machine (the embedded default).

Every source is a generator of `Record`s that counts into a `StepStats` (pass
`stats=`): in = files or rows seen, out = records yielded, dropped = bad inputs skipped,
by reason, with file:line examples. A bad input (binary file, non-UTF-8 bytes, a file
that cannot be read, an invalid JSONL line, a row without the text field) is skipped
and counted, never fatal; a source that does not exist at all raises SourceError.

`read_source(spec)` picks the source from one string (the `data` stage's config):

    installed                     seeded sample of the running interpreter's standard
                                  library + site-packages (sysconfig "stdlib",
                                  "purelib"/"platlib")
    stdlib | site-packages        one of those roots only
    /path/to/dir                  every .py file under it (sampled with max_files)
    /path/to/file.jsonl[.gz]      one record per line (text_field, license_field)
    /path/to/file.parquet         one record per row, read a row group at a time
    /path/to/shards/*.parquet     the files a glob matches (.parquet, .jsonl, .jsonl.gz),
                                  streamed in sorted order: The Stack / StackOverflow
                                  dumps as downloaded shards
    hf:<dataset>[:<data_dir>][?key=value&...]
                                  a Hugging Face dataset, streamed and sharded; keys:
                                  split, config, data_files, revision, text_field,
                                  license_field (e.g. "hf:bigcode/the-stack-dedup:data/python
                                  ?text_field=content&license_field=max_stars_repo_licenses")

Sharded reading, so that no host holds (or reads) the corpus: `read_source(...,
num_shards=jax.process_count(), shard_index=jax.process_index())` (see `host_shard`)
gives each host a disjoint part, and the parts together are the whole source. File
shards (a glob, a .parquet or .jsonl file) are split like `datasets`'
`split_dataset_by_node`: whole files per host when the file count divides by
num_shards, else every num_shards-th row; `hf:` sources use `split_dataset_by_node`
itself (files on a bucket: `hf:parquet?data_files=gs://bucket/stack/*.parquet`).
Everything is a generator: rows are read as they are consumed.
"""

from __future__ import annotations

import functools
import glob
import os
import sysconfig
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from data_pipeline.records import Record, record_id
from data_pipeline.steps import StepStats
from phi_jax.jsonl import read_jsonl

STDLIB_LICENSE = "PSF-2.0"
DEFAULT_MAX_FILE_BYTES = 5_000_000
_SKIP_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn"})
_NESTED_PACKAGE_DIRS = frozenset({"site-packages", "dist-packages"})
_NUL = b"\0"


class SourceError(ValueError):
  """A source spec or path is wrong (the message names it)."""


def _timed(records: Iterator[Record], stats: StepStats) -> Iterator[Record]:
  """Yields `records`, adding the time spent producing them to stats.elapsed_s."""
  while True:
    start = time.perf_counter()
    try:
      record = next(records)
    except StopIteration:
      stats.elapsed_s += time.perf_counter() - start
      return
    stats.elapsed_s += time.perf_counter() - start
    yield record


# ---------------------------------------------------------------------- .py files
def _read_text_file(path: str, stats: StepStats, max_file_bytes: int | None) -> str | None:
  """The UTF-8 text of a file, or None (counted in stats) when it cannot be used."""
  try:
    if max_file_bytes is not None and os.path.getsize(path) > max_file_bytes:
      stats.drop("too_large_file", f"{path} (> {max_file_bytes} bytes)")
      return None
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    stats.drop("unreadable", f"{path} ({e.strerror or e})")
    return None
  if b"\0" in raw:
    stats.drop("binary", f"{path} (NUL byte at offset {raw.index(_NUL)})")
    return None
  try:
    return raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    stats.drop("not_utf8", f"{path} (byte offset {e.start})")
    return None


def list_python_files(root: str, *, skip_dirs: Sequence[str] = ()) -> list[str]:
  """Sorted absolute paths of the .py files under root (caches and `skip_dirs` pruned;
  symlinked directories are not followed)."""
  if not os.path.isdir(root):
    raise SourceError(f"{root!r} is not a directory")
  skip = _SKIP_DIRS | frozenset(skip_dirs)
  found = []
  for directory, subdirs, files in os.walk(os.path.abspath(root)):
    subdirs[:] = sorted(d for d in subdirs if d not in skip)
    found.extend(os.path.join(directory, name) for name in files if name.endswith(".py"))
  return sorted(found)


def _seeded_sample(paths: list[str], max_files: int | None, seed: int) -> list[str]:
  """`max_files` of `paths` chosen by `seed` (all when max_files is None/0), sorted."""
  if not max_files or max_files >= len(paths):
    return list(paths)
  keep = np.random.default_rng(seed).permutation(len(paths))[:max_files]
  return sorted(paths[i] for i in keep)


def _file_records(paths: Sequence[str], stats: StepStats, max_file_bytes: int | None,
                  license_of: Callable[[str], str | None],
                  meta_of: Callable[[str], dict]) -> Iterator[Record]:
  """Records of `paths` (license and meta per path), counted and timed in stats."""
  return _timed(_file_records_untimed(paths, stats, max_file_bytes, license_of, meta_of),
                stats)


def _file_records_untimed(paths: Sequence[str], stats: StepStats, max_file_bytes: int | None,
                          license_of: Callable[[str], str | None],
                          meta_of: Callable[[str], dict]) -> Iterator[Record]:
  for path in paths:
    stats.records_in += 1
    text = _read_text_file(path, stats, max_file_bytes)
    if text is None:
      continue
    stats.records_out += 1
    yield Record(id=record_id(path), text=text, origin=path, license=license_of(path),
                 meta={"language": "python", **meta_of(path)})


def python_files(root: str, *, max_files: int | None = None, seed: int = 0,
                 license: str | None = None, skip_dirs: Sequence[str] = (),
                 max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
                 stats: StepStats | None = None) -> Iterator[Record]:
  """Records of the .py files under `root` (a seeded sample of `max_files` of them).

  Args:
    root: directory to walk.
    max_files: sample size (None or 0: every file); the sample depends only on the
      sorted file list and `seed`.
    seed: sampling seed.
    license: license to record on every file (None: unknown).
    skip_dirs: directory names not to descend into.
    max_file_bytes: larger files are skipped unread ("too_large_file").
    stats: counts files in/out and skipped ones by reason.
  """
  stats = stats if stats is not None else StepStats("python_files")
  root = os.path.abspath(root)
  paths = _seeded_sample(list_python_files(root, skip_dirs=skip_dirs), max_files, seed)
  return _file_records(paths, stats, max_file_bytes, lambda _: license,
                       lambda p: {"root": root, "path": os.path.relpath(p, root)})


# ---------------------------------------------------------------------- installed Python
def installed_roots(which: str = "installed") -> dict[str, str]:
  """{"stdlib": dir, "site-packages": dir (+ "platlib": dir when it differs)} of the
  running interpreter (sysconfig), or only the stdlib / the site-packages roots for
  which="stdlib" / "site-packages"."""
  paths = sysconfig.get_paths()
  roots = {"stdlib": paths["stdlib"], "site-packages": paths["purelib"]}
  if paths["platlib"] != paths["purelib"]:  # some distributions split them
    roots["platlib"] = paths["platlib"]
  if which == "installed":
    return roots
  if which == "stdlib":
    return {"stdlib": roots["stdlib"]}
  if which == "site-packages":
    return {k: v for k, v in roots.items() if k != "stdlib"}
  raise SourceError(f"unknown installed root {which!r}: expected installed, stdlib or "
                    f"site-packages")


@functools.lru_cache(maxsize=8)
def _installed_files(which: str) -> tuple[tuple[str, str, str], ...]:
  """(root name, root, path) of every .py file of the installed roots, sorted by path.
  The stdlib walk does not enter a site-packages inside it (those are other packages)."""
  files = []
  for name, root in installed_roots(which).items():
    if not os.path.isdir(root):
      continue
    skip = _NESTED_PACKAGE_DIRS if name == "stdlib" else ()
    files.extend((name, root, path) for path in list_python_files(root, skip_dirs=skip))
  return tuple(sorted(files, key=lambda f: f[2]))


@functools.lru_cache(maxsize=1)
def _distribution_licenses() -> dict[str, str]:
  """{top-level import name: license} of the installed distributions (best effort)."""
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  licenses = {}
  for top, dists in importlib.metadata.packages_distributions().items():
    try:
      metadata = importlib.metadata.metadata(dists[0])
    except importlib.metadata.PackageNotFoundError:
      continue
    license = metadata.get("License-Expression")
    if not license:
      classifiers = [c.split(" :: ")[-1] for c in metadata.get_all("Classifier") or []
                     if c.startswith("License ::")]
      license = "; ".join(classifiers) if classifiers else None
    if not license:
      short = (metadata.get("License") or "").strip()
      license = short if short and "\n" not in short and len(short) <= 80 else None
    if license:
      licenses[top] = license
  return licenses


def _installed_license(path: str, root_name: str, root: str) -> str | None:
  if root_name == "stdlib":
    return STDLIB_LICENSE
  top = os.path.relpath(path, root).split(os.sep)[0]
  top = top[:-3] if top.endswith(".py") else top
  return _distribution_licenses().get(top)


def installed_python(max_files: int | None = 500, seed: int = 0, *, which: str = "installed",
                     max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
                     stats: StepStats | None = None) -> Iterator[Record]:
  """A seeded sample of the Python source installed with the running interpreter.

  The embedded default corpus: real code every machine has. The sample depends only on
  the installed file list and `seed`. Records keep their path (origin), root
  (meta["root"]: stdlib or site-packages, meta["path"] relative to it) and license (PSF
  for the standard library; the distribution's license for site-packages when its
  metadata says).

  Args:
    max_files: sample size (None or 0: every file).
    seed: sampling seed.
    which: "installed" (both), "stdlib" or "site-packages".
    max_file_bytes: larger files are skipped unread.
    stats: counts files in/out and skipped ones by reason.
  """
  stats = stats if stats is not None else StepStats(which)
  files = _installed_files(which)
  by_path = {path: (name, root) for name, root, path in files}
  paths = _seeded_sample([path for _, _, path in files], max_files, seed)
  return _file_records(
      paths, stats, max_file_bytes,
      lambda p: _installed_license(p, *by_path[p]),
      lambda p: {"root": by_path[p][0], "path": os.path.relpath(p, by_path[p][1])})


# ---------------------------------------------------------------------- JSONL
def _license_value(value: Any) -> str | None:
  """A license field as one string (lists, as in The Stack, joined with ", ")."""
  if value is None:
    return None
  if isinstance(value, (list, tuple)):
    return ", ".join(str(v) for v in value) or None
  return str(value)


def _row_record(row: Any, origin: str, text_field: str, license_field: str | None,
                meta_fields: Sequence[str], stats: StepStats, where: str) -> Record | None:
  """The Record of one JSONL/HF row, or None (counted) when the row is unusable."""
  if not isinstance(row, dict):
    stats.drop("not_an_object", f"{where} (got {type(row).__name__})")
    return None
  if text_field not in row:
    stats.drop("missing_text_field", f"{where} (no {text_field!r} field)")
    return None
  text = row[text_field]
  if not isinstance(text, str):
    stats.drop("text_not_string", f"{where} ({text_field!r} is {type(text).__name__})")
    return None
  meta = dict(row["meta"]) if isinstance(row.get("meta"), dict) else {}
  meta.update({name: row[name] for name in meta_fields if name in row})
  row_origin = row.get("origin") if isinstance(row.get("origin"), str) else origin
  row_id = row.get("id") if isinstance(row.get("id"), str) else record_id(origin)
  license = _license_value(row.get(license_field)) if license_field else None
  return Record(id=row_id, text=text, origin=row_origin, license=license, meta=meta)


def jsonl_records(path: str, text_field: str = "text", license_field: str | None = "license",
                  *, meta_fields: Sequence[str] = (), max_records: int | None = None,
                  stats: StepStats | None = None) -> Iterator[Record]:
  """One Record per line of a JSONL file (.jsonl or .jsonl.gz).

  A row's `id`, `origin` and `meta` fields are kept when present (so the pipeline's own
  outputs read back unchanged); otherwise origin is `path:line` and id its sha1. Lines
  that are not UTF-8, not JSON, not an object, or have no string `text_field` are
  skipped and counted, with path:line examples.

  Args:
    path: the file.
    text_field: the field holding the document.
    license_field: the field holding its license (None: no license).
    meta_fields: other fields copied into meta.
    max_records: stop after this many records (None: all).
    stats: counts lines in, records out, skipped lines by reason.
  """
  stats = stats if stats is not None else StepStats("jsonl")
  if not os.path.isfile(path):
    raise SourceError(f"JSONL source {path!r} does not exist")
  return _timed(_shard_rows([path], 1, 0, text_field, license_field, meta_fields,
                            max_records, stats), stats)


# ---------------------------------------------------------------------- file shards
_SHARD_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")
_GLOB_CHARS = frozenset("*?[")
PARQUET_BATCH_ROWS = 1024  # rows decoded at a time (a row group is read lazily)


def host_shard() -> tuple[int, int]:
  """(shard_index, num_shards) of this host: its process index and the process count of
  a multi-host job, (0, 1) otherwise (without starting JAX's backends, so that a
  data step that forks workers does it before any JAX thread runs)."""
  from phi_jax import hosts  # pylint: disable=g-import-not-at-top  (jax, when asked)
  return hosts.index(), hosts.count()


def is_file_shards(spec: str) -> bool:
  """True when `spec` is a glob, or a .parquet file (read by `file_shard_records`)."""
  return bool(_GLOB_CHARS & set(spec)) or spec.endswith(".parquet")


def shard_files(pattern: str) -> list[str]:
  """The sorted files a glob (or one path) names that `file_shard_records` reads."""
  paths = sorted(glob.glob(pattern, recursive=True)) if _GLOB_CHARS & set(pattern) else [pattern]
  paths = [p for p in paths if p.endswith(_SHARD_SUFFIXES) and os.path.isfile(p)]
  if not paths:
    raise SourceError(f"source {pattern!r}: no {', '.join(_SHARD_SUFFIXES)} file matches")
  return paths


def file_shard_records(pattern: str, text_field: str = "text",
                       license_field: str | None = "license", *, num_shards: int = 1,
                       shard_index: int = 0, meta_fields: Sequence[str] = (),
                       max_records: int | None = None,
                       stats: StepStats | None = None) -> Iterator[Record]:
  """Records of shard `shard_index` of `num_shards` of the files `pattern` matches.

  Files are taken in sorted order; a host gets whole files when their count divides by
  num_shards (files i with i % num_shards == shard_index), else every num_shards-th row
  of all of them (`datasets.distributed.split_dataset_by_node`'s rule), so the shards
  partition the rows. Parquet is read `PARQUET_BATCH_ROWS` rows at a time, only the
  needed columns; JSONL a line at a time. A row's origin is `path:row` (row 1-based, the
  line number for JSONL). Unusable rows and files (not JSON, no text field, a file that
  cannot be read or has disappeared) are counted in `stats` and skipped.

  Args:
    pattern: a glob ("/data/stack/python/*.parquet") or one .parquet/.jsonl file.
    text_field: the field holding the document ("content" in The Stack).
    license_field: the field holding its license, or None.
    num_shards, shard_index: which shard this reader takes.
    meta_fields: fields copied into meta.
    max_records: stop after this many records.
    stats: counts rows in, records out, unusable rows and files by reason.
  """
  if not 0 <= shard_index < num_shards:
    raise SourceError(f"shard_index {shard_index} is not in [0, num_shards={num_shards})")
  paths = shard_files(pattern)
  stats = stats if stats is not None else StepStats(f"files:{pattern}")
  if len(paths) % num_shards == 0:
    paths, row_stride = paths[shard_index::num_shards], 1
  else:
    row_stride = num_shards
  return _timed(_shard_rows(paths, row_stride, shard_index, text_field, license_field,
                            meta_fields, max_records, stats), stats)


def shard_file_records(paths: Sequence[str], text_field: str = "text",
                       license_field: str | None = "license", *,
                       meta_fields: Sequence[str] = (),
                       stats: StepStats | None = None) -> Iterator[Record]:
  """The records `file_shard_records` makes of `paths` (a run of `shard_files(pattern)`),
  in order, with the same ids, origins and meta: a distributed run reads the files of
  one glob as several shards. A file gone by then is counted, as there."""
  stats = stats if stats is not None else StepStats(f"files:{paths[0] if paths else ''}")
  return _timed(_shard_rows(list(paths), 1, 0, text_field, license_field, meta_fields,
                            None, stats), stats)


def _shard_rows(paths, row_stride, shard_index, text_field, license_field, meta_fields,
                max_records, stats) -> Iterator[Record]:
  position = -1  # index of the row over all files (for row-strided shards)
  for path in paths:
    for number, row in _file_rows(path, (text_field, license_field, *meta_fields), stats):
      position += 1
      if row_stride > 1 and position % row_stride != shard_index:
        continue
      if max_records is not None and stats.records_out >= max_records:
        return
      stats.records_in += 1
      where = f"{path}:{number}"
      record = _row_record(row, where, text_field, license_field, meta_fields, stats, where)
      if record is not None:
        stats.records_out += 1
        yield record


def _file_rows(path: str, columns: Sequence[str | None],
               stats: StepStats) -> Iterator[tuple[int, Any]]:
  """(row number from 1, row) of a .parquet or .jsonl[.gz] file; a file that cannot be
  read is counted ("unreadable_file") and yields nothing more."""
  try:
    if path.endswith(".parquet"):
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
      parquet = pq.ParquetFile(path)
      wanted = [c for c in dict.fromkeys(columns) if c in parquet.schema_arrow.names]
      number = 0
      for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=wanted):
        for row in batch.to_pylist():
          number += 1
          yield number, row
    else:
      def bad_line(reason: str, where: str, detail: str) -> None:
        stats.records_in += 1
        stats.drop({"invalid_utf8": "not_utf8"}.get(reason, reason), f"{where} ({detail})")

      yield from read_jsonl(path, objects=False, on_error=bad_line)
  except (OSError, ValueError) as e:  # gone, truncated, not parquet, not gzip
    stats.drop("unreadable_file", f"{path} ({type(e).__name__}: {str(e)[:200]})")


# ---------------------------------------------------------------------- Hugging Face
def hf_records(name: str, split: str = "train", text_field: str = "content",
               license_field: str | None = "license", *, data_dir: str | None = None,
               data_files: str | Sequence[str] | None = None, config: str | None = None,
               revision: str | None = None, num_shards: int = 1, shard_index: int = 0,
               streaming: bool = True, meta_fields: Sequence[str] = (),
               max_records: int | None = None, stats: StepStats | None = None,
               **load_kwargs: Any) -> Iterator[Record]:
  """Records of a Hugging Face dataset (`datasets.load_dataset`), one shard of it.

  Streamed by default (nothing is downloaded up front); shard `shard_index` of
  `num_shards` is taken with `datasets.distributed.split_dataset_by_node` (whole files
  per shard when their count divides evenly, else every num_shards-th row), or
  `Dataset.shard` when not streaming. The shards partition the dataset. Origin is
  `hf:<name>[:<data_dir>]/<split>#<shard>/<num_shards>:<row in shard>`.

  Args:
    name: dataset id or builder ("bigcode/the-stack-dedup", "json", "parquet", a dir).
    split: split name.
    text_field: the field holding the document ("content" in The Stack).
    license_field: the field holding its license ("max_stars_repo_licenses" in The
      Stack; lists are joined with ", "), or None.
    data_dir, data_files, config, revision, **load_kwargs: passed to load_dataset.
    num_shards, shard_index: which shard this reader takes.
    streaming: stream (IterableDataset) or load (Dataset).
    meta_fields: fields copied into meta (e.g. "max_stars_repo_name", "max_stars_repo_path").
    max_records: stop after this many records.
    stats: counts rows in, records out, unusable rows by reason.
  """
  if not 0 <= shard_index < num_shards:
    raise SourceError(f"shard_index {shard_index} is not in [0, num_shards={num_shards})")
  stats = stats if stats is not None else StepStats(f"hf:{name}")
  return _timed(_hf_rows(name, split, text_field, license_field, data_dir, data_files, config,
                         revision, num_shards, shard_index, streaming, meta_fields,
                         max_records, stats, load_kwargs), stats)


def _hf_rows(name, split, text_field, license_field, data_dir, data_files, config, revision,
             num_shards, shard_index, streaming, meta_fields, max_records, stats,
             load_kwargs) -> Iterator[Record]:
  import datasets  # pylint: disable=g-import-not-at-top  (slow import; only when used)
  from datasets.distributed import split_dataset_by_node  # pylint: disable=g-import-not-at-top
  kwargs = dict(load_kwargs)
  for key, value in (("data_dir", data_dir), ("data_files", data_files),
                     ("revision", revision)):
    if value is not None:
      kwargs[key] = value
  _check_hub_reachable(name)
  try:
    dataset = datasets.load_dataset(name, config, split=split, streaming=streaming, **kwargs)
  except (ConnectionError, TimeoutError) as e:
    raise SourceError(_offline_message(name, e)) from None
  if num_shards > 1:
    if streaming:
      dataset = split_dataset_by_node(dataset, rank=shard_index, world_size=num_shards)
    else:
      dataset = dataset.shard(num_shards=num_shards, index=shard_index, contiguous=False)
  prefix = f"hf:{name}" + (f":{data_dir}" if data_dir else "") + f"/{split}"
  for row_number, row in enumerate(dataset):
    if max_records is not None and stats.records_out >= max_records:
      return
    stats.records_in += 1
    origin = f"{prefix}#{shard_index}/{num_shards}:{row_number}"
    record = _row_record(row, origin, text_field, license_field, meta_fields, stats, origin)
    if record is not None:
      record.origin = origin  # a dataset's own "origin" column is not ours to trust
      record.id = record_id(origin)
      stats.records_out += 1
      yield record


def _offline_message(name: str, error: BaseException) -> str:
  return (f"hf:{name} is a Hugging Face hub dataset and the hub is unreachable "
          f"({type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}); "
          f"run online, or point config.data.sources at local data: a directory of .py files, "
          f"a .jsonl[.gz] file, or 'hf:json?data_files=...' over downloaded shards")


def _check_hub_reachable(name: str, timeout_s: float = 15.0) -> None:
  """Fails fast, with one clear message, when a hub dataset cannot be reached (instead
  of `datasets`' retries and traceback). Local builders and directories are not hub
  datasets and are not checked."""
  if "/" not in name or os.path.exists(name):
    return
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  try:
    huggingface_hub.HfApi().dataset_info(name, timeout=timeout_s)
  except huggingface_hub.errors.RepositoryNotFoundError:
    raise SourceError(f"hf:{name}: no such dataset on the Hugging Face hub (or it is "
                      f"gated: log in with `huggingface-cli login`)") from None
  except huggingface_hub.errors.HfHubHTTPError:
    return  # reachable; datasets reports what it does not like
  except Exception as e:  # pylint: disable=broad-except  (offline mode, DNS, connection)
    raise SourceError(_offline_message(name, e)) from None


# ---------------------------------------------------------------------- dispatcher
_HF_KEYS = ("split", "config", "data_files", "revision", "text_field", "license_field")


def parse_hf_spec(spec: str) -> dict[str, Any]:
  """{"name", "data_dir", and any of _HF_KEYS} of "hf:<name>[:<data_dir>][?k=v&...]"."""
  if not spec.startswith("hf:") or len(spec) <= 3:
    raise SourceError(f"source {spec!r}: expected hf:<dataset>[:<data_dir>][?key=value&...]")
  body, _, query = spec[3:].partition("?")
  name, _, data_dir = body.partition(":")
  parsed: dict[str, Any] = {"name": name, "data_dir": data_dir or None}
  for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False):
    if key not in _HF_KEYS:
      raise SourceError(f"source {spec!r}: unknown option {key!r}; expected one of "
                        f"{', '.join(_HF_KEYS)}")
    parsed[key] = value
  if not name:
    raise SourceError(f"source {spec!r}: no dataset name after hf:")
  return parsed


def read_source(spec: str, *, max_files: int | None = None, seed: int = 0,
                text_field: str | None = None, license_field: str | None = None,
                num_shards: int = 1, shard_index: int = 0, max_records: int | None = None,
                stats: StepStats | None = None) -> Iterator[Record]:
  """Records of the source named by `spec` (syntax in the module docstring).

  Args:
    spec: "installed", "stdlib", "site-packages", a directory, a .jsonl[.gz] file, or
      "hf:...".
    max_files: sample size for file sources (None: all).
    seed: sampling seed for file sources.
    text_field, license_field: field names for JSONL/HF (defaults: JSONL "text" and
      "license", HF "content" and "license"; the hf: spec's own options win).
    num_shards, shard_index: this reader's shard of an hf: source or of file shards
      (see `host_shard`); other sources are not sharded.
    max_records: cap for JSONL/HF sources.
    stats: counts the source's inputs, records and skipped inputs.
  """
  if spec in ("installed", "stdlib", "site-packages"):
    return installed_python(max_files, seed, which=spec, stats=stats)
  if spec.startswith("hf:"):
    options = parse_hf_spec(spec)
    name, data_dir = options.pop("name"), options.pop("data_dir")
    options.setdefault("text_field", text_field or "content")
    options.setdefault("license_field", license_field or "license")
    return hf_records(name, data_dir=data_dir, num_shards=num_shards,
                      shard_index=shard_index, max_records=max_records, stats=stats, **options)
  if is_file_shards(spec) or (num_shards > 1 and spec.endswith((".jsonl", ".jsonl.gz"))):
    return file_shard_records(spec, text_field or "text", license_field or "license",
                              num_shards=num_shards, shard_index=shard_index,
                              max_records=max_records, stats=stats)
  if spec.endswith((".jsonl", ".jsonl.gz")):
    return jsonl_records(spec, text_field or "text", license_field or "license",
                         max_records=max_records, stats=stats)
  if os.path.isdir(spec):
    return python_files(spec, max_files=max_files, seed=seed, stats=stats)
  raise SourceError(f"source {spec!r}: expected installed, stdlib, site-packages, a "
                    f"directory of .py files, a .jsonl[.gz] or .parquet file, a glob of "
                    f"them, or hf:<dataset>[:<data_dir>]")


# ------------------------------------------- .py file sources split into engine shards
def file_source_paths(spec: str, *, max_files: int | None = None,
                      seed: int = 0) -> list[str] | None:
  """The sampled .py files `read_source(spec, max_files=, seed=)` reads, in its order,
  for a file source (installed, stdlib, site-packages, a directory); None for the other
  sources. A distributed run splits this list into shards read by `file_records`."""
  if spec in ("installed", "stdlib", "site-packages"):
    return _seeded_sample([path for _, _, path in _installed_files(spec)], max_files, seed)
  if not spec.startswith("hf:") and not spec.endswith((".jsonl", ".jsonl.gz")) \
      and os.path.isdir(spec):
    return _seeded_sample(list_python_files(spec), max_files, seed)
  return None


def file_records(spec: str, paths: Sequence[str], *,
                 max_file_bytes: int | None = DEFAULT_MAX_FILE_BYTES,
                 stats: StepStats | None = None) -> Iterator[Record]:
  """The records `read_source(spec)` makes of `paths` (a slice of `file_source_paths`):
  the same ids, licenses and meta."""
  stats = stats if stats is not None else StepStats(spec)
  if spec in ("installed", "stdlib", "site-packages"):
    by_path = {path: (name, root) for name, root, path in _installed_files(spec)}
    return _file_records(
        paths, stats, max_file_bytes,
        lambda p: _installed_license(p, *by_path[p]),
        lambda p: {"root": by_path[p][0], "path": os.path.relpath(p, by_path[p][1])})
  root = os.path.abspath(spec)
  return _file_records(paths, stats, max_file_bytes, lambda _: None,
                       lambda p: {"root": root, "path": os.path.relpath(p, root)})
