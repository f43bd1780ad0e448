"""Tests of data_pipeline.dedup against brute force: exact dedup on normalised text, and
MinHash LSH near-dup detection vs. the exact Jaccard of the same shingles."""

import itertools
import os
import re
import sysconfig

import numpy as np
import pytest

from data_pipeline import dedup
from data_pipeline.records import Record, record_id
from data_pipeline.steps import collect_stats, run_steps

STDLIB = sysconfig.get_paths()["stdlib"]
MODULES = ["textwrap.py", "json/decoder.py", "json/encoder.py", "colorsys.py", "bisect.py",
           "heapq.py", "fnmatch.py", "shlex.py", "glob.py", "queue.py", "string.py",
           "sched.py"]


def record(origin, text):
  return Record(id=record_id(origin), text=text, origin=origin)


@pytest.fixture(scope="module")
def corpus():
  """Distinct real modules plus planted near-copies: renamed variables (colorsys's
  `maxc` -> `max_component`, 20 uses) and a few words changed (heapq)."""
  texts = {}
  for name in MODULES:
    with open(os.path.join(STDLIB, name), encoding="utf-8") as f:
      texts[name] = f.read()
  texts["copy/colorsys_renamed.py"] = re.sub(r"\bmaxc\b", "max_component",
                                             texts["colorsys.py"])
  words = texts["heapq.py"].split(" ")
  for i in (100, 900, 2000, 3000, 4000):
    words[i] = "changed"
  texts["copy/heapq_edited.py"] = " ".join(words)
  return texts


@pytest.fixture(scope="module")
def brute_force(corpus):
  """Exact Jaccard of every pair's 5-word shingles."""
  shingles = {key: dedup.shingles(text, 5) for key, text in corpus.items()}
  return {(a, b): dedup.jaccard(shingles[a], shingles[b])
          for a, b in itertools.combinations(corpus, 2)}


def test_shingles_and_jaccard_by_hand():
  assert dedup.words("def f(x_1):\n  return x_1+2") == ["def", "f", "x_1", "return", "x_1", "2"]
  assert dedup.shingles("a b c d e f", 5) == {b"a b c d e", b"b c d e f"}
  assert dedup.shingles("a b", 5) == {b"a b"}
  assert dedup.shingles("  (( ", 5) == set()
  assert dedup.jaccard({1, 2, 3}, {2, 3, 4}) == 2 / 4
  assert dedup.jaccard(set(), set()) == 0.0


def test_exact_dedup_on_normalised_whitespace():
  texts = ["def f():\n    return 1\n", "def f():\n\treturn 1   \n\n", "def  f():  return 1",
           "def f():\n    return 2\n", "def f():\n    return 1\n"]
  step = dedup.ExactDedup()
  records = [record(f"f{i}.py", t) for i, t in enumerate(texts)]
  kept = list(step(records))
  # all but the `return 2` one normalise to "def f(): return 1"; the smallest id stays
  group = [r for r in records if r.origin != "f3.py"]
  keeper = min(group, key=lambda r: r.id)
  assert [r.origin for r in kept] == [r.origin for r in records
                                      if r.origin in (keeper.origin, "f3.py")]
  assert sorted(step.stats.examples) == sorted(
      f"exact_duplicate: {r.origin} = {keeper.origin}" for r in group if r is not keeper)
  assert dedup.normalize_whitespace(texts[1]) == "def f(): return 1"
  every = "".join(map(chr, range(0x110000)))  # whitespace as `\s` sees it, on every code point
  for text in (every, f" a{every}b ", "\x1c x \u3000 y\x85", "", " \t "):
    assert dedup.normalize_whitespace(text) == re.sub(r"\s+", " ", text).strip()
  stats = step.stats.to_dict()
  assert stats["dropped"] == {"exact_duplicate": 3}
  assert stats["in"] == stats["out"] + stats["dropped_total"] == 5


def test_minhash_estimates_match_brute_force(corpus, brute_force):
  hasher = dedup.MinHasher(num_perm=256, seed=7)
  sketches = {key: hasher(text) for key, text in corpus.items()}
  for (a, b), exact in brute_force.items():
    assert abs(sketches[a].jaccard(sketches[b]) - exact) < 0.1, (a, b, exact)


def test_minhash_estimates_track_exact_jaccard_over_planted_edits():
  """Over many pairs (a stdlib file and a copy with 1-40% of its words replaced) the
  signature's Jaccard estimate is unbiased and within its sampling error of the exact
  Jaccard of the shingles (standard deviation sqrt(J (1 - J) / num_perm) <= 0.044)."""
  rng = np.random.default_rng(0)
  hasher = dedup.MinHasher(num_perm=128, seed=1)
  errors = []
  for name in MODULES:
    with open(os.path.join(STDLIB, name), encoding="utf-8") as f:
      words = f.read().split(" ")
    for rate in (0.01, 0.03, 0.1, 0.2, 0.4):
      edited = list(words)
      for i in rng.choice(len(words), int(rate * len(words)) + 1, replace=False):
        edited[i] = f"edit{i}"
      a, b = " ".join(words), " ".join(edited)
      exact = dedup.jaccard(dedup.shingles(a), dedup.shingles(b))
      errors.append(dedup.signature_jaccard(hasher.signature(a), hasher.signature(b)) - exact)
  errors = np.asarray(errors)
  assert len(errors) == 60
  assert abs(errors.mean()) < 0.015  # unbiased (the mean's standard error is ~0.005)
  assert np.abs(errors).mean() < 0.04 and np.abs(errors).max() < 0.16


