"""AST match rate tau: a naming-agnostic tree-edit-distance similarity of two programs.

phi-1 (Gunasekar et al. 2023, section 5.2) pruned CodeExercises by an "AST match rate"
tau between an exercise and a HumanEval solution, agnostic to naming. The exact
definition used here:

Normalised tree. A program is parsed with `ast.parse`; then
  * docstrings and every other statement that is only a string literal are removed;
  * comments are gone already (the parser drops them);
  * identifiers are dropped: names, function/class/argument names, attribute names,
    imported names and aliases (every `str` field of a node), so renaming is free;
  * literal values are dropped: every `Constant` is the label `Constant`;
  * type annotations (`arg.annotation`, `returns`, type comments and parameters) and the
    load/store/del context nodes are dropped;
  * every other node is kept, labelled by its class name (`For`, `BinOp`, `Add`,
    `Compare`, `Lt`, `Call`, ...), with its children in the order of the node's
    `_fields` (list fields flattened in order): an ordered, labelled tree.

Tree edit distance. TED(A, B) is the least number of unit-cost operations that turn
the ordered tree A into B: delete a node (its children take its place), insert a node,
or relabel a node (cost 0 when the labels are equal). It is computed exactly by the
Zhang-Shasha algorithm (SIAM J. Comput. 18(6), 1989), `tree_edit_distance`.

Match rate.  tau(A, B) = max(0, 1 - TED(A, B) / max(|A|, |B|)),  |T| = nodes of T.

tau is 1 exactly when the normalised trees are equal (a renamed copy, other literals,
other comments), falls as edits accumulate, and is 0 for trees that share nothing.
(TED can exceed max(|A|, |B|), e.g. a chain against a star: hence the clip at 0.)

Pre-filters (`tau_upper_bound`), never dropping a pair with tau >= threshold. Let h_A
be the multiset of A's labels and I = |h_A ∩ h_B| (multiset intersection: the sum over
labels of the smaller count). An edit script of cost TED corresponds to a mapping M
between the nodes of A and B (Tai 1979); with R the mapped pairs whose labels differ,

    TED = (|A| - |M|) + (|B| - |M|) + R.

The mapped pairs with equal labels, |M| - R, pair distinct nodes of A with distinct
nodes of B of the same label, so |M| - R <= I; and |M| <= min(|A|, |B|). Hence

    TED = |A| + |B| - |M| - (|M| - R) >= |A| + |B| - min(|A|, |B|) - I = max(|A|, |B|) - I,

so  tau <= I / max(|A|, |B|)       (the label-histogram bound),
and since I <= min(|A|, |B|):
    tau <= min(|A|, |B|) / max(|A|, |B|)    (the size-ratio bound).

A pair whose bound is below the threshold cannot reach it, so skipping its exact
computation changes no decision. `MatchIndex.matches` applies both bounds, vectorised
over all benchmark units at once, and runs Zhang-Shasha only on the pairs that survive
(`exhaustive=True` computes every pair instead, for checking).

Units. A program is compared unit by unit: each top-level function (and each method of
a top-level class) of a sample against the benchmark problem's function under test;
a sample without functions is one unit (its whole module). A sample's tau for a
problem is the best over its units.
"""

from __future__ import annotations

import ast
import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

# node fields that carry no structure of the computation (see the module docstring)
_DROPPED_FIELDS = frozenset({"annotation", "returns", "type_comment", "type_params", "ctx",
                             "kind"})
_CONTEXT_TYPES = (ast.Load, ast.Store, ast.Del)
_FUNCTION_TYPES = (ast.FunctionDef, ast.AsyncFunctionDef)


class Labels:
  """Interns node labels as small ints (one table shared by all trees compared)."""

  def __init__(self):
    self.ids: dict[str, int] = {}

  def __call__(self, label: str) -> int:
    return self.ids.setdefault(label, len(self.ids))

  def __len__(self) -> int:
    return len(self.ids)


