"""data_pipeline.synth.topics and prompts: a request is a function of (seed, generator,
index) alone, the draw covers the space, and the prompt says what the gates check."""

import collections
import json
import os
import subprocess
import sys

from data_pipeline.synth import prompts, topics

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def test_draws_do_not_depend_on_the_process_or_its_hash_seed():
  script = ("import json; from data_pipeline.synth import topics; print(json.dumps("
            "[topics.draw(g, 7, i) for g in topics.GENERATORS for i in range(20)]))")
  outputs = []
  for hash_seed in ("1", "2"):
    env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=REPO_ROOT)
    outputs.append(json.loads(subprocess.check_output([sys.executable, "-c", script],
                                                      env=env, cwd=REPO_ROOT)))
  here = [topics.draw(g, 7, i) for g in topics.GENERATORS for i in range(20)]
  assert outputs[0] == outputs[1] == here
  assert topics.draw("textbooks", 8, 0) != topics.draw("textbooks", 7, 0)


def test_the_draw_covers_each_dimension_about_uniformly():
  draws = [topics.draw_exercise(0, i) for i in range(3000)]
  for name, values in topics.EXERCISE_DIMENSIONS.items():
    counts = collections.Counter(
        v for d in draws for v in (d[name] if isinstance(d[name], list) else [d[name]]))
    assert set(counts) == set(values), name
    per_draw = 2 if name == "concepts" else 1
    expected = per_draw * len(draws) / len(values)
    # Binomial counts: every value within 5 standard deviations of its expectation.
    assert all(abs(c - expected) < 5 * expected ** 0.5 for c in counts.values()), name
  assert all(len(set(d["concepts"])) == 2 for d in draws)
  names = collections.Counter(d["function_name"] for d in draws)
  assert len(names) > 500  # constrained names vary (30 x 30 possible)
  assert topics.space_size("textbooks") == 50 * 52 * 36 * 10 * 8


def test_prompts_ask_for_what_the_gates_check():
  topic = topics.draw_exercise(3, 5)
  user = prompts.exercise_messages(topic)[1]["content"]
  assert f"named `{topic['function_name']}`" in user and topic["difficulty"] in user
  assert "doctest" in user and "assert" in user and "```python" in user
  book = topics.draw_textbook(3, 5)
  system, user = prompts.textbook_messages(book)
  assert system["role"] == "system" and all(book[k] in user["content"] for k in book)
