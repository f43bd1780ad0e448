from __future__ import annotations

import ast
import functools
import random

import pytest

from data_pipeline.decontaminate import ast_match
from data_pipeline.decontaminate.ast_match import Labels, MatchIndex, Tree, tree_edit_distance
from tests.data_pipeline.decontaminate.conftest import NEAR_COPY_37, UNRELATED

PROGRAM = '''\
def total_price(items, tax):
    """Sum of the items' prices with tax."""
    subtotal = 0
    for item in items:
        subtotal += item.price * item.count
    rate = 1 + tax / 100
    total = subtotal * rate
    return round(total, 2)
'''

RENAMED = '''\
def f(xs, t):
    # no docstring, other names, other literals
    acc = 7
    for x in xs:
        acc += x.cost * x.n   # attribute names differ too
    r = 3 + t / 9
    y = acc * r
    return round(y, 5)
'''


def unit(source: str, labels: Labels) -> Tree:
  return ast_match.tree_of(ast.parse(source).body[0], labels)


def tau(a: str, b: str) -> float:
  labels = Labels()
  return ast_match.match_rate(unit(a, labels), unit(b, labels))


def brute_force_ted(a, b) -> int:
  """Unit-cost ordered tree edit distance by its recursive definition on forests
  (Zhang & Shasha 1989, section 2): delete or insert the rightmost root, or map the
  two rightmost roots onto each other."""

  @functools.lru_cache(maxsize=None)
  def forest(f, g):
    if not f and not g:
      return 0
    if not g:
      label, children = f[-1]
      return forest(f[:-1] + children, g) + 1
    if not f:
      label, children = g[-1]
      return forest(f, g[:-1] + children) + 1
    (lv, cv), (lw, cw) = f[-1], g[-1]
    return min(forest(f[:-1] + cv, g) + 1, forest(f, g[:-1] + cw) + 1,
               forest(cv, cw) + forest(f[:-1], g[:-1]) + (lv != lw))

  return forest((a,), (b,))


def random_tree(size: int, rng: random.Random, alphabet: int = 3):
  if size == 1:
    return (rng.randrange(alphabet), ())
  rest, children = size - 1, []
  while rest:
    k = rng.randint(1, rest)
    children.append(random_tree(k, rng, alphabet))
    rest -= k
  return (rng.randrange(alphabet), tuple(children))


def test_zhang_shasha_equals_brute_force_on_small_trees():
  rng = random.Random(0)
  for _ in range(400):
    a = random_tree(rng.randint(1, 7), rng)
    b = random_tree(rng.randint(1, 7), rng)
    assert tree_edit_distance(Tree.from_nested(a), Tree.from_nested(b)) == brute_force_ted(a, b)


def test_zhang_shasha_on_known_cases():
  chain = (0, ((0, ((0, ((0, ()),)),)),))  # 4 nodes in a line
  star = (0, ((0, ()), (0, ()), (0, ())))  # a root with 3 leaves
  assert tree_edit_distance(Tree.from_nested(chain), Tree.from_nested(star)) == 4
  # Zhang & Shasha's figure: f(d(a c(b)) e) -> f(c(d(a b)) e) costs 2
  t1 = ("f", (("d", (("a", ()), ("c", (("b", ()),)))), ("e", ())))
  t2 = ("f", (("c", (("d", (("a", ()), ("b", ()))),)), ("e", ())))
  labels = Labels()
  assert tree_edit_distance(Tree.from_nested(t1, labels), Tree.from_nested(t2, labels)) == 2
  assert brute_force_ted(t1, t2) == 2


def test_normalisation_drops_names_literals_comments_docstrings_annotations():
  labels = Labels()
  plain = unit("def f(a, b):\n    return g(a.x, 1)\n", labels)
  decorated = unit('def h(p: int, q: "Q") -> list:\n    """doc"""\n    # comment\n'
                   '    "another bare string"\n    return k(p.y, "s")\n', labels)
  assert plain == decorated
  names = [name for name, i in sorted(labels.ids.items(), key=lambda kv: kv[1])]
  assert "Load" not in names and "Store" not in names
  assert set(names) >= {"FunctionDef", "arguments", "arg", "Return", "Call", "Attribute",
                        "Name", "Constant"}


def test_tau_is_one_for_a_renamed_copy():
  assert tau(PROGRAM, RENAMED) == 1.0
  assert tau(PROGRAM, PROGRAM) == 1.0


def test_tau_falls_monotonically_as_statements_change():
  body = PROGRAM.splitlines()
  replacements = {  # line index -> a statement of another shape
      2: "    subtotal = [0, 0]",
      4: "        subtotal.append(item)",
      5: "    rate = tax if tax else None",
      6: "    total = sorted(subtotal, key=len)[::-1]",
      7: "    raise ValueError(total)",
  }
  taus = [tau(PROGRAM, PROGRAM)]
  lines = list(body)
  for index, replacement in replacements.items():
    lines[index] = replacement
    taus.append(tau(PROGRAM, "\n".join(lines) + "\n"))
  assert taus[0] == 1.0
  assert all(later < earlier for earlier, later in zip(taus, taus[1:])), taus
  assert all(0.0 <= t <= 1.0 for t in taus)


