"""Tests of data_pipeline.sources: .py directories with bad files, JSONL with bad lines,
the seeded sample of the installed Python, Hugging Face datasets (local, sharded)."""

import glob
import gzip
import json
import os
import sysconfig

import pytest

from data_pipeline import sources
from data_pipeline.records import record_id
from data_pipeline.steps import StepStats

GOOD = "def f(x):\n    return x + 1\n"


@pytest.fixture
def py_dir(tmp_path):
  root = tmp_path / "code"
  (root / "pkg" / "__pycache__").mkdir(parents=True)
  (root / "a.py").write_text(GOOD)
  (root / "pkg" / "b.py").write_text("\ufeffimport os\n")  # BOM: stripped
  (root / "pkg" / "__pycache__" / "c.py").write_text(GOOD)  # caches are not walked
  (root / "notes.txt").write_text("not python")
  (root / "binary.py").write_bytes(b"x = 1\n\0\0\x01")
  (root / "latin1.py").write_bytes("s = 'café'\n".encode("latin-1"))
  (root / "big.py").write_text("x = 1\n" * 100)
  (root / "dangling.py").symlink_to(root / "missing-target.py")  # unreadable, even as root
  unreadable = root / "secret.py"
  unreadable.write_text(GOOD)
  unreadable.chmod(0)
  yield root
  unreadable.chmod(0o644)


def test_python_files_skips_and_counts_bad_files(py_dir):
  stats = StepStats("dir")
  records = list(sources.python_files(str(py_dir), max_file_bytes=500, stats=stats))
  by_name = {os.path.basename(r.origin): r for r in records}
  can_read_anything = os.geteuid() == 0  # root ignores chmod 000
  expected = {"a.py", "b.py"} | ({"secret.py"} if can_read_anything else set())
  assert set(by_name) == expected
  assert by_name["a.py"].text == GOOD
  assert by_name["b.py"].text == "import os\n"
  assert by_name["a.py"].origin == str(py_dir / "a.py")
  assert by_name["a.py"].id == record_id(str(py_dir / "a.py"))
  assert by_name["b.py"].meta == {"language": "python", "root": str(py_dir),
                                  "path": os.path.join("pkg", "b.py")}
  assert stats.dropped["binary"] == 1
  assert stats.dropped["not_utf8"] == 1
  assert stats.dropped["too_large_file"] == 1
  assert stats.dropped["unreadable"] == (1 if can_read_anything else 2)  # + chmod 000
  assert stats.records_in == 7  # every .py outside __pycache__
  assert stats.records_in == stats.records_out + stats.dropped_total
  assert any("binary.py (NUL byte at offset 6)" in e for e in stats.examples)
  assert any("latin1.py (byte offset 8)" in e for e in stats.examples)
  assert any("dangling.py (No such file or directory)" in e for e in stats.examples)


def test_python_files_sample_is_seeded(py_dir):
  def sample(seed):
    return [r.origin for r in sources.python_files(str(py_dir), max_files=3, seed=seed,
                                                   max_file_bytes=None)]
  first = sample(1)
  assert sample(1) == first
  assert {tuple(sample(s)) for s in range(8)} != {tuple(first)}  # seeds choose differently


def test_missing_directory_is_an_error(tmp_path):
  with pytest.raises(sources.SourceError, match="is not a directory"):
    sources.python_files(str(tmp_path / "nope"))


