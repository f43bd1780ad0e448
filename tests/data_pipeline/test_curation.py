"""The curate step in-process and on datatrove's executor (2 workers): the same curated
documents, in the same order, and the same per-step stats, on a sample of the standard
library plus planted near- and exact copies placed in different shards and bad inputs
(undecodable bytes, a 50 MB one-line file, a JSONL line that is not JSON, a source file
that is gone when it is read), each counted by reason and named in the log."""

import contextlib
import dataclasses
import io
import json
import os
import re
import sysconfig

import pytest

from data_pipeline import curation
from data_pipeline.records import read_records, record_id
from data_pipeline.steps import StepStats

pytest.importorskip("datatrove")

STDLIB = sysconfig.get_paths()["stdlib"]
FIFTY_MB = 50 * 2**20
TIMING = ("elapsed_s", "records_per_s")


def _stdlib(name):
  with open(os.path.join(STDLIB, name), encoding="utf-8") as f:
    return f.read()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """Sources: a stdlib sample, a directory of planted copies and bad files (2 files per
  shard: each copy lands in another shard than its original), a JSONL file with bad
  lines, and a JSONL file that no longer exists."""
  root = tmp_path_factory.mktemp("corpus")
  planted = root / "planted"
  planted.mkdir()
  colorsys, heapq = _stdlib("colorsys.py"), _stdlib("heapq.py")
  files = {  # sorted names: shards [a, b], [c, d], [e, f]
      "a_colorsys.py": colorsys,
      "b_heapq.py": heapq,
      "c_bad_bytes.py": b"name = '\xff\xfe caf\xe9'\n",
      "d_one_line.py": b"x = " + b"1" * FIFTY_MB,
      "e_heapq_reformatted.py": heapq.replace("\n\n", "\n\n\n").replace("    ", "\t"),
      "f_colorsys_renamed.py": re.sub(r"\bmaxc\b", "max_component", colorsys),
  }
  for name, content in files.items():
    (planted / name).write_bytes(content if isinstance(content, bytes)
                                 else content.encode())
  rows = root / "rows.jsonl"
  with open(rows, "wb") as f:
    f.write(json.dumps({"text": _stdlib("bisect.py"), "license": "PSF-2.0"}).encode() + b"\n")
    f.write(b'{"text": "def f(:\n')  # not JSON
    f.write(b'{"text": "caf\xe9"}\n')  # not UTF-8
    f.write(json.dumps({"text": "y = 2\n" + "#" * FIFTY_MB}).encode() + b"\n")  # 50 MB line
  return {"specs": ["stdlib", str(planted), str(rows), str(root / "gone.jsonl")],
          "planted": planted, "rows": str(rows), "gone": str(root / "gone.jsonl")}


SETTINGS = curation.CurationSettings(max_files=24, seed=3, near_dup_threshold=0.7)


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
  """{runner: (result, output bytes, log)} of both runners over the corpus."""
  out = tmp_path_factory.mktemp("out")
  capture = {}
  for runner in ("local", "datatrove"):
    log_path = out / f"{runner}.log"
    stream = io.StringIO()
    with contextlib.redirect_stderr(stream):
      result = curation.curate(corpus["specs"], SETTINGS, str(out / f"{runner}.jsonl"),
                               runner=runner, workers=2, shard_files=2,
                               work_dir=str(out / "shards"))
    log_path.write_text(stream.getvalue())
    capture[runner] = (result, (out / f"{runner}.jsonl").read_bytes(), stream.getvalue())
  return capture


def _without_timing(stats):
  return [{k: v for k, v in step.items() if k not in TIMING} for step in stats]


def _step(stats, name):
  (step,) = [s for s in stats if s["name"] == name]
  return step


def test_both_runners_keep_the_same_documents_with_the_same_stats(runs):
  local, _, _ = runs["local"]
  engine, _, _ = runs["datatrove"]
  assert runs["local"][1] == runs["datatrove"][1]  # same records, same order: same tokens
  assert local["documents"] == engine["documents"] > 20
  assert _without_timing(local["stats"]) == _without_timing(engine["stats"])
  assert engine["shards"] > 10  # the stdlib sample in 12 shards, the planted files in 3
  ids = [r["id"] for r in map(json.loads, runs["local"][1].splitlines())]
  assert len(ids) == len(set(ids))
  for step in local["stats"]:
    if step["name"] not in ("exact_dedup", "near_dedup") and not step["name"].startswith(
        "source:"):
      assert step["in"] == step["out"] + step["dropped_total"], step