def test_tau_is_symmetric_and_zero_for_disjoint_trees():
  assert tau(PROGRAM, UNRELATED) == pytest.approx(tau(UNRELATED, PROGRAM))
  disjoint_a = Tree.from_nested((0, ((1, ()), (1, ()))))
  disjoint_b = Tree.from_nested((2, ((3, ()), (3, ()), (3, ()), (3, ()))))
  assert ast_match.match_rate(disjoint_a, disjoint_b) == 0.0


def test_near_copy_of_humaneval_is_matched_and_unrelated_code_is_not(humaneval_targets):
  labels = Labels()
  trees = [ast_match.tree_of(t.unit, labels) for t in humaneval_targets]
  index = MatchIndex(trees, labels)
  copy = [unit(NEAR_COPY_37, labels)]
  found = index.matches(copy, 0.8)
  best, best_tau = found.best()
  assert humaneval_targets[best].task_id == "HumanEval/37"
  assert 0.9 <= best_tau < 1.0  # reordering two statements costs a little
  assert index.matches([unit(UNRELATED, labels)], 0.8).tau == {}


def _mutate(source: str, rng: random.Random) -> str:
  """A copy with one statement dropped or duplicated (for pairs near the thresholds)."""
  lines = source.splitlines()
  body = [i for i, line in enumerate(lines) if line.startswith("    ") and line.strip()
          and not line.strip().startswith(("if", "for", "while", "else", "elif", "def",
                                           "return", "try", "except", "with"))]
  for _ in range(10):
    if not body:
      break
    i = rng.choice(body)
    candidate = list(lines)
    if rng.random() < 0.5:
      candidate.insert(i, lines[i])
    else:
      candidate[i] = lines[i][:len(lines[i]) - len(lines[i].lstrip())] + "pass"
    text = "\n".join(candidate) + "\n"
    try:
      ast.parse(text)
      return text
    except SyntaxError:
      continue
  return source


def test_prefilter_agrees_with_the_unfiltered_computation(humaneval_targets):
  rng = random.Random(1)
  small = [t for t in humaneval_targets if t.unit is not None][:60]
  labels = Labels()
  index = MatchIndex([ast_match.tree_of(t.unit, labels) for t in small], labels)
  samples = []
  for target in rng.sample(small, 12):
    program = target.program
    samples.append(ast.parse(_mutate(program, rng)))
  pruned_total = 0
  for module in samples:
    units = [ast_match.tree_of(u, labels) for u in ast_match.program_units(module)]
    exact = index.matches(units, 0.0, exhaustive=True)
    for threshold in (0.5, 0.8, 0.9, 0.95):
      fast = index.matches(units, threshold)
      expected = {p: t for p, t in exact.tau.items() if t >= threshold}
      assert fast.tau == expected
      assert {p: fast.unit[p] for p in fast.tau} == {p: exact.unit[p] for p in expected}
      pruned_total += fast.pruned
      assert fast.computed + fast.pruned >= len(small)  # every pair is computed or pruned
  assert pruned_total > 0.8 * len(samples) * 4 * len(small)  # the bounds do prune


def test_bounds_hold_for_every_pair(humaneval_targets):
  labels = Labels()
  trees = [ast_match.tree_of(t.unit, labels) for t in humaneval_targets[:40]]
  index = MatchIndex(trees, labels)
  for tree in trees[:8]:
    ratio_P, hist_P = index.bounds(tree)
    for p, other in enumerate(trees):
      exact = ast_match.match_rate(tree, other)
      assert exact <= hist_P[p] <= ratio_P[p] + 1e-12


def test_min_nodes_skips_tiny_units():
  labels = Labels()
  tiny = unit("def f(s):\n    return len(s)\n", labels)
  index = MatchIndex([tiny], labels, min_nodes=8)
  assert index.matches([unit("def g(t):\n    return str(t)\n", labels)], 0.5).tau == {}
  assert MatchIndex([tiny], labels).matches(
      [unit("def g(t):\n    return str(t)\n", labels)], 0.5).tau == {0: 1.0}


def test_units_are_functions_and_methods():
  module = ast.parse("import os\nX = 1\ndef a():\n    pass\nclass C:\n    def m(self):\n"
                     "        pass\n    y = 2\n")
  assert [u.name for u in ast_match.program_units(module)] == ["a", "m"]
  script = ast.parse("x = 1\nprint(x)\n")
  assert ast_match.program_units(script) == [script]


def test_deep_nesting_does_not_recurse():
  source = "def f(x):\n    return " + "(" * 200 + "x" + ")" * 200 + " + 1" * 300 + "\n"
  tree = unit(source, Labels())
  assert len(tree) > 600
