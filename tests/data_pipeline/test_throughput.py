"""The optimised data steps against straightforward reference implementations.

The references are the steps as they were before the throughput work, frozen in
bench/data_before.py (pure-Python `tokenize`, per-character isalnum, datasketch's own
MinHash hashing, a parse per step). On a sample of the standard library plus planted
edge cases, the optimised steps must keep and drop exactly the same records for the same
reasons, mine the same exercises and produce the same tokens.
"""

import functools
import textwrap

import datasketch
import numpy as np
import pytest

from bench import data_before
from data_pipeline import dedup, exercises, filters, sources
from data_pipeline.records import Record, record_id
from data_pipeline.steps import collect_stats, run_steps
from data_pipeline.tokenizer import encode_ids, train_bpe
from phi_jax.tokenizer import byte_level

PLANTED = {
    "py2.py": 'print "hello"\nexec "x = 1"\n',
    "dollar.py": "x = $1\nprint(x)\n" * 20,
    "table.py": "TABLE = [\n" + "".join(f"    {i}, {i * 7}, {i * 13},\n" for i in range(300)) + "]\n",
    "strings.py": "NAMES = (\n" + "".join(f"    'name_{i}_{i * i}',\n" for i in range(200)) + ")\n",
    "async.py": textwrap.dedent('''\
        """Async helpers."""
        import asyncio


        async def gather_all(tasks):
            """Awaits every task and returns their results in order."""
            results = []
            for task in tasks:
                results.append(await task)
            return results
        ''') * 3,
    "docstrings.py": '"""Module doc."""\n"a" "b"\nx = "c" + "d"\n"e"  # comment\n' * 30,
    "symbols.py": "#" * 50 + "\n" + "+-*/ = ;;\n" * 40,
    "crlf.py": ('"""Windows line ends."""\r\nHELP = """usage:\r\n  run it\r\n"""\r\n'
                "x = 1\r\n") * 20,
    "notes.txt": "plain text " * 50,
}


@pytest.fixture(scope="module")
def corpus():
  """Records: 120 stdlib files, a near-copy of two of them, and the planted files."""
  records = list(sources.installed_python(120, 3, which="stdlib"))
  for original in records[:2]:
    text = original.text.replace("def ", "def  ", 1) + "\n# edited copy\n"
    records.append(Record(id=record_id(original.origin + "~"), text=text,
                          origin=original.origin + "~"))
  for name, text in PLANTED.items():
    meta = {"language": "text"} if name.endswith(".txt") else {}
    records.append(Record(id=record_id(name), text=text, origin=name, meta=meta))
  return records


def run(steps, records):
  kept = [r.id for r in run_steps(records, steps)]
  stats = [{k: s[k] for k in ("in", "out", "dropped", "examples")}
           for s in collect_stats(*steps)]
  return kept, stats


def test_curation_chain_keeps_and_drops_exactly_what_the_reference_does(corpus):
  kept, stats = run(data_before.curation_steps_after(threshold=0.8), corpus)
  kept_ref, stats_ref = run(data_before.curation_steps_before(threshold=0.8), corpus)
  assert kept == kept_ref and stats == stats_ref
  dropped = {reason for s in stats for reason in s["dropped"]}
  # The sample exercises every filter and both dedups.
  assert {"syntax_error", "literal_data", "near_duplicate"} <= dropped, dropped


def test_each_filter_alone_agrees_with_its_reference(corpus):
  for step, reference in ((filters.ParseFilter(), data_before.ParseFilterBefore()),
                          (filters.DataDumpFilter(), data_before.DataDumpFilterBefore())):
    for record in corpus:
      assert step.drop_reason(record) == reference.drop_reason(record), record.origin


def test_literal_profile_on_the_c_tokenizer_equals_tokenize(corpus):
  checked = 0
  for record in corpus:
    expected = filters._literal_profile(record.text)  # pylint: disable=protected-access
    assert filters.literal_profile(record.text) == expected, record.origin
    checked += expected is not None
  assert checked > 100


def test_alnum_count_equals_str_isalnum_on_every_code_point():
  every = "".join(map(chr, range(0x110000)))
  ascii_text = every[:128] * 3
  assert filters.alnum_count(ascii_text) == sum(c.isalnum() for c in ascii_text)
  for start in range(0, len(every), 0x10000):
    chunk = every[start:start + 0x10000]
    assert filters.alnum_count(chunk) == sum(c.isalnum() for c in chunk), hex(start)


def _counted_parses(monkeypatch, name: str) -> list[str]:
  """The texts filters.<name> (an uncached parse) is called with from now on, with the
  parse caches emptied."""
  calls = []
  uncached = getattr(filters, name)
  monkeypatch.setattr(filters, name, lambda text: calls.append(text) or uncached(text))
  filters.clear_parse_caches()
  return calls