def test_bad_inputs_are_counted_by_reason_and_named_in_the_log(runs, corpus):
  planted, rows, gone = str(corpus["planted"]), corpus["rows"], corpus["gone"]
  for runner in ("local", "datatrove"):
    result, _, log = runs[runner]
    stats = result["stats"]
    assert _step(stats, f"source:{planted}")["dropped"] == {"not_utf8": 1, "too_large_file": 1}
    assert _step(stats, f"source:{rows}")["dropped"] == {"invalid_json": 1, "not_utf8": 1}
    assert _step(stats, f"source:{rows}")["out"] == 2
    assert _step(stats, f"source:{gone}")["dropped"] == {"missing_shard": 1}
    assert _step(stats, "size")["dropped"]["too_long"] >= 1  # the 50 MB JSONL row
    for bad in (f"not_utf8: {planted}/c_bad_bytes.py", f"too_large_file: {planted}/d_one_line.py",
                f"invalid_json: {rows}:2", f"not_utf8: {rows}:3", f"missing_shard: {gone}"):
      assert bad in log, (runner, bad)


def test_near_and_exact_copies_in_different_shards_are_found(runs, corpus):
  planted = str(corpus["planted"])
  sampled = curation.plan_shards(["stdlib"], SETTINGS)[0].paths
  assert not [p for p in sampled if p.endswith(("colorsys.py", "heapq.py"))]
  shards = curation.plan_shards([planted], SETTINGS, shard_files=2)
  shard_of = {os.path.basename(p): s.index for s in shards for p in s.paths}
  expected = {}
  for kind, original, copy, sign in (
      ("near_dedup", "a_colorsys.py", "f_colorsys_renamed.py", "~"),
      ("exact_dedup", "b_heapq.py", "e_heapq_reformatted.py", "=")):
    assert shard_of[original] != shard_of[copy]
    keeper, dropped = sorted((original, copy), key=lambda n: record_id(f"{planted}/{n}"))
    expected[kind] = f"{planted}/{dropped} {sign} {planted}/{keeper}"
  for runner in ("local", "datatrove"):
    result, _, _ = runs[runner]
    for kind, example in expected.items():
      assert any(e.endswith(example) for e in _step(result["stats"], kind)["examples"]), \
          (runner, kind, _step(result["stats"], kind)["examples"])
    kept = {r.origin for r in read_records(result["out"])}
    for pair in (("a_colorsys.py", "f_colorsys_renamed.py"),
                 ("b_heapq.py", "e_heapq_reformatted.py")):
      assert len({f"{planted}/{n}" for n in pair} & kept) == 1, (runner, pair)


