"""A long-context code benchmark: call a function defined far back in a long file.

Each problem is a generated Python file of a chosen length (in characters) made of small
documented functions. One of them, the target, sits at a chosen depth (0 = the start of
the file, 1 = its end); each has a one-line docstring naming what it computes, with
words of its own. The file ends with a comment that repeats the target's description
and an argument, then `result = `: the model must write the call of the target
function, which it can only name by finding the function the comment describes. A
completion passes when the file with it runs and `result` equals the target's value at
that argument; a call of another function of the file returns another value (the
generator makes sure of it) and a misspelt name raises NameError.

Nothing is read: the files are a function of (seed, length, depth, index), so the same
settings give the same problems on every machine. Lengths are characters of the prompt
(code tokenizes at about 3-4 characters per token with the CodeGen tokenizer); choose
lengths up to several times the trained context to see where a model (with or without
RoPE scaling: docs/long_context.md) stops finding the function. `breakdown` gives the
pass rate per (length, depth) cell, which the report shows as a table and a heat map.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from eval.benchmarks.base import Benchmark, Problem

NAME = "long-context"
DEFAULT_LENGTHS = (2000, 4000, 8000, 16000, 32000)
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
DEFAULT_PER_CELL = 4
MAX_LENGTH = 200_000  # characters: ~50k tokens; the names and descriptions suffice for it
HEADER = '"""Utility functions of a data-processing module."""\n\n'

_ADJECTIVES = ("amber", "brisk", "cobalt", "dusty", "eager", "frosty", "gentle", "hollow",
               "ivory", "jolly", "keen", "lunar", "mellow", "nimble", "olive", "placid",
               "quiet", "rustic", "silver", "tidal", "umber", "vivid", "woolen", "young",
               "zesty", "crimson", "golden", "misty", "stormy", "sunny")
_NOUNS = ("badger", "canyon", "delta", "ember", "falcon", "glacier", "harbor", "island",
          "jungle", "kettle", "lantern", "meadow", "nectar", "orchard", "pebble", "quarry",
          "river", "saddle", "thicket", "upland", "valley", "willow", "yarrow", "zephyr",
          "beacon", "cellar", "dune", "forest", "grove", "marsh")
_VERBS = ("compute", "derive", "measure", "estimate", "score", "weigh", "rank", "count",
          "total", "gauge")
_QUANTITIES = ("checksum", "weight", "index", "offset", "tally", "score", "ratio", "depth",
               "level", "balance")
# (body template, words): the body of a target or filler function of one argument x,
# with integer constants a, b, c.
_BODIES = (
    "    return (x * {a} + {b}) % {c}\n",
    "    total = {b}\n    for i in range(x % {c} + 1):\n        total += i * {a}\n"
    "    return total\n",
    "    value = x ^ {a}\n    return value * {b} - {c}\n",
    "    digits = [int(d) for d in str(abs(x))]\n    return sum(digits) * {a} + {b} * {c}\n",
    "    if x % 2 == 0:\n        return x // 2 + {a}\n    return x * {b} + {c}\n",
)


def _function(rng: random.Random, used: set[str]) -> tuple[str, str, str, dict]:
  """(name, description, source, constants) of a new function whose name and
  description no earlier function of the file has."""
  while True:
    adjective, noun = rng.choice(_ADJECTIVES), rng.choice(_NOUNS)
    verb, quantity = rng.choice(_VERBS), rng.choice(_QUANTITIES)
    name = f"{verb}_{adjective}_{noun}_{quantity}"
    description = f"the {quantity} of the {adjective} {noun} records"
    if name not in used and description not in used:
      used.update((name, description))
      break
  constants = {"a": rng.randint(2, 97), "b": rng.randint(2, 97), "c": rng.randint(101, 997)}
  body = rng.choice(_BODIES).format(**constants)
  source = (f"def {name}(x):\n    \"\"\"Return {description} for the key x.\"\"\"\n{body}\n\n")
  return name, description, source, constants


def _value(source: str, name: str, argument: int):
  """What the function `name` defined by `source` returns at `argument` (the generator's
  own code, never a model's)."""
  namespace: dict = {}
  exec(compile(source, f"<{name}>", "exec"), namespace)  # pylint: disable=exec-used
  return namespace[name](argument)


def tail(description: str, argument: int) -> str:
  """The end of the file: what to call, and the line the completion finishes."""
  return (f"# The {description.removeprefix('the ')} for the key {argument}, computed by "
          f"the function defined above:\nresult = ")


def generate(seed: int, length: int, depth: float, index: int = 0) -> Problem:
  """The problem of one (seed, length, depth, index): a file of about `length`
  characters (at least the header, the target and the tail) whose target function starts
  at about `depth` of the way through it."""
  if not 1 <= length <= MAX_LENGTH:
    raise ValueError(f"long-context: length must be in [1, {MAX_LENGTH}] characters, got "
                     f"{length}")
  if not 0.0 <= depth <= 1.0:
    raise ValueError(f"long-context: depth must be in [0, 1], got {depth}")
  rng = random.Random(f"long-context:{seed}:{length}:{depth!r}:{index}")
  used: set[str] = set()
  name, description, target, _ = _function(rng, used)
  argument = rng.randint(10, 999)
  expected = _value(target, name, argument)
  end = tail(description, argument)
  room = max(0, length - len(HEADER) - len(target) - len(end))
  fillers_before, fillers_after, size_before, size_after = [], [], 0, 0
  values = {expected}
  while size_before + size_after < room:
    filler_name, _, filler, _ = _function(rng, used)
    value = _value(filler, filler_name, argument)
    if value in values:  # a wrong call must never return the target's value
      continue
    values.add(value)
    if size_before < depth * room:
      fillers_before.append(filler)
      size_before += len(filler)
    else:
      fillers_after.append(filler)
      size_after += len(filler)
  prompt = HEADER + "".join(fillers_before) + target + "".join(fillers_after) + end
  return Problem(task_id=task_id(length, depth, index), prompt=prompt,
                 test=f"assert result == {expected!r}, result\n", entry_point=name,
                 canonical_solution=f"{name}({argument})")


def task_id(length: int, depth: float, index: int) -> str:
  return f"{NAME}/{length}/{depth:g}/{index}"


def cell_of(task: str) -> tuple[int, float]:
  """(length, depth) of a task id."""
  _, length, depth, _ = task.split("/")
  return int(length), float(depth)


class LongContext(Benchmark):
  """`per_cell` generated files for every (length, depth) pair, from `seed`."""

  name = NAME
  stop = ("\n",)

  def __init__(self, lengths: Sequence[int] = DEFAULT_LENGTHS,
               depths: Sequence[float] = DEFAULT_DEPTHS, per_cell: int = DEFAULT_PER_CELL,
               seed: int = 0):
    if not lengths or not depths:
      raise ValueError("long-context: lengths and depths must not be empty")
    if any(not 1 <= int(n) <= MAX_LENGTH for n in lengths):
      raise ValueError(f"long-context: lengths must be in [1, {MAX_LENGTH}] characters, got "
                       f"{list(lengths)}")
    if any(not 0.0 <= float(d) <= 1.0 for d in depths):
      raise ValueError(f"long-context: depths must be in [0, 1], got {list(depths)}")
    if per_cell < 1:
      raise ValueError(f"long-context: per_cell must be >= 1, got {per_cell}")
    self.lengths = tuple(int(n) for n in lengths)
    self.depths = tuple(float(d) for d in depths)
    self.per_cell = int(per_cell)
    self.seed = int(seed)

  def load(self, path: str | None = None) -> list[Problem]:
    if path:
      raise ValueError(f"long-context generates its problems (from its seed); it reads no "
                       f"data file, got {path}")
    problems = [generate(self.seed, length, depth, index) for length in self.lengths
                for depth in self.depths for index in range(self.per_cell)]
    ids = [p.task_id for p in problems]
    if len(set(ids)) != len(ids):
      raise ValueError(f"long-context: lengths {list(self.lengths)} and depths "
                       f"{list(self.depths)} repeat a (length, depth) cell (depths are told "
                       "apart to 6 significant digits)")
    return problems

  def program(self, problem: Problem, completion: str) -> str:
    return problem.prompt + completion + "\n" + problem.test

  def breakdown(self, results: Sequence[dict]) -> dict:
    """The pass rate of each (length, depth) cell over its samples."""
    cells: dict[tuple[int, float], list[int]] = {}
    for row in results:
      counts = cells.setdefault(cell_of(row["task_id"]), [0, 0])
      counts[0] += 1
      counts[1] += bool(row["passed"])
    return {"kind": "length_depth", "unit": "characters",
            "lengths": sorted({length for length, _ in cells}),
            "depths": sorted({depth for _, depth in cells}),
            "cells": [{"length": length, "depth": depth, "samples": n, "passed": c,
                       "pass_rate": c / n} for (length, depth), (n, c) in sorted(cells.items())]}
