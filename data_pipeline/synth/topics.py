"""The space synthetic samples are drawn from, and the deterministic draw of one request.

phi-1's teacher wrote repetitive, low-diversity text unless the prompts injected
randomness (topics, target audiences, constrained function names). Each request here
gets its own point of a product space, drawn from a generator seeded by
(seed, generator, index) alone, so request i of a run is the same request in every run
with that seed (and a killed run resumes exactly), and the record stores the point
(`meta["topic"]`) so the distribution can be audited and rebalanced:

    textbooks:  concept x algorithm x domain x audience x style
    exercises:  two concepts x algorithm x domain x function name x difficulty

The function name of an exercise is constrained (verb_noun from the lists below):
teachers left alone name every function `solve` or `calculate_sum`.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

PYTHON_CONCEPTS = (
    "variables and assignment", "integer and float arithmetic", "string methods",
    "string formatting", "string slicing", "lists", "list comprehensions", "tuples",
    "tuple unpacking", "dictionaries", "dictionary comprehensions", "sets",
    "set operations", "conditionals", "while loops", "for loops over ranges",
    "enumerate and zip", "nested loops", "early return", "functions with default arguments",
    "keyword arguments", "recursion", "generators", "iterators", "lambda functions",
    "sorting with a key function", "min and max with a key", "boolean logic",
    "integer division and modulo", "bit manipulation", "exceptions", "input validation",
    "slicing with steps", "two-dimensional lists", "stacks with lists",
    "queues with collections.deque", "collections.Counter", "collections.defaultdict",
    "heapq", "bisect", "itertools", "math module", "fractions", "type hints",
    "docstrings and doctests", "immutability and copying", "string building with join",
    "character codes with ord and chr", "any and all", "sum with a generator expression",
)

ALGORITHMS = (
    "linear search", "binary search", "bubble sort", "insertion sort", "selection sort",
    "merge sort", "quicksort partitioning", "counting sort", "two pointers",
    "sliding window", "prefix sums", "running maximum", "frequency counting",
    "hashing for lookups", "greatest common divisor", "least common multiple",
    "prime testing", "sieve of Eratosthenes", "fast exponentiation", "digit manipulation",
    "base conversion", "palindrome checking", "anagram detection", "string reversal",
    "run-length encoding", "Caesar cipher", "parenthesis matching with a stack",
    "matrix transposition", "matrix multiplication", "spiral traversal of a grid",
    "flood fill", "breadth-first search", "depth-first search", "topological sort",
    "shortest path in an unweighted graph", "dynamic programming over a 1-D table",
    "dynamic programming over a 2-D table", "memoization", "longest common subsequence",
    "edit distance", "knapsack", "coin change", "greedy interval scheduling",
    "merging sorted lists", "deduplication preserving order", "finding the k largest",
    "median of a list", "permutations by backtracking", "subsets by backtracking",
    "interval merging", "date and time arithmetic", "checksum computation",
)

DOMAINS = (
    "a library catalogue", "a weather station", "an online shop", "a school timetable",
    "a bank account ledger", "a chess board", "a music playlist", "a recipe book",
    "a train network", "a parking garage", "a hospital queue", "inventory management",
    "sports league tables", "a text adventure game", "social network friendships",
    "DNA sequences", "sensor readings", "student grades", "a file system tree",
    "a to-do list", "an election count", "a restaurant menu", "traffic lights",
    "a calendar", "a vending machine", "log file analysis", "a spreadsheet column",
    "a maze", "a garden planner", "an exchange rate table", "a fitness tracker",
    "a movie database", "package delivery routes", "a word game", "a thermostat",
    "a stock price series",
)

AUDIENCES = (
    "a high-school student who has just learned what a variable is",
    "a first-year computer science undergraduate",
    "a self-taught programmer preparing for coding interviews",
    "a data analyst moving from spreadsheets to Python",
    "a scientist who writes small scripts for experiments",
    "a teenager who likes puzzles and games",
    "an experienced programmer coming from Java",
    "a teacher preparing a lesson on algorithms",
    "a hobbyist building tools for their own use",
    "a student revising for an exam on data structures",
)

STYLES = (
    "a textbook section with a worked example",
    "a step-by-step tutorial that builds the solution gradually",
    "a Socratic dialogue between a teacher and a student",
    "a lecture note with short exercises and their solutions",
    "an explanation that first shows a naive solution, then improves it",
    "a problem-solving walkthrough that tests the code on small cases",
    "a concise reference entry followed by two examples",
    "a story-driven explanation anchored in the application domain",
)

DIFFICULTIES = ("easy", "medium", "hard")

FUNCTION_VERBS = (
    "compute", "count", "find", "merge", "filter", "group", "rank", "encode", "decode",
    "validate", "normalize", "split", "rotate", "flatten", "summarize", "schedule",
    "match", "balance", "compress", "expand", "locate", "measure", "reorder", "select",
    "trace", "score", "pair", "partition", "convert", "detect",
)

FUNCTION_NOUNS = (
    "intervals", "readings", "scores", "words", "digits", "records", "grid", "path",
    "tokens", "pairs", "segments", "orders", "ranges", "matrix", "sequence", "entries",
    "labels", "events", "prices", "votes", "routes", "items", "codes", "moves",
    "layers", "peaks", "gaps", "runs", "blocks", "slots",
)

TEXTBOOK_DIMENSIONS = {"concept": PYTHON_CONCEPTS, "algorithm": ALGORITHMS,
                       "domain": DOMAINS, "audience": AUDIENCES, "style": STYLES}
EXERCISE_DIMENSIONS = {"concepts": PYTHON_CONCEPTS, "algorithm": ALGORITHMS,
                       "domain": DOMAINS, "difficulty": DIFFICULTIES}
GENERATORS = ("textbooks", "exercises")


def request_rng(seed: int, generator: str, index: int) -> random.Random:
  """The random generator of one request: a function of (seed, generator, index) only
  (sha256-derived, so independent of PYTHONHASHSEED, the Python version's str hashing
  and every other request)."""
  digest = hashlib.sha256(f"phi_jax.synth/{seed}/{generator}/{index}".encode()).digest()
  return random.Random(int.from_bytes(digest[:8], "big"))


def draw_textbook(seed: int, index: int) -> dict[str, Any]:
  """The topic of textbook request `index`: one value of each TEXTBOOK_DIMENSIONS."""
  rng = request_rng(seed, "textbooks", index)
  return {name: rng.choice(values) for name, values in TEXTBOOK_DIMENSIONS.items()}


def draw_exercise(seed: int, index: int) -> dict[str, Any]:
  """The topic of exercise request `index`: two distinct concepts, an algorithm, a
  domain, a difficulty and the function name the teacher must use."""
  rng = request_rng(seed, "exercises", index)
  return {
      "concepts": sorted(rng.sample(PYTHON_CONCEPTS, 2)),
      "algorithm": rng.choice(ALGORITHMS),
      "domain": rng.choice(DOMAINS),
      "difficulty": rng.choice(DIFFICULTIES),
      "function_name": f"{rng.choice(FUNCTION_VERBS)}_{rng.choice(FUNCTION_NOUNS)}",
  }


def draw(generator: str, seed: int, index: int) -> dict[str, Any]:
  """draw_textbook or draw_exercise by name."""
  if generator == "textbooks":
    return draw_textbook(seed, index)
  if generator == "exercises":
    return draw_exercise(seed, index)
  raise ValueError(f"unknown generator {generator!r}; known: {list(GENERATORS)}")


def space_size(generator: str) -> int:
  """How many distinct topics `generator` can draw (the product of its dimensions)."""
  if generator == "textbooks":
    sizes = [len(values) for values in TEXTBOOK_DIMENSIONS.values()]
  elif generator == "exercises":
    n = len(PYTHON_CONCEPTS)
    sizes = [n * (n - 1) // 2, len(ALGORITHMS), len(DOMAINS), len(DIFFICULTIES),
             len(FUNCTION_VERBS) * len(FUNCTION_NOUNS)]
  else:
    raise ValueError(f"unknown generator {generator!r}; known: {list(GENERATORS)}")
  product = 1
  for size in sizes:
    product *= size
  return product