def write_lines(path, lines: list[bytes]):
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(b"\n".join(lines) + b"\n")


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.jsonl.gz"])
def test_jsonl_skips_and_counts_bad_lines(tmp_path, name):
  path = tmp_path / name
  write_lines(path, [
      json.dumps({"text": "a = 1", "license": "MIT"}).encode(),
      b"{not json",
      b"",  # blank lines are not rows
      json.dumps(["a", "list"]).encode(),
      json.dumps({"content": "no text field"}).encode(),
      json.dumps({"text": 42}).encode(),
      b'{"text": "caf\xe9"}',  # latin-1 byte
      json.dumps({"text": "b = 2", "license": ["MIT", "Apache-2.0"], "repo": "r/x"}).encode(),
      json.dumps({"id": "kept", "text": "c = 3", "origin": "/orig.py",
                  "meta": {"k": 1}}).encode(),
  ])
  stats = StepStats("jsonl")
  records = list(sources.jsonl_records(str(path), meta_fields=["repo"], stats=stats))
  assert [r.text for r in records] == ["a = 1", "b = 2", "c = 3"]
  assert records[0].origin == f"{path}:1" and records[0].id == record_id(f"{path}:1")
  assert records[0].license == "MIT"
  assert records[1].license == "MIT, Apache-2.0" and records[1].meta == {"repo": "r/x"}
  assert (records[2].id, records[2].origin, records[2].meta) == ("kept", "/orig.py", {"k": 1})
  assert dict(stats.dropped) == {"invalid_json": 1, "not_an_object": 1,
                                 "missing_text_field": 1, "text_not_string": 1, "not_utf8": 1}
  assert stats.records_in == 8 == stats.records_out + stats.dropped_total
  assert any(e.startswith(f"invalid_json: {path}:2 (invalid JSON (Expecting property name")
             for e in stats.examples), stats.examples
  assert f"not_utf8: {path}:7 (not UTF-8 (byte offset 13))" in stats.examples


def test_jsonl_custom_fields_and_cap(tmp_path):
  path = tmp_path / "stack.jsonl"
  write_lines(path, [json.dumps({"content": f"x = {i}", "lic": "BSD"}).encode()
                     for i in range(5)])
  records = list(sources.jsonl_records(str(path), "content", "lic", max_records=2))
  assert [(r.text, r.license) for r in records] == [("x = 0", "BSD"), ("x = 1", "BSD")]
  with pytest.raises(sources.SourceError, match="does not exist"):
    sources.jsonl_records(str(tmp_path / "missing.jsonl"))


def test_installed_python_sample_is_deterministic_and_keeps_origins():
  stats = StepStats("stdlib")
  first = list(sources.installed_python(15, seed=3, which="stdlib", stats=stats))
  again = list(sources.installed_python(15, seed=3, which="stdlib"))
  other = list(sources.installed_python(15, seed=4, which="stdlib"))
  assert [r.to_json() for r in first] == [r.to_json() for r in again]
  assert [r.origin for r in first] != [r.origin for r in other]
  stdlib = sysconfig.get_paths()["stdlib"]
  assert stats.records_in == 15 == stats.records_out + stats.dropped_total
  for record in first:
    assert record.origin.startswith(stdlib + os.sep) and record.origin.endswith(".py")
    assert os.sep + "site-packages" + os.sep not in record.origin
    assert record.meta["root"] == "stdlib" and record.license == sources.STDLIB_LICENSE
    assert os.path.join(stdlib, record.meta["path"]) == record.origin
    with open(record.origin, encoding="utf-8-sig") as f:
      assert f.read() == record.text
  assert [r.origin for r in first] == sorted(r.origin for r in first)


def test_installed_python_covers_stdlib_and_site_packages():
  roots = sources.installed_roots()
  assert roots["stdlib"] == sysconfig.get_paths()["stdlib"]
  assert roots["site-packages"] == sysconfig.get_paths()["purelib"]
  records = list(sources.installed_python(300, seed=0))
  assert {r.meta["root"] for r in records} >= {"stdlib", "site-packages"}
  # site-packages licenses come from the owning distribution's metadata
  import _pytest.python
  import importlib.metadata
  path = os.path.realpath(_pytest.python.__file__)
  assert sources._installed_license(path, "site-packages", roots["site-packages"]) == \
      importlib.metadata.metadata("pytest")["License-Expression"] == "MIT"
  assert sources._installed_license(path, "stdlib", roots["stdlib"]) == "PSF-2.0"


