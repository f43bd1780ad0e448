"""Incremental text of a growing list of generated tokens, for streaming responses.

A streamed reply must concatenate to exactly the final completion text, so it may only
emit text that no later token can change or cut:

  - a token can end inside a multi-byte UTF-8 character, which decodes to one U+FFFD
    until the next token completes it: a last U+FFFD is held back (earlier ones come
    from invalid bytes, which no later byte changes);
  - the text is cut before the first stop string, and a tail that could still grow
    into a stop string (`"\\nde"` with stop `"\\ndef"`) is held back;
  - end-of-text tokens are not text.

Whatever is held back is released by `finish`, which emits the rest of the final text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from absl import logging

from phi_jax.tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"


def stable_prefix_length(text: str, stop: Sequence[str]) -> int:
  """How much of `text` is final: before any stop string and any stop-string prefix."""
  end = len(text) - 1 if text.endswith(_REPLACEMENT) else len(text)
  for s in stop:
    hit = text.find(s)
    if hit >= 0:
      end = min(end, hit)
    # The earliest tail text[q:] that a stop string starts with (it may still complete).
    for q in range(max(0, len(text) - len(s) + 1), min(end, len(text))):
      if s.startswith(text[q:]):
        end = q
        break
  return end


class TextStream:
  """Turns one row's tokens, pushed chunk by chunk, into text deltas safe to emit."""

  def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = (),
               eos_token_ids: Iterable[int] = ()):
    self._tokenizer = tokenizer
    self._stop = tuple(stop)
    self._eos = set(eos_token_ids)
    self._tokens: list[int] = []
    self.emitted = ""

  def push(self, tokens: Iterable[int]) -> str:
    """Adds newly generated tokens; returns the new text that is now final ('' if none)."""
    self._tokens.extend(t for t in tokens if t not in self._eos)
    text = self._tokenizer.decode(self._tokens)
    end = stable_prefix_length(text, self._stop)
    if end <= len(self.emitted) or not text.startswith(self.emitted):
      return ""
    delta = text[len(self.emitted):end]
    self.emitted += delta
    return delta

  def finish(self, final_text: str) -> str:
    """The rest of the completion's final text, after everything emitted so far."""
    if not final_text.startswith(self.emitted):
      logging.warning("streamed text %r is not a prefix of the final text %r", self.emitted,
                      final_text)
      return ""
    delta = final_text[len(self.emitted):]
    self.emitted = final_text
    return delta