def test_brute_force_sees_the_planted_copies_and_nothing_else(brute_force):
  near = {pair for pair, j in brute_force.items() if j >= 0.5}
  assert near == {("colorsys.py", "copy/colorsys_renamed.py"),
                  ("heapq.py", "copy/heapq_edited.py")}
  assert max(j for pair, j in brute_force.items() if pair not in near) < 0.2


@pytest.mark.parametrize("threshold", [0.7, 0.75])  # true Jaccard of the copies: 0.83, 0.98
def test_minhash_dedup_drops_the_planted_copies(corpus, brute_force, threshold):
  step = dedup.MinHashDedup(threshold=threshold, num_perm=128, seed=1)
  kept = list(run_steps((record(k, t) for k, t in corpus.items()), [step]))
  # of each planted pair, the one with the smaller id stays; every other file survives
  dropped = {}
  for original, copy in (("colorsys.py", "copy/colorsys_renamed.py"),
                         ("heapq.py", "copy/heapq_edited.py")):
    keeper, other = sorted((original, copy), key=record_id)
    dropped[other] = keeper
  assert [r.origin for r in kept] == [k for k in corpus if k not in dropped]
  (stats,) = collect_stats(step)
  assert stats["dropped"] == {"near_duplicate": 2}
  assert stats["examples"] == [f"near_duplicate: {k} ~ {dropped[k]}"
                               for k in corpus if k in dropped]  # in input order
  assert stats["in"] == stats["out"] + stats["dropped_total"]


def test_near_duplicate_pairs_agree_with_brute_force(corpus, brute_force):
  for exact in (False, True):
    pairs = dedup.near_duplicate_pairs(corpus.items(), threshold=0.7, num_perm=128,
                                       exact=exact)
    assert [(a, b) for a, b, _ in pairs] == sorted(
        pair for pair, j in brute_force.items() if j >= 0.7)
    for a, b, similarity in pairs:
      if exact:
        assert similarity == brute_force[(a, b)]
      else:
        assert abs(similarity - brute_force[(a, b)]) < 0.1


def test_near_duplicate_pairs_between_two_sets(corpus):
  """Decontamination use: which training documents are near a benchmark item."""
  benchmark = [("bench/colorsys", corpus["colorsys.py"]), ("bench/other", "def g(): pass")]
  training = [(k, t) for k, t in corpus.items() if k != "colorsys.py"]
  pairs = dedup.near_duplicate_pairs(training, benchmark, threshold=0.75, exact=True)
  assert [(a, b) for a, b, _ in pairs] == [("copy/colorsys_renamed.py", "bench/colorsys")]


def test_near_dedup_keeps_the_smallest_id_of_a_chain_whatever_the_order():
  """A chain a ~ b ~ c with a !~ c is one cluster: only its smallest id stays, in any
  input order (a greedy first-seen rule would keep two of them, which depend on order)."""
  a = [f"w{i}" for i in range(400)]
  b = a[:383] + [f"x{i}" for i in range(17)]  # a's last 17 words changed: J(a, b) 0.90
  c = [f"y{i}" for i in range(17)] + b[17:]  # b's first 17 words changed: J(b, c) 0.90
  docs = [record(name, " ".join(words)) for name, words in (("a", a), ("b", b), ("c", c))]
  sh = {r.origin: dedup.shingles(r.text) for r in docs}
  assert dedup.jaccard(sh["a"], sh["b"]) > 0.89 and dedup.jaccard(sh["b"], sh["c"]) > 0.89
  assert dedup.jaccard(sh["a"], sh["c"]) < 0.85  # a and c are linked only through b
  smallest = min(docs, key=lambda r: r.id).origin
  for order in itertools.permutations(docs):
    step = dedup.MinHashDedup(threshold=0.85, num_perm=256, seed=1)
    assert [r.origin for r in step(list(order))] == [smallest]


def test_clusters_are_connected_components():
  pairs = [("a", "b", 0.9), ("c", "b", 0.8), ("x", "y", 0.9), ("d", "d", 1.0)]
  assert dedup.clusters(pairs) == [["a", "b", "c"], ["x", "y"], ["d"]]


def test_near_dedup_is_deterministic_and_seeded(corpus):
  def run(seed):
    step = dedup.MinHashDedup(threshold=0.75, num_perm=64, seed=seed)
    list(step(record(k, t) for k, t in corpus.items()))
    return step.stats.to_dict()["examples"]
  assert run(3) == run(3)
  assert dedup.MinHasher(64, seed=3)("a b c d e f").hashvalues.tolist() != \
      dedup.MinHasher(64, seed=4)("a b c d e f").hashvalues.tolist()


def test_bad_settings_are_rejected():
  with pytest.raises(ValueError, match="threshold must be in"):
    dedup.MinHashDedup(threshold=1.5)
  with pytest.raises(ValueError, match="num_perm must be >= 2"):
    dedup.near_duplicate_pairs([], num_perm=1)
