"""Deduplication: exact (hash of whitespace-normalised text) and near (MinHash LSH).

Near-duplicates are found as in BigCode/datatrove: a document is the set of its word
5-grams ("shingles"; words are runs of letters, digits and underscores, so renaming a
variable changes only the shingles around it), MinHash (`num_perm` seeded permutations
of datasketch's scheme over a 32-bit hash of each shingle, `shingle_hash`, computed for
all of a text's shingles at once in numpy) estimates the Jaccard similarity of two sets,
and LSH banding finds the pairs above `threshold` without comparing all pairs. With `verify` (default)
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

import functools
import hashlib
import re
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from data_pipeline import codepoints
from data_pipeline.records import Record
from data_pipeline.steps import Step

if TYPE_CHECKING:
  import datasketch  # imported when first used: it pulls in scipy (~0.5 s)

_WORD = re.compile(r"\w+")


def normalize_whitespace(text: str) -> str:
  """`text` with every whitespace run replaced by one space, stripped (`str.split`'s
  whitespace is the regular expressions' `\\s`)."""
  return " ".join(text.split())


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


# The shingle hash. Version 1 was sha1 of the shingle's UTF-8 bytes (datasketch's
# default); a signature depends on this, so stored signatures, LSH keys and anything
# built from them carry the version (data_pipeline/datatrove_pipeline.py keys its run
# directory with it).
SHINGLE_HASH_VERSION = 2
_MASK64 = (1 << 64) - 1
_CHAR_BASE = 0x9E3779B97F4A7C15  # odd: invertible mod 2^64
_WORD_BASE = 0xC2B2AE3D27D4EB4F
_FMIX64 = (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33)


def _fmix64_int(x: int) -> int:
  """MurmurHash3's 64-bit finalizer on a Python int in [0, 2^64)."""
  s1, m1, s2, m2, s3 = _FMIX64
  x ^= x >> s1
  x = (x * m1) & _MASK64
  x ^= x >> s2
  x = (x * m2) & _MASK64
  return x ^ (x >> s3)


def shingle_hash(shingle: bytes | str | Sequence[str], width: int = 32) -> int:
  """The hash of one shingle (its words, or its text with the words joined by spaces, as
  `shingles` makes it): the reference definition of what `MinHasher` computes in numpy.

  A word w is first hashed by its code points, h(w) = sum_i ord(w[i]) * C^i mod 2^64,
  and mixed with its length, v(w) = fmix64(h(w) + len(w)); the shingle's words
  w_1..w_m then give x = sum_j v(w_j) * W^(m-j) mod 2^64, and the hash is the low
  `width` bits of fmix64(x) (fmix64: MurmurHash3's finalizer; C and W fixed odd
  constants). Usable as datasketch's `hashfunc` (width 64 for the "affine64" scheme).
  """
  if isinstance(shingle, bytes):
    shingle = shingle.decode("utf-8", "surrogatepass")
  grams = shingle.split(" ") if isinstance(shingle, str) else shingle
  x = 0
  for gram in grams:
    h, power = 0, 1
    for char in gram:
      h = (h + ord(char) * power) & _MASK64
      power = (power * _CHAR_BASE) & _MASK64
    x = (x * _WORD_BASE + _fmix64_int((h + len(gram)) & _MASK64)) & _MASK64
  return _fmix64_int(x) & ((1 << width) - 1)


_powers_cache: list[np.ndarray] = [np.ones(0, np.uint64), np.ones(0, np.uint64)]


def _char_powers(n: int) -> tuple[np.ndarray, np.ndarray]:
  """(C^i, C^-i mod 2^64 for i < n), from a table grown to the next power of two."""
  powers, inverses = _powers_cache
  if len(powers) < n:
    size = 1 << max(n - 1, 1).bit_length()
    steps = np.full(size, _CHAR_BASE, np.uint64)
    steps[0] = 1
    inverse_steps = np.full(size, pow(_CHAR_BASE, -1, 1 << 64), np.uint64)
    inverse_steps[0] = 1
    powers, inverses = np.cumprod(steps), np.cumprod(inverse_steps)  # wrap mod 2^64
    _powers_cache[:] = powers, inverses
  return powers[:n], inverses


def _word_hashes(text: str) -> np.ndarray:
  """uint64[words]: v(w) of `shingle_hash` for each word of `text` (the runs of `_WORD`),
  in order, computed over all characters at once: with prefix sums P(k) of
  ord(text[i]) * C^i, h(w) = (P(end) - P(start)) * C^-start."""
  codes = codepoints.codes(text)
  is_word = codepoints.table(r"\W", 128 if codes.dtype == np.uint8 else 0x110000)[codes]
  n = len(codes)
  edges = np.empty(n + 1, bool)
  edges[0], edges[n] = is_word[0] if n else False, is_word[-1] if n else False
  np.not_equal(is_word[1:], is_word[:-1], out=edges[1:n])
  bounds = np.flatnonzero(edges)
  starts, ends = bounds[0::2], bounds[1::2]
  powers, inverses = _char_powers(n)
  prefix = np.zeros(n + 1, np.uint64)
  np.cumsum(np.multiply(codes, powers, dtype=np.uint64), out=prefix[1:])
  h = (prefix[ends] - prefix[starts]) * inverses[starts]
  h += (ends - starts).astype(np.uint64)
  return _fmix(h, 64)


def _shingle_hashes64(words_W: np.ndarray, size: int) -> np.ndarray:
  """uint64: fmix64(x) of `shingle_hash` for each `size`-word window of the word hashes
  (one window of all words when there are fewer; none without words), in order."""
  n = len(words_W)
  if not n:
    return words_W
  windows, width = max(n - size + 1, 1), min(size, n)
  x = words_W[:windows].copy()
  for j in range(1, width):
    x *= np.uint64(_WORD_BASE)
    x += words_W[j:j + windows]
  return _fmix(x, 64)


class MinHasher:
  """MinHash signatures of texts, all with the same seeded permutations.

  `signature(text)` hashes every distinct shingle of `text` with `shingle_hash` (computed
  for all shingles at once in numpy, see `shingle_hashes`), then applies the scheme's
  seeded permutations (datasketch's, `scheme`: "affine32" by default, "affine64" or
  "legacy") and takes the min over shingles, also in numpy; `__call__` wraps the values
  in a `datasketch.MinHash` (for its LSH and `jaccard`). The values equal
  `datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash).update_batch(shingles(text))`
  (with `functools.partial(shingle_hash, width=64)` for "affine64"; tested).
  """

  def __init__(self, num_perm: int = 128, seed: int = 1, shingle_size: int = 5,
               scheme: str = "affine32"):
    import datasketch  # pylint: disable=g-import-not-at-top
    self._datasketch = datasketch
    self.num_perm, self.seed, self.shingle_size = num_perm, seed, shingle_size
    self._template = datasketch.MinHash(num_perm=num_perm, seed=seed, scheme=scheme)
    self.scheme = self._template.scheme
    a, b = self._template.permutations
    self._a_P1, self._b_P1 = a[:, None], b[:, None]
    self._dtype = self._template.hashvalues.dtype
    # the hash width the scheme permutes: 32 bits (legacy, affine32) or 64 (affine64)
    self._hash_width = 64 if self.scheme == "affine64" else 32

  def shingle_hashes(self, text: str) -> np.ndarray:
    """`shingle_hash` of each shingle of `text` in order (a repeated shingle repeats: the
    min over shingles does not change, and dropping repeats costs more than it saves),
    as uint32 (uint64 for "affine64")."""
    hashes_S = _shingle_hashes64(_word_hashes(text), self.shingle_size)
    return hashes_S.astype(np.uint32) if self._hash_width == 32 else hashes_S  # low bits

  def signature(self, text: str) -> np.ndarray:
    """The MinHash hash values of `text`'s shingles, uint64[num_perm] (the max value
    when it has none)."""
    hv_S = self.shingle_hashes(text)
    if not len(hv_S):
      return self._template.hashvalues.astype(np.uint64)
    # permutations along the rows, shingles along the contiguous axis the min reduces
    if self.scheme == "legacy":
      hv_1S = hv_S.astype(np.uint64)[None, :]
      phv_PS = np.bitwise_and((self._a_P1 * hv_1S + self._b_P1) % np.uint64((1 << 61) - 1),
                              np.uint64((1 << 32) - 1))
    else:
      hv_1S = _fmix(hv_S.astype(self._dtype, copy=False), self._hash_width)[None, :]
      phv_PS = np.multiply(self._a_P1, hv_1S)  # wraps mod 2^width, as in datasketch
      phv_PS += self._b_P1
    return phv_PS.min(axis=1).astype(self._dtype, copy=False).astype(np.uint64, copy=False)

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
    return _lsh_bands(threshold, self.num_perm)


@functools.lru_cache(maxsize=64)
def _lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
  import datasketch  # pylint: disable=g-import-not-at-top
  lsh = datasketch.MinHashLSH(threshold=threshold, num_perm=num_perm)  # integrates ~10 ms
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
    s1, m1, s2, m2, s3 = _FMIX64
    hv = hv.astype(np.uint64, copy=False)
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

