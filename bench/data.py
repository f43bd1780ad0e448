"""Benchmark: the grain training loader's tokens/s, and files/s of the data steps.

    python bench/data.py [--seq_len 2048] [--batch 8] [--batches 200] [--workers 0,16]
                         [--max_files 4000] [--no_record]

Builds a token dataset from the Python standard library's .py files (byte-level
tokenizer, written with the TF-free `token_dataset.write_records`) in a temporary
directory, then times `data_pipeline.loader.make_loader` (shuffled, packed, one host)
for each worker count: tokens/s = batches x batch x seq_len / seconds, after the first
batch (whose time, worker start-up included, is reported apart). The ratio compares
with what one H100 consumes training phi-1 (~45k tokens/s): > 1 means the loader keeps
up. Rows go to BENCHMARKS.md.

Data steps: `data_steps()` maps a step name to a function over a list of file texts;
each is timed over the same stdlib files and reported as files/s in its own table:
tokenization, each filter and dedup step of the data stage, the heuristic annotator,
exercise mining and BPE training.

Throughput (`throughput_rows()`, its own table): each optimised step next to its frozen
"before" copy (bench/data_before.py), on the same files in the same run, as files/s and
MB/s on one process; the whole curation chain against one `ast.parse` per file (its
floor: every file is parsed once); tokenization into token arrays against `tokenizers`'
own `encode_batch`; and embedding documents/s per device (the random-init embedder of
the tiny config, on this host's devices).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

from bench import record  # noqa: E402  pylint: disable=g-import-not-at-top

H100_PHI1_TOKENS_PER_S = 45_000  # one H100 training phi-1 (1.3B) consumes about this

LOADER_SECTION = "## bench/data.py: grain loader throughput"
LOADER_COLUMNS = ("date", "machine", "grain", "documents", "seq_len", "batch", "workers",
                  "batches", "first batch s", "tokens/s", "x H100 phi-1 need")
LOADER_INTRO = f"""
`data_pipeline.loader` over the stdlib's .py files (byte-level tokens, shuffled, packed,
one host): tokens/s after the first batch (whose time, worker start-up included, is
shown apart). `x H100 phi-1 need` = tokens/s / {H100_PHI1_TOKENS_PER_S:,} (the tokens/s one H100
consumes training phi-1); > 1: the loader keeps up. workers 0 = in-process (one core).

