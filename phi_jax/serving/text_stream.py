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

A push costs what it adds, not the length of the row: only a window of tokens is
decoded again, from the last point where the text was complete (as the incremental
detokenizers of HF's TextStreamer and vLLM do), and stop strings are searched only in
text not yet emitted (no stop string can start inside the emitted text, since a tail
that could begin one is never emitted).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from absl import logging

from phi_jax.tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"


def _stop_cut(text: str, stop: Sequence[str]) -> int:
  """How much of `text` (all that is known so far) no stop string can cut: up to the
  first stop string, and before the earliest tail that a stop string begins with."""
  hits = [i for i in (text.find(s) for s in stop) if i >= 0]
  end = min(hits, default=len(text))
  for s in stop:
    # The earliest tail text[q:] that s starts with (it may still complete).
    for q in range(max(0, len(text) - len(s) + 1), end):
      if s.startswith(text[q:]):
        end = q
        break
  return end


def stable_prefix_length(text: str, stop: Sequence[str]) -> int:
  """How much of `text` is final: before any stop string and any stop-string prefix,
  and before a last U+FFFD (a multi-byte character still incomplete)."""
  return _stop_cut(text[:-1] if text.endswith(_REPLACEMENT) else text, stop)


class TextStream:
  """Turns one row's tokens, pushed chunk by chunk, into text deltas safe to emit.

  Decoding state (token offsets as in vLLM's incremental detokenizer): the text of
  tokens[:read_offset] is complete; tokens[prefix_offset:read_offset] is decoded again
  with the new tokens, as context for tokenizers whose decoding of a token depends on
  the one before it.
  """

  def __init__(self, tokenizer: Tokenizer, stop: Sequence[str] = (),
               eos_token_ids: Iterable[int] = ()):
    self._tokenizer = tokenizer
    self._stop = tuple(stop)
    self._eos = set(eos_token_ids)
    self._tokens: list[int] = []
    self._prefix_offset = self._read_offset = 0
    self._prefix_text = ""  # decode(tokens[prefix_offset:read_offset])
    self._taken = 0  # chars of the text after read_offset already taken into `_pending`
    self._pending = ""  # final text not emitted yet (it may begin a stop string)
    self._stopped = False  # a stop string was found: nothing more is emitted
    self._emitted: list[str] = []

  @property
  def emitted(self) -> str:
    """Everything emitted so far."""
    return "".join(self._emitted)

  def push(self, tokens: Iterable[int]) -> str:
    """Adds newly generated tokens; returns the new text that is now final ('' if none)."""
    self._tokens.extend(t for t in tokens if t not in self._eos)
    if self._stopped:
      return ""
    new_text = self._tokenizer.decode(self._tokens[self._prefix_offset:])[
        len(self._prefix_text):]
    complete = not new_text.endswith(_REPLACEMENT)
    final = new_text if complete else new_text[:-1]
    self._pending += final[self._taken:]
    self._taken = max(self._taken, len(final))
    if complete:  # the next window starts here
      self._prefix_offset, self._read_offset = self._read_offset, len(self._tokens)
      self._prefix_text = self._tokenizer.decode(
          self._tokens[self._prefix_offset:self._read_offset])
      self._taken = 0
    end = _stop_cut(self._pending, self._stop)
    self._stopped = any(s in self._pending for s in self._stop)
    delta, self._pending = self._pending[:end], self._pending[end:]
    if delta:
      self._emitted.append(delta)
    return delta

  def finish(self, final_text: str) -> str:
    """The rest of the completion's final text, after everything emitted so far."""
    emitted = self.emitted
    if not final_text.startswith(emitted):
      logging.warning("streamed text %r is not a prefix of the final text %r", emitted,
                      final_text)
      return ""
    delta = final_text[len(emitted):]
    self._emitted = [final_text]
    return delta
