"""phi_jax.llm.parse.parse_scored_answer: exactly {key, reason}, a fence tolerated, no guessing."""

import pytest

from phi_jax.llm import parse_scored_answer


def test_a_json_verdict_is_read_bare_or_in_one_json_fence():
  assert parse_scored_answer('{"score": 3, "reason": " fine "}', "score", 5) == (3, "fine")
  fenced = '```json\n{"score": 0, "reason": "empty"}\n```'
  assert parse_scored_answer(fenced, "score", 5) == (0, "empty")


@pytest.mark.parametrize("text, message", [
    ("The score is 4.", "not a JSON object"),
    ('[4, "ok"]', "not an object"),
    ('{"score": 4}', "exactly the keys 'score' and 'reason'"),
    ('{"score": 4, "reason": "x", "extra": 1}', "exactly the keys"),
    ('{"score": 6, "reason": "x"}', "integer from 0 to 5"),
    ('{"score": true, "reason": "x"}', "integer from 0 to 5"),
    ('{"score": 2.0, "reason": "x"}', "integer from 0 to 5"),
    ('{"score": 2, "reason": "  "}', "non-empty string"),
    ('Sure! ```json\n{"score": 2, "reason": "x"}\n```', "not a JSON object"),
])
def test_anything_else_is_refused_with_what_is_wrong(text, message):
  with pytest.raises(ValueError, match=message):
    parse_scored_answer(text, "score", 5)
