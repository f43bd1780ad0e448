"""Strict parsing of model answers (graders' and annotators' JSON verdicts)."""

from __future__ import annotations

import json
import re

_FENCED = re.compile(r"```(?:json)?[ \t]*\n(.*?)\n?[ \t]*```", re.DOTALL)


def parse_scored_answer(text: str, key: str, max_value: int,
                        what: str = "answer") -> tuple[int, str]:
  """(value, reason) from an answer that must be exactly {key: int 0..max_value,
  "reason": str}; ValueError (naming what is wrong) otherwise.

  Strict, for graders and annotators: one enclosing ```json fence is tolerated, but a
  number is never read out of prose. A map_jsonl `parse` callback raising this gets the
  request asked again, then recorded as unanswered.
  """
  body = text.strip()
  fenced = _FENCED.fullmatch(body)
  if fenced:
    body = fenced.group(1).strip()
  try:
    answer = json.loads(body)
  except ValueError as e:
    raise ValueError(f"the answer is not a JSON object ({e}): {text[:200]!r}") from None
  if not isinstance(answer, dict):
    raise ValueError(f"the answer is JSON but not an object: {text[:200]!r}")
  if set(answer) != {key, "reason"}:
    raise ValueError(f"the {what} must have exactly the keys '{key}' and 'reason', got "
                     f"{sorted(answer)}")
  value = answer[key]
  if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= max_value:
    raise ValueError(f"'{key}' must be an integer from 0 to {max_value}, got {value!r}")
  if not isinstance(answer["reason"], str) or not answer["reason"].strip():
    raise ValueError("'reason' must be a non-empty string")
  return value, answer["reason"].strip()