def test_a_glob_of_data_files_is_one_engine_shard_per_file_with_the_same_result(tmp_path):
  """The Stack as downloaded shards: a glob of parquet and JSONL files is read by the
  engine as one shard per file, and both runners keep the same documents with the same
  stats, a near-copy in another file and a bad line included."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  data = tmp_path / "stack"
  data.mkdir()
  colorsys, heapq, bisect = _stdlib("colorsys.py"), _stdlib("heapq.py"), _stdlib("bisect.py")
  pq.write_table(pa.table({"content": [colorsys, heapq], "license": ["PSF-2.0", "MIT"]}),
                 data / "part-000.parquet")
  with open(data / "part-001.jsonl", "w") as f:
    f.write(json.dumps({"content": bisect, "license": "PSF-2.0"}) + "\n")
    f.write("{not json\n")
    f.write(json.dumps({"content": re.sub(r"\bmaxc\b", "max_component", colorsys)}) + "\n")
  pq.write_table(pa.table({"content": [heapq.replace("    ", "\t")], "license": [None]}),
                 data / "part-002.parquet")
  spec = str(data / "part-*")
  settings = curation.CurationSettings(seed=3, near_dup_threshold=0.7, text_field="content")
  shards = curation.plan_shards([spec], settings)
  assert [s.paths for s in shards] == [(str(data / f"part-00{i}.{ext}"),) for i, ext in
                                       enumerate(("parquet", "jsonl", "parquet"))]
  capped = dataclasses.replace(settings, max_files=2)  # a cap over all files: one shard
  assert [s.paths for s in curation.plan_shards([spec], capped)] == [()]
  out = {}
  for runner in ("local", "datatrove"):
    with contextlib.redirect_stderr(io.StringIO()):
      out[runner] = curation.curate([spec], settings, str(tmp_path / f"{runner}.jsonl"),
                                    runner=runner, workers=2, work_dir=str(tmp_path / "w"))
  local, engine = out["local"], out["datatrove"]
  assert (tmp_path / "local.jsonl").read_bytes() == (tmp_path / "datatrove.jsonl").read_bytes()
  assert _without_timing(local["stats"]) == _without_timing(engine["stats"])
  assert engine["shards"] == 3
  source = _step(engine["stats"], f"source:{spec}")
  assert source["dropped"] == {"invalid_json": 1} and source["out"] == 5
  assert local["documents"] == 3  # colorsys, heapq, bisect: the copies in other files go
  assert _step(engine["stats"], "near_dedup")["dropped_total"] == 1
  assert _step(engine["stats"], "exact_dedup")["dropped_total"] == 1


def test_merged_step_stats_equal_one_run_over_everything():
  a, b = StepStats("size"), StepStats("size", max_examples=20)
  a.records_in, a.records_out = 3, 2
  a.drop("too_long", "x.py")
  b.records_in, b.records_out = 2, 0
  b.drop("too_short", "y.py")
  b.drop("too_long", "z.py")
  merged = StepStats.from_dict(a.to_dict()).merge(StepStats.from_dict(b.to_dict()))
  assert merged.to_dict()["dropped"] == {"too_long": 2, "too_short": 1}
  assert (merged.records_in, merged.records_out) == (5, 2)
  assert merged.examples == ["too_long: x.py", "too_short: y.py", "too_long: z.py"]


def test_unknown_runner_and_bad_shard_size_are_rejected(tmp_path):
  with pytest.raises(curation.CurationError, match="runner 'spark'"):
    curation.curate(["stdlib"], SETTINGS, str(tmp_path / "x.jsonl"), runner="spark")
  with pytest.raises(curation.CurationError, match="shard_files must be >= 1"):
    curation.plan_shards(["stdlib"], SETTINGS, shard_files=0)


def test_settings_come_from_the_data_schema():
  """config.data (DataSettings) owns the curate step's defaults; every field it sets
  reaches CurationSettings."""
  from data_pipeline.settings import DataSettings
  assert curation.CurationSettings.from_data(DataSettings(), seed=0) == dataclasses.replace(
      curation.CurationSettings(), text_field="text", license_field="license")
  data = DataSettings(max_files=7, text_field="code", license_field="", max_chars=99,
                      near_dup_threshold=0.5, num_perm=64)
  assert curation.CurationSettings.from_data(data, seed=3) == curation.CurationSettings(
      max_files=7, seed=3, text_field="code", license_field="", max_chars=99,
      near_dup_threshold=0.5, num_perm=64)

class _PlainParseFilter(curation.filters.ParseFilter):
  """The parse verdict from a plain `ast.parse` (no cache, no shared state)."""

  def drop_reason(self, record):
    import ast  # pylint: disable=g-import-not-at-top
    import warnings  # pylint: disable=g-import-not-at-top
    if not curation.filters.is_python(record):
      return None
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ast.parse(record.text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
      return "syntax_error"
    return None


def _curate_in_order(tmp_path, settings, name, steps=None):
  """The curated file's bytes and stats, with the filter steps `steps` (default: the
  settings' own)."""
  out = tmp_path / f"{name}.jsonl"
  with contextlib.ExitStack() as stack:
    if steps is not None:
      stack.enter_context(pytest.MonkeyPatch.context()).setattr(
          curation.CurationSettings, "filter_steps", lambda self: steps(self))
    result = curation.curate_local(["installed"], settings, str(out))
  return out.read_bytes(), result["stats"]


def _earlier_order(settings):
  """The filter order before the text-only filters moved ahead of the parse."""
  f = curation.filters
  return [f.SizeFilter(max_chars=settings.max_chars), _PlainParseFilter(),
          f.AutogeneratedFilter(), f.DataDumpFilter()]


def _check_same_output(tmp_path, settings):
  ours, our_stats = _curate_in_order(tmp_path, settings, "ours")
  earlier, earlier_stats = _curate_in_order(tmp_path, settings, "earlier", _earlier_order)
  assert ours == earlier and ours.count(b"\n") == our_stats[-1]["out"] > 0
  dropped = lambda stats: sum(sum(s["dropped"].values()) for s in stats[1:])  # noqa: E731
  assert dropped(our_stats) == dropped(earlier_stats)
  names = [s["name"] for s in our_stats[1:5]]
  assert names == ["size", "autogenerated", "parse", "data_dump"]


def test_the_filter_order_changes_no_curated_byte_on_a_sample(tmp_path):
  """The filters keep by each record alone, so their order is not in the output: a
  300-file sample of the tiny config's own input, curated in the earlier order (parse
  second, from a plain `ast.parse`) and in the current one, gives the same bytes."""
  _check_same_output(tmp_path, curation.CurationSettings(max_files=300, seed=0))


@pytest.mark.slow
def test_the_filter_order_changes_no_curated_byte_on_the_tiny_input(tmp_path):
  """As above on the tiny config's whole curate input (its sources and settings)."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  cfg = config.data
  assert list(cfg.sources) == ["installed"]
  settings = curation.CurationSettings(
      max_files=cfg.max_files, seed=config.seed, text_field=cfg.text_field,
      license_field=cfg.license_field, max_chars=cfg.max_chars,
      near_dup_threshold=cfg.near_dup_threshold, num_perm=cfg.num_perm)
  _check_same_output(tmp_path, settings)