""" + record.table_header(LOADER_COLUMNS)

THROUGHPUT_SECTION = "## bench/data.py: data step throughput, before and after"
THROUGHPUT_COLUMNS = ("date", "machine", "step", "files", "MB", "before files/s",
                      "after files/s", "after MB/s", "speed-up", "reference", "x reference")
THROUGHPUT_INTRO = """
Each optimised data step next to its frozen pre-optimisation copy (bench/data_before.py)
on the same stdlib .py files in one process, per core: files/s of CPU time (all threads'
core-seconds, so the Rust tokenizer's threads count too; the fastest of 3 runs, before,
after and reference in turn), after MB/s = input MB / after CPU seconds.
`reference`: the limit the step is compared with in the same run (one plain `ast.parse`
per file, the cyclic GC running, for the curation chain: `parse_python` itself runs it
with the GC paused, its own row; `tokenizers`' own `encode_batch` for tokenization); `x
reference` = step seconds / reference seconds (1.0 = at the limit). Embedding: documents/s
per device of the tiny random-init embedder (wall time; bucketed, batch split over the
devices; max_len 512, batch 64).

""" + record.table_header(THROUGHPUT_COLUMNS)

STEPS_SECTION = "## bench/data.py: data steps, files/s"
STEPS_COLUMNS = ("date", "machine", "step", "files", "MB", "seconds", "files/s")
STEPS_INTRO = """
Each registered data step (`bench/data.py: data_steps()`) run once over the same stdlib
.py files, in one process.

""" + record.table_header(STEPS_COLUMNS)


# ---------------------------------------------------------------------- data steps
def _tokenize_byte_level(texts: Sequence[str]) -> None:
  from phi_jax.tokenizer import byte_level  # pylint: disable=g-import-not-at-top
  byte_level().encode_batch(list(texts))


def _records(texts: Sequence[str]) -> list:
  from data_pipeline.records import Record, record_id  # pylint: disable=g-import-not-at-top
  return [Record(id=record_id(f"bench:{i}"), text=t, origin=f"bench:{i}")
          for i, t in enumerate(texts)]


def _run_step(make_step: Callable[[], object]) -> Callable[[Sequence[str]], object]:
  """A data_pipeline Step run over the texts as records (records built outside the timing
  would be fairer, but building them is ~1% of the cheapest step)."""
  return lambda texts: sum(1 for _ in make_step()(_records(texts)))


def data_steps() -> dict[str, Callable[[Sequence[str]], object]]:
  """Step name -> function over the file texts (only its time counts)."""
  # pylint: disable=g-import-not-at-top
  from data_pipeline import annotate, dedup, exercises, filters
  from data_pipeline.tokenizer import train_bpe
  return {
      "tokenize (byte-level)": _tokenize_byte_level,
      "size filter": _run_step(filters.SizeFilter),
      "parse filter (ast)": _run_step(filters.ParseFilter),
      "autogenerated filter": _run_step(filters.AutogeneratedFilter),
      "data-dump filter": _run_step(filters.DataDumpFilter),
      "exact dedup": _run_step(dedup.ExactDedup),
      "MinHash near-dedup (128 perm, 5-grams)": _run_step(dedup.MinHashDedup),
      "heuristic annotation": lambda texts: [annotate.HeuristicAnnotator().score(t)
                                             for t in texts],
      "exercise mining": _run_step(exercises.ExerciseMiner),
      "BPE training (vocab 4096)": lambda texts: train_bpe(texts, 4096, show_progress=False),
  }


def time_data_steps(texts: Sequence[str],
                    steps: dict[str, Callable[[Sequence[str]], object]]) -> list[tuple]:
  """(step, files, MB, seconds, files/s) of each step run once over texts."""
  megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
  rows = []
  for name, step in steps.items():
    start = time.perf_counter()
    step(texts)
    seconds = time.perf_counter() - start
    rows.append((name, len(texts), megabytes, seconds, len(texts) / seconds))
  return rows


# ---------------------------------------------------------------------- throughput
def _timed(function: Callable[[], object], clock: Callable[[], float] = time.process_time
           ) -> float:
  """Seconds `function` takes: CPU seconds of this process by default (all its threads:
  core-seconds, little moved by other jobs on a shared machine), or wall seconds."""
  start = clock()
  function()
  return clock() - start


REPEATS = 3  # before, after and reference alternate this many times; the fastest run of
# each counts (alternating, so a change in the machine's load, or in how many objects the
# garbage collector traverses, moves all three alike)


def _best(function: Callable[[], object], before_each: Callable[[], None] = lambda: None,
          clock: Callable[[], float] = time.process_time) -> float:
  return _best_alternating([function], before_each, clock)[0]


def _best_alternating(functions: Sequence[Callable[[], object]],
                      before_each: Callable[[], None] = lambda: None,
                      clock: Callable[[], float] = time.process_time) -> list[float]:
  """The fastest of REPEATS runs of each function, the functions run in turn."""
  seconds = [[] for _ in functions]
  for _ in range(REPEATS):
    for function, times in zip(functions, seconds):
      before_each()
      times.append(_timed(function, clock))
  return [min(times) for times in seconds]


def _chain(make_steps: Callable[[], list], texts: Sequence[str]) -> Callable[[], object]:
  from data_pipeline.steps import run_steps  # pylint: disable=g-import-not-at-top
  records = _records(texts)
  return lambda: sum(1 for _ in run_steps(records, make_steps()))


def _plain_parse(text: str):
  """ast.parse as a plain call would run it (None for invalid source)."""
  import ast  # pylint: disable=g-import-not-at-top
  import warnings  # pylint: disable=g-import-not-at-top
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      return ast.parse(text)
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    return None


def _fresh_parses() -> None:
  from data_pipeline import filters  # pylint: disable=g-import-not-at-top
  filters.parse_python.cache_clear()
  filters.text_lines.cache_clear()


def throughput_rows(texts: Sequence[str], embed_docs: int = 96) -> list[tuple]:
  """(step, files, MB, before s, after s, reference name, reference s) per compared step;
  `before` None where there is no before (embedding), reference '' where none."""
  # pylint: disable=g-import-not-at-top
  from bench import data_before as before
  from data_pipeline import exercises, filters
  from data_pipeline.tokenizer import encode_ids, train_bpe
  from phi_jax.tokenizer import byte_level
  texts = list(texts)
  megabytes = sum(len(t.encode("utf-8")) for t in texts) / 1e6
  # the floor: one plain ast.parse per file (the cyclic GC running, as anywhere)
  parse = ("ast.parse", lambda: all(_plain_parse(t) or True for t in texts))
  rows = []

  def compare(name, before_fn, after_fn, reference=("", None)):
    ref_name, ref_fn = reference
    timed = [before_fn, after_fn] + ([ref_fn] if ref_fn else [])
    before_s, after_s, *ref_s = _best_alternating(timed, _fresh_parses)
    rows.append((name, len(texts), megabytes, before_s, after_s, ref_name,
                 ref_s[0] if ref_s else None))

  compare("parse_python (ast.parse with the cyclic GC paused)",
          lambda: all(_plain_parse(t) or True for t in texts),
          lambda: all(filters.parse_python_uncached(t) or True for t in texts), parse)
  compare("parse filter", _chain(lambda: [before.ParseFilterBefore()], texts),
          _chain(lambda: [filters.ParseFilter()], texts), parse)
  compare("parse + data-dump filters",
          _chain(lambda: [before.ParseFilterBefore(), before.DataDumpFilterBefore()], texts),
          _chain(lambda: [filters.ParseFilter(), filters.DataDumpFilter()], texts), parse)
  compare("MinHash near-dedup", _chain(lambda: [before.MinHashDedupBefore()], texts),
          _chain(lambda: [before.curation_steps_after()[-1]], texts))
  compare("curation chain (size, parse, autogen, data-dump, exact, MinHash)",
          _chain(before.curation_steps_before, texts),
          _chain(before.curation_steps_after, texts), parse)
  compare("curation chain + exercise mining",
          _chain(lambda: before.curation_steps_before() + [before.ExerciseMinerBefore()],
                 texts),
          _chain(lambda: before.curation_steps_after() + [exercises.ExerciseMiner()], texts))
  for label, tokenizer in (("byte-level", byte_level()),
                           ("BPE 4096", train_bpe(texts[:300], 4096, show_progress=False))):
    compare(f"tokenize to arrays ({label})",
            lambda: before.tokenize_before(tokenizer, texts),
            lambda: [np.asarray(ids, np.int32) for ids in encode_ids(tokenizer, texts)],
            ("tokenizers encode_batch",
             lambda: tokenizer.backend.encode_batch(texts, add_special_tokens=False)))
  rows.extend(_embedding_rows(texts[:embed_docs]))
  return rows


def _embedding_rows(texts: Sequence[str]) -> list[tuple]:
  """Documents/s per device (wall time) of the tiny config's random-init embedder
  (max_len 512)."""
  # pylint: disable=g-import-not-at-top
  import jax

  from configs import tiny
  from data_pipeline import embed
  model = tiny.get_config().model.to_dict()
  rows = []
  for dtype in ("float32", "bfloat16"):
    embedder = embed.make_embedder("", model, max_len=512, dtype=dtype)
    embedder.embed(list(texts[:64]), batch_size=64, max_len=512, progress=False)  # compile
    seconds = _best(lambda: embedder.embed(list(texts), batch_size=64, max_len=512,
                                           progress=False), clock=time.perf_counter)
    devices = len(embedder.devices)
    name = (f"embed ({dtype}, {devices} {jax.default_backend()} device(s), "
            f"docs/s per device)")
    rows.append((name, len(texts), sum(len(t.encode()) for t in texts) / 1e6, None,
                 seconds * devices, "", None))
  return rows


def print_throughput(rows: list[tuple]) -> None:
  print(f"\n{'throughput (one process)':<66}{'files':>6}{'before/s':>10}{'after/s':>10}"
        f"{'MB/s':>7}{'x':>6}  reference")
  for name, files, megabytes, before_s, after_s, ref_name, ref_s in rows:
    before = f"{files / before_s:,.0f}" if before_s else "-"
    speedup = f"{before_s / after_s:.1f}" if before_s else "-"
    ref = f"{ref_name}: {files / ref_s:,.0f}/s, x{after_s / ref_s:.2f}" if ref_s else ""
    print(f"{name:<66}{files:>6}{before:>10}{files / after_s:>10,.0f}"
          f"{megabytes / after_s:>7.1f}{speedup:>6}  {ref}")


def record_throughput(rows: list[tuple], machine: str) -> None:
  for name, files, megabytes, before_s, after_s, ref_name, ref_s in rows:
    record.append_row(THROUGHPUT_SECTION, THROUGHPUT_INTRO, record.markdown_row([
        record.now(), machine, name, files, f"{megabytes:.1f}",
        f"{files / before_s:,.0f}" if before_s else "-", f"{files / after_s:,.0f}",
        f"{megabytes / after_s:.2f}", f"{before_s / after_s:.1f}" if before_s else "-",
        f"{ref_name} {files / ref_s:,.0f}/s" if ref_s else "-",
        f"{after_s / ref_s:.2f}" if ref_s else "-"]))


# ---------------------------------------------------------------------- loader
def stdlib_texts(max_files: int) -> list[tuple[str, str]]:
  """(origin, text) of a seeded sample of up to max_files readable stdlib .py files."""
  from data_pipeline import sources  # pylint: disable=g-import-not-at-top
  return [(r.origin, r.text) for r in sources.installed_python(max_files, 0, which="stdlib")]


def build_dataset(texts: list[tuple[str, str]], data_dir: str) -> tuple[str, int]:
  """A byte-level token dataset of the texts (TF-free writer); (dir, eos id)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from data_pipeline import token_dataset  # pylint: disable=g-import-not-at-top
  from phi_jax.tokenizer import byte_level  # pylint: disable=g-import-not-at-top
  tokenizer = byte_level()
  ids = tokenizer.encode_batch([text for _, text in texts])
  records = [token_dataset.TokenRecord(id=path, tokens=np.asarray(t, np.int32), origin=path)
             for (path, _), t in zip(texts, ids)]
  return token_dataset.write_records("bench_stdlib", {"train": records}, data_dir,
                                     tokenizer), tokenizer.eos_id


def time_loader(dataset_dir: str, eos_id: int, args: argparse.Namespace,
                workers: int) -> tuple[float, float]:
  """(seconds to the first batch, tokens/s of the next args.batches batches)."""
  from data_pipeline import loader  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  it = loader.make_loader([dataset_dir], split="train", seq_len=args.seq_len,
                          batch_size=args.batch, seed=0, eos_id=eos_id, shard_index=0,
                          shard_count=1, worker_count=workers)
  try:
    next(it)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.batches):
      next(it)
    seconds = time.perf_counter() - start
  finally:
    it.close()
  return first, args.batches * args.batch * args.seq_len / seconds


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seq_len", type=int, default=2048)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--batches", type=int, default=200, help="timed batches per run")
  parser.add_argument("--workers", default=f"0,{os.cpu_count()}",
                      help="comma-separated worker counts to time (0 = in-process)")
  parser.add_argument("--max_files", type=int, default=4000, help="stdlib .py files to use")
  parser.add_argument("--no_record", action="store_true")
  parser.add_argument("--only_throughput", action="store_true",
                      help="only the before/after throughput table")
  parser.add_argument("--throughput_files", type=int, default=400,
                      help="stdlib files of the before/after throughput table")
  args = parser.parse_args(argv)
  worker_counts = [int(w) for w in args.workers.split(",")]

  import grain  # pylint: disable=g-import-not-at-top
  machine = record.cpu_description()
  texts = stdlib_texts(args.max_files)
  throughput = throughput_rows([text for _, text in texts[:args.throughput_files]])
  print_throughput(throughput)
  if args.only_throughput:
    if not args.no_record:
      record_throughput(throughput, machine)
    return
  step_rows = time_data_steps([text for _, text in texts], data_steps())
  with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
    dataset_dir, eos_id = build_dataset(texts, tmp)
    results = [(w, *time_loader(dataset_dir, eos_id, args, w)) for w in worker_counts]

  print(f"\n{len(texts)} stdlib files, seq_len={args.seq_len}, batch={args.batch}, "
        f"{args.batches} timed batches; need: {H100_PHI1_TOKENS_PER_S:,} tokens/s")
  print(f"{'workers':>8}{'first batch s':>15}{'tokens/s':>14}{'x need':>9}")
  for workers, first, tokens_s in results:
    print(f"{workers:>8}{first:>15.2f}{tokens_s:>14,.0f}{tokens_s / H100_PHI1_TOKENS_PER_S:>9.1f}")
  print(f"\n{'data step':<40}{'files':>7}{'MB':>8}{'seconds':>9}{'files/s':>10}")
  for name, files, megabytes, seconds, files_s in step_rows:
    print(f"{name:<40}{files:>7}{megabytes:>8.1f}{seconds:>9.2f}{files_s:>10,.0f}")

  if args.no_record:
    return
  record_throughput(throughput, machine)
  for workers, first, tokens_s in results:
    row = record.markdown_row([
        record.now(), machine, grain.__version__, len(texts), args.seq_len, args.batch,
        workers, args.batches, f"{first:.2f}", f"{tokens_s:,.0f}",
        f"{tokens_s / H100_PHI1_TOKENS_PER_S:.1f}"])
    record.append_row(LOADER_SECTION, LOADER_INTRO, row)
  for name, files, megabytes, seconds, files_s in step_rows:
    row = record.markdown_row([record.now(), machine, name, files, f"{megabytes:.1f}",
                               f"{seconds:.2f}", f"{files_s:,.0f}"])
    record.append_row(STEPS_SECTION, STEPS_INTRO, row)
  print(f"\nappended to {record.BENCHMARKS_FILE}")


if __name__ == "__main__":
  main()
