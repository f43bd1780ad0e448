"""Tests of phi_jax.serving.text_stream: what a streamed reply may emit, and when."""

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
