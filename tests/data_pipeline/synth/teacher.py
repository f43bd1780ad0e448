"""A deterministic scripted teacher for the synthesis tests (a FakeOpenAI responder).

The kind of each answer is a function of the request's messages (sha256 of the user
text), so a test recomputes which request got which answer from the request alone, and
every run of the same requests gets the same answers.

Textbook kinds: good (prose + a Python block, words drawn per request), bad_syntax,
no_code, truncated. Exercise kinds: good, bare_code (no fences), doctest_fail,
assert_fail, infinite_loop, escape (writes outside its directory, then exits before its
failing asserts), no_code, two_functions.
"""

from __future__ import annotations

import hashlib
import random

from data_pipeline.synth import prompts
from tests.fake_openai import Reply

TEXTBOOK_KINDS = ("good", "good", "good", "bad_syntax", "no_code", "truncated")
EXERCISE_KINDS = ("good", "good", "good", "bare_code", "doctest_fail", "assert_fail",
                  "infinite_loop", "escape", "no_code", "two_functions")
WORDS = ("loop value list index order sum count step item check result case string "
         "number pair range table key scan merge split left right middle total first last "
         "grid path node edge queue stack window prefix digit prime even odd swap sort "
         "search bound limit score label entry record event price route block slot").split()
ESCAPE_MARKER = "/tmp/phi_jax_synth_escape_marker"


def _rng(text: str) -> random.Random:
  return random.Random(int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big"))


def user_text(messages) -> str:
  return [m["content"] for m in messages if m["role"] == "user"][-1]


def is_textbook(messages) -> bool:
  return messages[0]["content"] == prompts.TEXTBOOK_SYSTEM


def kind_of(messages) -> str:
  kinds = TEXTBOOK_KINDS if is_textbook(messages) else EXERCISE_KINDS
  return kinds[_rng("kind/" + user_text(messages)).randrange(len(kinds))]


def asked_name(messages) -> str:
  return user_text(messages).split("named `", 1)[1].split("`", 1)[0]


def textbook(messages) -> Reply:
  kind, rng = kind_of(messages), _rng(user_text(messages))
  prose = " ".join(rng.choice(WORDS) for _ in range(90))
  name = "_".join(rng.sample(WORDS, 2))
  code = (f"def {name}(items):\n    \"\"\"Return the {rng.choice(WORDS)} total.\"\"\"\n"
          f"    return sum(x * {rng.randrange(2, 99)} for x in items)\n\n"
          f"print({name}([1, 2, 3]))\n")
  if kind == "bad_syntax":
    code = code.replace("(items):", "(items)")
  if kind == "no_code":
    return Reply(prose + "\n\n" + prose)
  text = (f"## {rng.choice(WORDS).title()}\n\n{prose[:300]}\n\n```python\n{code}```\n\n"
          f"{prose[300:]}\n")
  return Reply(text, "length" if kind == "truncated" else "stop")


def exercise(messages, avoid=()) -> Reply:
  kind, rng = kind_of(messages), _rng(user_text(messages))
  if kind in avoid:
    kind = "good"
  name = asked_name(messages)
  k, m = rng.randrange(1, 50), rng.randrange(2, 9)
  doc_words = " ".join(rng.choice(WORDS) for _ in range(12))
  body = f"    total = {k}\n    for v in values:\n        total += v * {m}\n    return total\n"
  expected = k + 3 * m
  if kind == "doctest_fail":
    expected += 1
  if kind == "infinite_loop":
    body = "    while True:\n        pass\n"
  if kind == "escape":
    body = (f"    import os\n    with open({ESCAPE_MARKER!r}, 'w') as f:\n"
            f"        f.write('escaped')\n    os._exit(0)\n")
  function = (f"def {name}(values: list[int]) -> int:\n"
              f"    \"\"\"Return {k} plus {m} times the sum of `values` ({doc_words}).\n\n"
              f"    >>> {name}([1, 2])\n    {expected}\n    >>> {name}([])\n    {k}\n    \"\"\"\n"
              + body)
  asserts = (f"assert {name}([3]) == {k + 3 * m}\n"
             f"assert {name}([0, 0]) == {k if kind != 'assert_fail' else k + 1}\n"
             f"assert {name}([-1]) == {k - m}\n")
  if kind == "two_functions":
    function += f"\n\ndef helper_{name}(x):\n    return x\n"
  if kind == "no_code":
    return Reply(f"Here is an idea: {doc_words}. Sum the values and add {k}.")
  if kind == "bare_code":
    return Reply(function + "\n" + asserts)
  return Reply(f"Sure, here is the exercise.\n\n```python\n{function}\n{asserts}```\n"
               f"It runs in linear time.")


def respond(request, avoid=()) -> Reply:
  """The FakeOpenAI responder; exercise kinds in `avoid` are answered as 'good'."""
  messages = request.body["messages"]
  return textbook(messages) if is_textbook(messages) else exercise(messages, avoid)
