"""Tests of phi_jax.serving.text_stream: what a streamed reply may emit, and when."""

import random

import pytest

from phi_jax.serving.text_stream import TextStream, stable_prefix_length
from phi_jax.tokenizer import byte_level

EOS = 256


@pytest.mark.parametrize("text,stop,expected", [
    ("abc", [], 3),
    ("abc\ufffd", [], 3),  # a multi-byte character still incomplete
    ("abc\ufffd\ufffd", [], 4),  # the first U+FFFD is an invalid byte: final
    ("x = 1\nde", ["\ndef"], 5),  # could still become the stop string
    ("x = 1\ndo", ["\ndef"], 8),
    ("x = 1\ndef g", ["\ndef"], 5),  # cut before the stop string
    ("xab", ["abc", "b"], 1),  # "b" is complete, but "abc" may start earlier
    ("zzab", ["abd", "b"], 2),
    ("ab", ["abc"], 0),
    ("xaab", ["ab"], 2),  # the "a" before the stop string is followed by it: final
    ("xb\ufffd", ["b€"], 1),  # the incomplete character may be the € that ends "b€"
])
def test_stable_prefix_length(text, stop, expected):
  assert stable_prefix_length(text, stop) == expected


def _stream_bytes(text, stop=(), per_push=1, final=None):
  """Pushes the bytes of text (per_push at a time); returns the deltas and the finish."""
  tokenizer = byte_level()
  tokens = tokenizer.encode(text)
  stream = TextStream(tokenizer, stop, eos_token_ids=[EOS])
  deltas = [stream.push(tokens[i:i + per_push]) for i in range(0, len(tokens), per_push)]
  return deltas, stream.finish(text if final is None else final)


@pytest.mark.parametrize("per_push", [1, 2, 3, 5])
def test_multi_byte_characters_are_emitted_only_when_complete(per_push):
  text = "héllo wörld € 😀 done"
  deltas, rest = _stream_bytes(text, per_push=per_push)
  assert not any("\ufffd" in d for d in deltas)
  assert "".join(deltas) + rest == text
  assert sum(1 for d in deltas if d) > 1


def test_one_byte_at_a_time_holds_back_a_split_character():
  deltas, _ = _stream_bytes("a€b")  # € is 3 bytes
  assert deltas == ["a", "", "", "€", "b"]


def test_nothing_past_a_stop_string_is_emitted():
  text = "x = 1\ndef g(): pass"
  deltas, rest = _stream_bytes(text, stop=["\ndef"], final="x = 1")
  assert "".join(deltas) == "x = 1" and rest == ""
  # A prefix of the stop string that does not complete it is released.
  deltas, rest = _stream_bytes("x\ndo it", stop=["\ndef"])
  assert "".join(deltas) + rest == "x\ndo it"
  assert deltas[1] == "" and deltas[2] == ""  # "\n", "\nd" held back


def test_invalid_bytes_do_not_stall_the_stream():
  tokenizer = byte_level()
  stream = TextStream(tokenizer)
  invalid = [0xFF, 0xE2, 0xFF, 0xFF]  # never valid UTF-8
  deltas = [stream.push([b]) for b in invalid + [0x41]]
  assert deltas == ["", "\ufffd", "\ufffd", "\ufffd", "\ufffdA"]
  assert "".join(deltas) == tokenizer.decode(invalid + [0x41])


def test_end_of_text_is_not_text():
  stream = TextStream(byte_level(), eos_token_ids=[EOS])
  assert stream.push([104, 105]) == "hi"
  assert stream.push([EOS]) == ""
  assert stream.finish("hi") == ""


@pytest.mark.parametrize("seed", range(40))
def test_incremental_text_equals_full_decoding(seed):
  """After every push, what was emitted is exactly the final part of the whole text
  decoded from scratch (`stable_prefix_length` of decode(all tokens)), for random
  byte streams over a small alphabet (stop strings hit, start and break off often),
  multi-byte characters, invalid bytes, end-of-text ids and random push sizes."""
  rng = random.Random(seed)
  tokenizer = byte_level()
  pieces = ["a", "b", "c", "\n", "é", "€", "😀"]
  alphabet = [b for p in pieces for b in p.encode()] + [0xFF, 0xE2]
  tokens = [rng.choice(alphabet) for _ in range(rng.randint(0, 120))]
  if tokens and rng.random() < 0.5:
    tokens.insert(rng.randrange(len(tokens)), EOS)
  stop = rng.sample(["ab", "ca", "b\nc", "€a", "cc", "a😀", "\n\n"], rng.randint(0, 3))
  stream = TextStream(tokenizer, stop, eos_token_ids=[EOS])
  pushed = 0
  while pushed < len(tokens):
    n = rng.randint(1, 9)
    stream.push(tokens[pushed:pushed + n])
    pushed += n
    text = tokenizer.decode([t for t in tokens[:pushed] if t != EOS])
    assert stream.emitted == text[:stable_prefix_length(text, stop)], (tokens[:pushed], stop)
  text = tokenizer.decode([t for t in tokens if t != EOS])
  hits = [i for i in (text.find(s) for s in stop) if i >= 0]
  final = text[:min(hits)] if hits else text
  stream.finish(final)
  assert stream.emitted == final


def test_a_push_decodes_a_window_not_the_whole_row():
  """A long row streamed token by token decodes each token about twice, not the row
  again on every push (the cost the incremental window exists to avoid)."""
  tokenizer = byte_level()
  decoded = []

  class Counting:
    def decode(self, ids):
      decoded.append(len(ids))
      return tokenizer.decode(ids)

  text = "def f(x):\n  return x + 1  # é€\n" * 40
  stream = TextStream(Counting(), stop=["\n\n\n"])
  for token in tokenizer.encode(text):
    stream.push([token])
  assert stream.emitted == text[:stable_prefix_length(text, ["\n\n\n"])]
  assert sum(decoded) <= 4 * len(text.encode())
