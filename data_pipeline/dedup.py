"""Deduplication: exact (hash of whitespace-normalised text) and near (MinHash LSH).

Near-duplicates are found as in BigCode/datatrove: a document is the set of its word
5-grams ("shingles"; words are runs of letters, digits and underscores, so renaming a
variable changes only the shingles around it), MinHash (datasketch, `num_perm`
permutations, seeded) estimates the Jaccard similarity of two sets, and LSH banding
finds the pairs above `threshold` without comparing all pairs. With `verify` (default)
an LSH candidate counts only when its estimated Jaccard is >= threshold too.

    ExactDedup()                       Step: keeps one document of each normalised text
    MinHashDedup(threshold=0.8, ...)   Step: keeps one document of each near-duplicate cluster
    near_duplicate_pairs(a, b=None)    (key_a, key_b, jaccard) pairs within a, or from a to b
                                       (decontamination: training data vs. benchmarks)
    clusters(pairs)                    connected components of those pairs

Near-dedup clusters are defined without reference to an index or an input order, so a
distributed engine finds the same ones with a keyed shuffle (data_pipeline/datatrove_pipeline.py):
each signature is cut into LSH bands (`band_keys`); documents that share a band key are
candidates; a candidate pair counts when its MinHash Jaccard estimate is >= threshold
(`signature_jaccard`); the clusters are the connected components of the counted pairs.
Both steps keep the smallest `order_key` (record id, then origin) of each group and drop
the others (`removals`), so the kept documents do not depend on the order or the sharding
of the input. Both steps hold their input until it ends (the decision needs every
document), and yield the kept records in input order.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from data_pipeline.records import Record
from data_pipeline.steps import Step

if TYPE_CHECKING:
  import datasketch  # imported when first used: it pulls in scipy (~0.5 s)

_WHITESPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def normalize_whitespace(text: str) -> str:
  """`text` with every whitespace run replaced by one space, stripped."""
  return _WHITESPACE.sub(" ", text).strip()


def text_hash(text: str) -> bytes:
  """sha256 digest of the whitespace-normalised text (the exact-dedup key)."""
  return hashlib.sha256(normalize_whitespace(text).encode("utf-8")).digest()


def words(text: str) -> list[str]:
  """The word tokens of `text` (runs of letters, digits and underscores)."""
  return _WORD.findall(text)


def _shingle_strings(text: str, size: int) -> set[str]:
  """`shingles(text, size)` before UTF-8 encoding."""
  tokens = words(text)
  if len(tokens) <= size:
    return {" ".join(tokens)} if tokens else set()
  return set(map(" ".join, zip(*(tokens[i:] for i in range(size)))))


def shingles(text: str, size: int = 5) -> set[bytes]:
  """The set of `size`-word shingles of `text` (one shingle of all words when there are
  fewer than `size`; empty for a text without words)."""
  return {gram.encode("utf-8") for gram in _shingle_strings(text, size)}


def jaccard(a: set, b: set) -> float:
  """Exact Jaccard similarity |a & b| / |a | b| (0 for two empty sets)."""
  union = len(a | b)
  return len(a & b) / union if union else 0.0


class MinHasher:
  """MinHash signatures of texts, all with the same seeded permutations.

  `signature(text)` computes the hash values of datasketch's default scheme (sha1 of
  each shingle, then the scheme's seeded permutations, min over shingles) in numpy over
  all of a text's shingles at once, without datasketch's per-shingle Python hash
  calls; `__call__` wraps them in a `datasketch.MinHash` (for its LSH and `jaccard`).
  The values equal `datasketch.MinHash.update_batch` over `shingles(text)` (tested).
  """

  def __init__(self, num_perm: int = 128, seed: int = 1, shingle_size: int = 5):
    import datasketch  # pylint: disable=g-import-not-at-top
    self._datasketch = datasketch
    self.num_perm, self.seed, self.shingle_size = num_perm, seed, shingle_size
    self._template = datasketch.MinHash(num_perm=num_perm, seed=seed)
    self.scheme = self._template.scheme
    a, b = self._template.permutations
    self._a_1P, self._b_1P = a[None, :], b[None, :]
    self._dtype = self._template.hashvalues.dtype
    # sha1_hash32 (legacy, affine32) or sha1_hash64 (affine64): the digest's first bytes.
    self._hash_bytes = 8 if self.scheme == "affine64" else 4

  def shingle_hashes(self, text: str) -> np.ndarray:
    """The sha1-based hash of each distinct shingle of `text` (datasketch's hashfunc)."""
    grams = _shingle_strings(text, self.shingle_size)
    n = self._hash_bytes
    digests = b"".join([hashlib.sha1(g.encode("utf-8")).digest()[:n] for g in grams])
    return np.frombuffer(digests, "<u8" if n == 8 else "<u4")

  def signature(self, text: str) -> np.ndarray:
    """The MinHash hash values of `text`'s shingles, uint64[num_perm] (the max value
    when it has none)."""
    hv_S = self.shingle_hashes(text)
    if not len(hv_S):
      return self._template.hashvalues.astype(np.uint64)
    if self.scheme == "legacy":
      hv_S1 = hv_S.astype(np.uint64)[:, None]
      phv_SP = np.bitwise_and((hv_S1 * self._a_1P + self._b_1P) % np.uint64((1 << 61) - 1),
                              np.uint64((1 << 32) - 1))
    else:
      width = 8 * self._hash_bytes
      hv_S1 = _fmix(hv_S.astype(self._dtype), width)[:, None]
      phv_SP = np.multiply(hv_S1, self._a_1P)  # wraps mod 2^width, as in datasketch
      phv_SP += self._b_1P
    return phv_SP.min(axis=0).astype(self._dtype, copy=False).astype(np.uint64, copy=False)

  def __call__(self, text: str) -> datasketch.MinHash:
    """The MinHash of the shingles of `text`."""
    return self._datasketch.MinHash(num_perm=self.num_perm, seed=self.seed,
                                    hashvalues=self.signature(text),
                                    permutations=self._template.permutations,
                                    scheme=self.scheme)

  def lsh(self, threshold: float) -> datasketch.MinHashLSH:
    """An empty LSH index for these signatures at `threshold`."""
    return self._datasketch.MinHashLSH(threshold=threshold, num_perm=self.num_perm)

  def bands(self, threshold: float) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's LSH picks for `threshold` (the banding
    that minimises false positives + false negatives for num_perm)."""
    lsh = self.lsh(threshold)
    return lsh.b, lsh.r


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[bytes]:
  """One key per LSH band: the band's index and a 16-byte hash of its rows. Two
  signatures are LSH candidates when they share any key."""
  return [bytes([band % 256, band // 256]) + hashlib.blake2b(
      signature[band * rows:(band + 1) * rows].tobytes(), digest_size=16).digest()
          for band in range(bands)]


def signature_jaccard(a: np.ndarray | bytes, b: np.ndarray | bytes) -> float:
  """MinHash estimate of the Jaccard similarity: the fraction of equal hash values (as
  datasketch's MinHash.jaccard). Signatures as arrays or their uint64 bytes."""
  a_N = np.frombuffer(a, np.uint64) if isinstance(a, bytes) else a
  b_N = np.frombuffer(b, np.uint64) if isinstance(b, bytes) else b
  return float(np.count_nonzero(a_N == b_N)) / len(a_N)


def order_key(record: Record) -> tuple[str, str]:
  """What decides which member of a duplicate group is kept: the smallest (id, origin)."""
  return (record.id, record.origin)


def bucket_pairs(members: Sequence[tuple[Hashable, np.ndarray | bytes]], threshold: float,
                 verify: bool = True) -> Iterator[tuple[Hashable, Hashable]]:
  """The counted pairs (smaller key, larger key) among the members of one LSH bucket
  ((key, signature) items): every pair, or with `verify` those whose Jaccard estimate is
  >= threshold."""
  members = sorted(members, key=lambda m: m[0])
  for i, (key_a, sig_a) in enumerate(members):
    for key_b, sig_b in members[i + 1:]:
      if key_a != key_b and (not verify or signature_jaccard(sig_a, sig_b) >= threshold):
        yield key_a, key_b


def removals(pairs: Iterable[tuple[Hashable, Hashable]]) -> dict[Hashable, Hashable]:
  """{dropped key: kept key} of the clusters (connected components) of `pairs`: each
  cluster keeps its smallest key."""
  dropped = {}
  for group in clusters(pairs):
    for key in group[1:]:
      dropped[key] = group[0]
  return dropped


def _fmix(hv: np.ndarray, width: int) -> np.ndarray:
  """MurmurHash3's finalizer on uint32/uint64 values (datasketch's pre-mix of the
  affine schemes; the multiplications wrap mod 2^width)."""
  if width == 32:
    s1, m1, s2, m2, s3 = 16, 0x85EBCA6B, 13, 0xC2B2AE35, 16
  else:
    s1, m1, s2, m2, s3 = 33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33
    hv = hv.astype(np.uint64)
  dtype = hv.dtype.type
  hv = hv ^ (hv >> dtype(s1))
  hv = hv * dtype(m1)
  hv = hv ^ (hv >> dtype(s2))
  hv = hv * dtype(m2)
  return hv ^ (hv >> dtype(s3))


def _check(threshold: float, num_perm: int) -> None:
  if not 0.0 < threshold <= 1.0:
    raise ValueError(f"near-dedup threshold must be in (0, 1], got {threshold}")
  if num_perm < 2:
    raise ValueError(f"near-dedup num_perm must be >= 2, got {num_perm}")


class ExactDedup(Step):
  """Drops a record whose whitespace-normalised text equals another record's
  ("exact_duplicate"), keeping the one with the smallest `order_key` of each text."""
  name = "exact_dedup"

  def process(self, records: Iterable[Record]) -> Iterator[Record]:
    records = list(records)
    kept: dict[bytes, Record] = {}
    for record in records:
      key = text_hash(record.text)
      if key not in kept or order_key(record) < order_key(kept[key]):
        kept[key] = record
    keepers = {id(record) for record in kept.values()}
    for record in records:
      if id(record) in keepers:
        yield record
      else:
        self.stats.drop("exact_duplicate",
                        f"{record.origin} = {kept[text_hash(record.text)].origin}")


class MinHashDedup(Step):
  """Drops every record of a near-duplicate cluster but the one with the smallest
  `order_key` ("near_duplicate"; the example names the kept one).

  Args:
    threshold: Jaccard similarity of word shingles at or above which two documents are
      duplicates (BigCode uses 0.85 for The Stack, datatrove ~0.75-0.8).
    num_perm: MinHash permutations (more: better estimates, slower).
    shingle_size: words per shingle.
    seed: seed of the permutations.
    verify: count an LSH candidate pair only when its MinHash Jaccard estimate is >=
      threshold too (fewer false positives).
  """
  name = "near_dedup"

  def __init__(self, threshold: float = 0.8, num_perm: int = 128, shingle_size: int = 5,
               seed: int = 1, verify: bool = True, name: str | None = None):
    super().__init__(name)
    _check(threshold, num_perm)
    self.threshold, self.verify = threshold, verify
    self.hasher = MinHasher(num_perm, seed, shingle_size)
    self.bands, self.rows = self.hasher.bands(threshold)

  def process(self, records: Iterable[Record]) -> Iterator[Record]:
    records = list(records)
    by_key = {order_key(record): record for record in records}
    buckets: dict[bytes, list[tuple[tuple[str, str], np.ndarray]]] = {}
    for key, record in by_key.items():
      signature = self.hasher.signature(record.text)
      for band in band_keys(signature, self.bands, self.rows):
        buckets.setdefault(band, []).append((key, signature))
    pairs = {pair for members in buckets.values() if len(members) > 1
             for pair in bucket_pairs(members, self.threshold, self.verify)}
    dropped = removals(pairs)
    for record in records:
      kept = dropped.get(order_key(record))
      if kept is None:
        yield record
      else:
        self.stats.drop("near_duplicate", f"{record.origin} ~ {by_key[kept].origin}")


def near_duplicate_pairs(texts: Iterable[tuple[str, str]],
                         others: Iterable[tuple[str, str]] | None = None, *,
                         threshold: float = 0.8, num_perm: int = 128, shingle_size: int = 5,
                         seed: int = 1, exact: bool = False) -> list[tuple[str, str, float]]:
  """Near-duplicate pairs among (key, text) items, found with MinHash LSH.

  Args:
    texts: (key, text) items.
    others: when given, only pairs (key in texts, key in others) are returned (e.g.
      training documents vs. benchmark problems); otherwise pairs within `texts`, each
      once as (earlier key, later key).
    threshold: similarity at or above which a pair is returned.
    num_perm, shingle_size, seed: MinHash settings.
    exact: score candidates with the exact Jaccard of their shingles instead of the
      MinHash estimate (texts are kept in memory).

  Returns:
    (key_a, key_b, similarity) sorted by key_a, key_b.
  """
  _check(threshold, num_perm)
  hasher = MinHasher(num_perm, seed, shingle_size)
  lsh = hasher.lsh(threshold)
  indexed: list[tuple[str, datasketch.MinHash, set | None]] = []
  source = list(others) if others is not None else None

  def sketch(text: str):
    return hasher(text), (shingles(text, shingle_size) if exact else None)

  def score(a, b) -> float:
    return jaccard(a[2], b[2]) if exact else float(a[1].jaccard(b[1]))

  pairs = []
  if source is not None:  # index the others, query each text against them
    for key, text in source:
      item = (key, *sketch(text))
      lsh.insert(len(indexed), item[1], check_duplication=False)
      indexed.append(item)
    for key, text in texts:
      item = (key, *sketch(text))
      for index in sorted(lsh.query(item[1])):
        similarity = score(item, indexed[index])
        if similarity >= threshold:
          pairs.append((key, indexed[index][0], similarity))
  else:  # stream: query each text against the earlier ones, then index it
    for key, text in texts:
      item = (key, *sketch(text))
      for index in sorted(lsh.query(item[1])):
        similarity = score(indexed[index], item)
        if similarity >= threshold:
          pairs.append((indexed[index][0], key, similarity))
      lsh.insert(len(indexed), item[1], check_duplication=False)
      indexed.append(item)
  return sorted(pairs, key=lambda p: (p[0], p[1]))


def clusters(pairs: Iterable[tuple[str, str, float] | tuple[str, str]]) -> list[list[str]]:
  """Connected components (union-find) of the pairs' keys, each sorted, largest first."""
  parent: dict[str, str] = {}

  def find(key: str) -> str:
    parent.setdefault(key, key)
    while parent[key] != key:
      parent[key] = parent[parent[key]]
      key = parent[key]
    return key

  for pair in pairs:
    a, b = find(pair[0]), find(pair[1])
    if a != b:
      parent[max(a, b)] = min(a, b)
  groups: dict[str, list[str]] = {}
  for key in parent:
    groups.setdefault(find(key), []).append(key)
  return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g[0]))