@dataclasses.dataclass(frozen=True)
class Tree:
  """An ordered labelled tree in postorder, as Zhang-Shasha needs it.

  Attributes:
    labels: label id of each node, postorder (the root last).
    leftmost: postorder index of each node's leftmost leaf descendant.
    keyroots: for each leftmost leaf, the highest node that has it (the root and
      every node with a left sibling), ascending.
  """
  labels: tuple[int, ...]
  leftmost: tuple[int, ...]
  keyroots: tuple[int, ...]

  def __len__(self) -> int:
    return len(self.labels)

  @classmethod
  def from_nested(cls, root, labels: Labels | None = None) -> Tree:
    """From nested `(label, [children...])` tuples (labels: str, or int when `labels`
    is None)."""
    out_labels: list[int] = []
    leftmost: list[int] = []
    # iterative postorder: (node, next child index, leftmost leaf so far)
    stack = [(root, 0, -1)]
    while stack:
      node, child, first = stack.pop()
      label, children = node
      if child < len(children):
        stack.append((node, child + 1, first))
        stack.append((children[child], 0, -1))
        continue
      index = len(out_labels)
      out_labels.append(labels(label) if labels is not None else label)
      leftmost.append(first if children else index)
      if stack:  # report this subtree's leftmost leaf to the parent (first child only)
        parent, parent_child, _ = stack[-1]
        if parent_child == 1:
          stack[-1] = (parent, parent_child, leftmost[index])
    seen: dict[int, int] = {}
    for index, leaf in enumerate(leftmost):
      seen[leaf] = index  # the highest node with this leftmost leaf
    return cls(tuple(out_labels), tuple(leftmost), tuple(sorted(seen.values())))


def tree_edit_distance(a: Tree, b: Tree) -> int:
  """Exact unit-cost ordered tree edit distance (Zhang-Shasha)."""
  if not len(a) or not len(b):
    return len(a) + len(b)
  la, lb = a.leftmost, b.leftmost
  xa, xb = a.labels, b.labels
  treedist = [[0] * len(b) for _ in range(len(a))]
  for i in a.keyroots:
    li = la[i]
    rows = i - li + 2
    for j in b.keyroots:
      lj = lb[j]
      cols = j - lj + 2
      fd = [[0] * cols for _ in range(rows)]
      for y in range(1, cols):
        fd[0][y] = y
      for x in range(1, rows):
        ii = li + x - 1
        lii = la[ii]
        prev, cur = fd[x - 1], fd[x]
        cur[0] = x
        td_row = treedist[ii]
        label = xa[ii]
        whole_a = lii == li
        for y in range(1, cols):
          jj = lj + y - 1
          best = prev[y] + 1
          insert = cur[y - 1] + 1
          if insert < best:
            best = insert
          if whole_a and lb[jj] == lj:
            match = prev[y - 1] + (label != xb[jj])
            if match < best:
              best = match
            cur[y] = best
            td_row[jj] = best
          else:
            match = fd[lii - li][lb[jj] - lj] + td_row[jj]
            cur[y] = match if match < best else best
  return treedist[len(a) - 1][len(b) - 1]


def match_rate(a: Tree, b: Tree) -> float:
  """tau(a, b) = max(0, 1 - TED / max(|a|, |b|)) (see the module docstring)."""
  size = max(len(a), len(b))
  if size == 0 or a == b:  # equal trees (a renamed copy): TED 0 without the search
    return 1.0
  # (size - TED) / size, not 1 - TED / size: the same float operations as the bounds'
  # (integer / the same size), so a bound is never below the tau it bounds by rounding
  return max(0, size - tree_edit_distance(a, b)) / size


# -- normalisation ---------------------------------------------------------------------------


def _is_string_statement(node: ast.AST) -> bool:
  return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
          and isinstance(node.value.value, str))


def _children(node: ast.AST) -> Iterable[ast.AST]:
  for name, value in ast.iter_fields(node):
    if name in _DROPPED_FIELDS:
      continue
    items = value if isinstance(value, list) else [value]
    for item in items:
      if isinstance(item, ast.AST) and not isinstance(item, _CONTEXT_TYPES):
        if not _is_string_statement(item):
          yield item


def normalized(node: ast.AST):
  """The normalised tree of `node` as nested `(label, [children])` tuples."""
  # iterative, so deeply nested expressions cannot hit the recursion limit
  root = (type(node).__name__, [])
  stack = [(node, root[1])]
  while stack:
    current, out = stack.pop()
    for child in _children(current):
      entry = (type(child).__name__, [])
      out.append(entry)
      stack.append((child, entry[1]))
  return root


def tree_of(node: ast.AST, labels: Labels) -> Tree:
  """The normalised postorder tree of an AST node."""
  return Tree.from_nested(normalized(node), labels)