def test_read_source_dispatch(py_dir, tmp_path):
  jsonl = tmp_path / "docs.jsonl"
  write_lines(jsonl, [json.dumps({"text": "x"}).encode()])
  assert [r.text for r in sources.read_source(str(jsonl))] == ["x"]
  stats = StepStats("dir")
  dir_records = list(sources.read_source(str(py_dir), max_files=2, seed=0, stats=stats))
  assert stats.records_in == 2 and len(dir_records) <= 2
  stdlib = list(sources.read_source("stdlib", max_files=2, seed=0))
  assert [r.meta["root"] for r in stdlib] == ["stdlib", "stdlib"]
  with pytest.raises(sources.SourceError, match="expected installed, stdlib"):
    sources.read_source(str(tmp_path / "nothing-here"))


def test_parse_hf_spec():
  assert sources.parse_hf_spec("hf:bigcode/the-stack-dedup:data/python") == {
      "name": "bigcode/the-stack-dedup", "data_dir": "data/python"}
  assert sources.parse_hf_spec("hf:json?data_files=/d/a.jsonl&split=train&text_field=code") \
      == {"name": "json", "data_dir": None, "data_files": "/d/a.jsonl", "split": "train",
          "text_field": "code"}
  with pytest.raises(sources.SourceError, match="unknown option 'colour'"):
    sources.parse_hf_spec("hf:x?colour=red")
  with pytest.raises(sources.SourceError, match="expected hf:"):
    sources.parse_hf_spec("hf:")


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory):
  """Two local JSONL files of 10 rows each (The Stack's field names), one bad row."""
  root = tmp_path_factory.mktemp("hf")
  paths = []
  for part in range(2):
    rows = [{"content": f"def f{part}_{i}():\n    return {i}\n",
             "max_stars_repo_licenses": ["MIT"], "max_stars_repo_path": f"p{part}/{i}.py"}
            for i in range(10)]
    rows[3]["content"] = None if part == 1 else rows[3]["content"]  # one unusable row
    path = root / f"part{part}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    paths.append(str(path))
  return paths


@pytest.mark.parametrize("streaming, num_shards", [(True, 2), (True, 3), (False, 3)])
def test_hf_records_shards_partition_the_dataset(hf_files, tmp_path, streaming, num_shards):
  everything, per_shard_stats = [], []
  for index in range(num_shards):
    stats = StepStats(f"shard{index}")
    shard = list(sources.hf_records(
        "json", data_files=hf_files, text_field="content",
        license_field="max_stars_repo_licenses", meta_fields=["max_stars_repo_path"],
        num_shards=num_shards, shard_index=index, streaming=streaming,
        cache_dir=str(tmp_path / "cache"), stats=stats))
    assert shard, f"shard {index} is empty"
    for record in shard:
      assert record.origin.startswith(f"hf:json/train#{index}/{num_shards}:")
      assert record.id == record_id(record.origin)
      assert record.license == "MIT"
    everything.extend(shard)
    per_shard_stats.append(stats)
  texts = [r.text for r in everything]
  expected = {f"def f{p}_{i}():\n    return {i}\n" for p in range(2) for i in range(10)}
  expected.discard("def f1_3():\n    return 3\n")
  assert len(texts) == len(set(texts)) == 19 and set(texts) == expected
  assert sum(s.records_in for s in per_shard_stats) == 20
  assert sum(s.dropped["text_not_string"] for s in per_shard_stats) == 1
  assert {r.meta["max_stars_repo_path"] for r in everything} >= {"p0/0.py", "p1/9.py"}
  assert len({r.id for r in everything}) == 19


