"""The chat messages sent to the teacher for one drawn topic (a pure function of it).

The wording follows what phi-1 describes (textbook sections that interleave natural
language with code, aimed at reasoning and basic algorithms; exercises that are a
function signature and docstring followed by the solution) and asks for the form the
parsers and gates check: fenced ```python blocks, one self-contained function whose
docstring carries doctest examples, assert statements after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TEXTBOOK_SYSTEM = (
    "You write clear, correct, self-contained sections of a Python programming textbook. "
    "Every piece of code you show is valid Python 3 and runs as written.")

EXERCISE_SYSTEM = (
    "You write Python programming exercises with reference solutions. Every function you "
    "write is correct, self-contained and passes its own tests.")

TEXTBOOK_TEMPLATE = """\
Write {style} for {audience}.

Topic: {concept}, applied to {algorithm}, in the context of {domain}.

Requirements:
- Interleave short explanations in plain English with Python code in fenced ```python blocks.
- Build the reader's reasoning: explain why each step works before or after showing it.
- Every code block must be valid Python 3 on its own (no `...` placeholders, no shell commands).
- Include at least one complete function with a docstring, and show it being called.
- Do not mention these instructions, the audience or the style by name; start with the content."""

EXERCISE_TEMPLATE = """\
Write one {difficulty} Python exercise with its solution.

It combines {concept_a} and {concept_b}, uses {algorithm}, and is set in the context of {domain}.

Requirements:
- Exactly one top-level function named `{function_name}`, with type hints.
- A docstring that states the task precisely (inputs, output, edge cases) and ends with
  at least two doctest examples (`>>> {function_name}(...)` followed by the expected output).
- The body solves the task; any import goes inside the function. Only the standard library.
- After the function, at top level, at least three `assert` statements that test it,
  including an edge case.
- Reply with a single ```python code block holding the function and the asserts, nothing else."""


GROUNDING_TEMPLATE = """\


Here is an extract of real Python code. Ground the section in it: teach the ideas it
uses, at the level of the audience, in code of your own (do not copy the extract, and
do not mention it).

```python
{extract}```"""


def textbook_messages(topic: Mapping[str, Any], extract: str | None = None
                      ) -> list[dict[str, str]]:
  """The chat of a textbook request for a topic drawn by topics.draw_textbook; with an
  extract of code (grounding.py), the request is grounded in it (as Cosmopedia's
  prompts are in web extracts)."""
  user = TEXTBOOK_TEMPLATE.format(**topic)
  if extract is not None:
    user += GROUNDING_TEMPLATE.format(extract=extract if extract.endswith("\n")
                                      else extract + "\n")
  return [{"role": "system", "content": TEXTBOOK_SYSTEM}, {"role": "user", "content": user}]


def exercise_messages(topic: Mapping[str, Any]) -> list[dict[str, str]]:
  """The chat of an exercise request for a topic drawn by topics.draw_exercise."""
  concept_a, concept_b = topic["concepts"]
  user = EXERCISE_TEMPLATE.format(concept_a=concept_a, concept_b=concept_b, **topic)
  return [{"role": "system", "content": EXERCISE_SYSTEM}, {"role": "user", "content": user}]


def messages(generator: str, topic: Mapping[str, Any], extract: str | None = None
             ) -> list[dict[str, str]]:
  """textbook_messages or exercise_messages by generator name (an extract grounds
  textbooks only)."""
  if generator == "textbooks":
    return textbook_messages(topic, extract)
  if generator == "exercises":
    return exercise_messages(topic)
  raise ValueError(f"unknown generator {generator!r}")