def program_units(module: ast.Module) -> list[ast.AST]:
  """The units a program is compared by: top-level functions and methods of top-level
  classes, or the whole module when it has none."""
  units: list[ast.AST] = []
  for node in module.body:
    if isinstance(node, _FUNCTION_TYPES):
      units.append(node)
    elif isinstance(node, ast.ClassDef):
      units.extend(n for n in node.body if isinstance(n, _FUNCTION_TYPES))
  return units or [module]


def function_named(module: ast.Module, name: str) -> ast.AST | None:
  """The top-level function `name` of a module, if any."""
  for node in module.body:
    if isinstance(node, _FUNCTION_TYPES) and node.name == name:
      return node
  return None


# -- matching against a set of benchmark units -----------------------------------------------


@dataclasses.dataclass
class Matches:
  """The benchmark units a sample matches at or above a threshold."""
  tau: dict[int, float]  # benchmark unit index -> the sample's best tau with it
  unit: dict[int, int]  # benchmark unit index -> the sample unit that reached it
  computed: int = 0  # exact tree edit distances computed
  pruned: int = 0  # pairs a bound ruled out

  def best(self) -> tuple[int, float]:
    """(unit index, tau) of the highest tau (lowest index on ties); (-1, 0.0) if none."""
    if not self.tau:
      return -1, 0.0
    p = min(self.tau, key=lambda q: (-self.tau[q], q))
    return p, self.tau[p]


class MatchIndex:
  """Benchmark trees with their label histograms, for many samples against all of them.

  Args:
    trees: the benchmark units' trees (labels interned with `labels`).
    labels: the label table the trees were built with; samples must use the same.
    min_nodes: units smaller than this (on either side) are not compared: tiny
      functions (`return len(s)`) match anything of the same shape.
  """

  def __init__(self, trees: Sequence[Tree], labels: Labels, *, min_nodes: int = 0):
    self.trees = list(trees)
    self.labels = labels
    self.min_nodes = min_nodes
    self.sizes_P = np.asarray([len(t) for t in self.trees], np.int64)
    self._hist_PV = self._histograms(self.trees)

  def _histograms(self, trees: Sequence[Tree]) -> np.ndarray:
    hist_NV = np.zeros((len(trees), max(len(self.labels), 1)), np.int32)
    for row, tree in enumerate(trees):
      np.add.at(hist_NV[row], np.asarray(tree.labels, np.int64), 1)
    return hist_NV

  def bounds(self, tree: Tree) -> tuple[np.ndarray, np.ndarray]:
    """(size-ratio bound, histogram bound) of tau for `tree` against every unit [P]."""
    size = len(tree)
    larger_P = np.maximum(self.sizes_P, size).astype(np.float64)
    ratio_P = np.minimum(self.sizes_P, size) / np.maximum(larger_P, 1.0)
    counts = np.bincount(np.asarray(tree.labels, np.int64), minlength=len(self.labels))
    width = self._hist_PV.shape[1]
    if counts.shape[0] > width:  # labels the benchmark never has cannot be shared
      counts = counts[:width]
    shared_P = np.minimum(self._hist_PV[:, :counts.shape[0]], counts).sum(axis=1)
    hist_P = shared_P / np.maximum(larger_P, 1.0)
    return ratio_P, hist_P

  def matches(self, units: Sequence[Tree], threshold: float, *,
              exhaustive: bool = False) -> Matches:
    """Every benchmark unit some sample unit reaches tau >= threshold with, exactly.

    Pairs whose size-ratio or histogram bound is below `threshold` are skipped (they
    cannot reach it: see the module docstring); exhaustive=True computes every pair
    instead (the same result, for checking the bounds).
    """
    found = Matches({}, {})
    large_P = self.sizes_P >= self.min_nodes
    for u, tree in enumerate(units):
      if len(tree) < self.min_nodes:
        continue
      if exhaustive:
        candidates = np.nonzero(large_P)[0]
      else:
        ratio_P, hist_P = self.bounds(tree)
        passing_P = large_P & (ratio_P >= threshold) & (hist_P >= threshold)
        found.pruned += int(large_P.sum() - passing_P.sum())
        candidates = np.nonzero(passing_P)[0]
      for p in candidates.tolist():
        if not exhaustive and hist_P[p] <= found.tau.get(p, -1.0):
          found.pruned += 1  # this unit cannot beat the one already found for p
          continue
        tau = match_rate(tree, self.trees[p])
        found.computed += 1
        if tau >= threshold and tau > found.tau.get(p, -1.0):
          found.tau[p], found.unit[p] = tau, u
    return found