def test_read_source_hf_spec_on_parquet(tmp_path):
  import datasets
  rows = [{"text": f"x = {i}", "license": "Apache-2.0"} for i in range(6)]
  path = str(tmp_path / "data.parquet")
  datasets.Dataset.from_list(rows).to_parquet(path)
  stats = StepStats("hf")
  records = list(sources.read_source(f"hf:parquet?data_files={path}&text_field=text",
                                     num_shards=2, shard_index=1, stats=stats))
  assert [r.text for r in records] == ["x = 1", "x = 3", "x = 5"]  # every 2nd row
  assert stats.records_out == 3 and stats.elapsed_s > 0
  with pytest.raises(sources.SourceError, match="shard_index 2 is not in"):
    sources.hf_records("json", num_shards=2, shard_index=2)


def test_an_unreachable_hub_dataset_is_one_clear_error():
  # conftest runs the tests with HF_HUB_OFFLINE=1: the hub cannot be reached
  with pytest.raises(sources.SourceError, match=r"hf:someorg/somedata is a Hugging Face hub "
                     r"dataset and the hub is unreachable .*point config.data.sources at "
                     r"local data"):
    next(iter(sources.hf_records("someorg/somedata")))


@pytest.fixture(scope="module")
def stack_parquet(tmp_path_factory):
  """Four parquet shards of 5 rows (The Stack's field names); one row's content is null."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  root = tmp_path_factory.mktemp("stack")
  for part in range(4):
    rows = [{"content": f"def f{part}_{i}():\n    return {i}\n",
             "max_stars_repo_licenses": ["MIT", "BSD-3-Clause"], "size": i}
            for i in range(5)]
    if part == 2:
      rows[1]["content"] = None
    pq.write_table(pa.Table.from_pylist(rows), str(root / f"shard-{part:05d}.parquet"),
                   row_group_size=2)
  return str(root / "*.parquet")


@pytest.mark.parametrize("num_shards", [1, 2, 3])  # 3: 4 files do not divide: by row
def test_file_shards_partition_the_rows_as_split_dataset_by_node_does(stack_parquet, tmp_path,
                                                                      num_shards):
  seen = []
  for index in range(num_shards):
    stats = StepStats(f"shard{index}")
    shard = list(sources.read_source(stack_parquet, text_field="content",
                                     license_field="max_stars_repo_licenses",
                                     num_shards=num_shards, shard_index=index, stats=stats))
    hf = list(sources.hf_records("parquet", data_files=sorted(glob.glob(stack_parquet)),
                                 text_field="content", num_shards=num_shards,
                                 shard_index=index, cache_dir=str(tmp_path / "cache")))
    assert [r.text for r in shard] == [r.text for r in hf]  # the same rows, same order
    for record in shard:
      assert record.license == "MIT, BSD-3-Clause" and record.id == record_id(record.origin)
      assert ".parquet:" in record.origin
    seen.extend(r.text for r in shard)
  assert len(seen) == len(set(seen)) == 19  # disjoint, and all but the null row


def test_file_shards_stream_and_count_a_shard_that_disappears(tmp_path):
  for part in range(2):
    lines = [json.dumps({"text": f"x = {part}{i}"}) for i in range(3)]
    lines.insert(1, "{not json")
    (tmp_path / f"part{part}.jsonl").write_text("\n".join(lines) + "\n")
  stats = StepStats("files")
  records = sources.read_source(str(tmp_path / "part*.jsonl"), stats=stats)
  first = next(records)
  assert first.text == "x = 00" and first.origin == f"{tmp_path}/part0.jsonl:1"
  os.remove(tmp_path / "part1.jsonl")  # gone before the reader gets to it
  rest = [r.text for r in records]
  assert rest == ["x = 01", "x = 02"]
  assert stats.dropped == {"invalid_json": 1, "unreadable_file": 1}
  assert any("part1.jsonl" in e for e in stats.examples)
  with pytest.raises(sources.SourceError, match="no .parquet, .jsonl, .jsonl.gz file matches"):
    list(sources.read_source(str(tmp_path / "nothing*.parquet")))