def test_parse_python_is_shared_along_a_chain(corpus, monkeypatch):
  calls = _counted_parses(monkeypatch, "parse_python_uncached")
  records = [r for r in corpus if filters.is_python(r)]
  steps = [filters.ParseFilter(keep_tree=True), filters.DataDumpFilter(),
           exercises.ExerciseMiner()]
  mined = list(run_steps(records, steps))
  assert len(calls) == len(records)  # one parse per record, for all three steps
  assert len(mined) > 10
  assert filters.parse_python(records[0].text) is filters.parse_python(records[0].text)


def test_the_filters_parse_once_and_keep_no_tree(corpus, monkeypatch):
  calls = _counted_parses(monkeypatch, "parses_uncached")
  records = [r for r in corpus if filters.is_python(r)]
  kept = list(run_steps(records, [filters.ParseFilter(), filters.DataDumpFilter()]))
  assert len(calls) == len(records)  # one parse per record, for both filters
  assert filters.parse_python.cache_info().currsize == 0  # no tree outlived its parse
  # the same verdicts as a kept tree (and as a plain ast.parse: test_filters.py)
  assert [filters.parses_uncached(r.text) for r in records] == [
      filters.parse_python_uncached(r.text) is not None for r in records]
  assert 0 < len(kept) < len(records)


def test_text_lines_are_split_once_along_a_chain(corpus):
  filters.text_lines.cache_clear()
  steps = [filters.SizeFilter(), filters.ParseFilter(), filters.AutogeneratedFilter(),
           filters.DataDumpFilter()]
  list(run_steps(corpus, steps))
  info = filters.text_lines.cache_info()
  assert info.misses <= len(corpus)  # at most one split per record, for all three filters
  assert info.hits > len(corpus)


def test_exercises_after_the_filters_equal_the_reference_miner(corpus):
  mined = [e.to_json() for e in run_steps(corpus, [filters.ParseFilter(keep_tree=True),
                                                   exercises.ExerciseMiner()])]
  reference = [e.to_json() for e in run_steps(corpus, [data_before.ParseFilterBefore(),
                                                       data_before.ExerciseMinerBefore()])]
  assert mined == reference and len(mined) > 10


@pytest.mark.parametrize("num_perm, seed, scheme", [(128, 1, "affine32"), (64, 7, "affine32"),
                                                    (64, 7, "affine64"), (32, 3, "legacy")])
def test_minhash_signatures_equal_datasketch_with_the_reference_hash(corpus, num_perm, seed,
                                                                     scheme):
  """MinHasher's numpy shingle hashes and permutations against datasketch hashing each
  shingle with the plain-Python `shingle_hash`: no words, fewer words than a shingle,
  repeated shingles, non-ASCII words (and a text of one), real files."""
  hashfunc = functools.partial(dedup.shingle_hash, width=64 if scheme == "affine64" else 32)
  hasher = dedup.MinHasher(num_perm, seed, scheme=scheme)
  edge_cases = ["", "  ((  ", "a b", "a b c d e", "a b c d e f", "x = x = x = x = x = x",
                "é ü 𝔘 x_1 y", "naïve café résumé déjà vu encore", "日本語 テキスト です",
                "def f(ß):\n  return ß * 2  # straße\n" * 3]
  for text in [r.text for r in corpus[:40]] + edge_cases:
    reference = datasketch.MinHash(num_perm=num_perm, seed=seed, hashfunc=hashfunc,
                                   scheme=scheme)
    reference.update_batch(list(dedup.shingles(text)))
    minhash = hasher(text)
    assert minhash.hashvalues.dtype == reference.hashvalues.dtype
    np.testing.assert_array_equal(minhash.hashvalues, reference.hashvalues, err_msg=text[:40])
    assert minhash.jaccard(reference) == 1.0


def test_word_hashes_cover_the_words_of_every_code_point():
  """The numpy word split (a table of `\\w` per code point) finds `dedup.words`: every code
  point once (surrogates included), each word's hash as `shingle_hash` of that word."""
  every = "".join(map(chr, range(0x110000)))
  every += " ".join(every[::5])  # and one-character words
  words = dedup.words(every)
  assert len(words) > 20_000 and sum(map(len, words)) > 150_000
  got = dedup._shingle_hashes64(dedup._word_hashes(every), 1)  # pylint: disable=protected-access
  assert got.tolist() == [dedup.shingle_hash([w], width=64) for w in words]


def test_tokens_equal_the_reference_encoding(corpus):
  texts = [r.text for r in corpus[:60]] + ["", "a<|endoftext|>b", "    x\t\t= 1  \n"]
  for tokenizer in (byte_level(), train_bpe(texts, 600, show_progress=False)):
    reference = data_before.tokenize_before(tokenizer, texts)
    fast = encode_ids(tokenizer, texts)
    assert [list(r) for r in reference] == fast
    assert fast == [tokenizer.encode(t) for t in texts]
