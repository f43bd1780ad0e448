"""Tests of phi_jax.tokenizer: the byte-level tokenizer and loading trained BPEs."""

import json
import os
import random

import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers
from transformers.convert_slow_tokenizer import bytes_to_unicode

from phi_jax.tokenizer import EOS, Tokenizer, byte_level

CODE = [
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "class Foo:\n\tdef __init__(self):\n\t\tself.x = {'a': [1, 2.5e-3]}\n",
    "for i in range(10):\n    print(f\"{i:>3}\")  # comment\n",
    "import numpy as np\nx = np.zeros((3, 4))\ny = x @ x.T\n",
    "    \n\n\t  trailing whitespace   \r\n",
]
UNICODE = ["héllo wörld", "日本語のテキスト", "emoji 🐍🚀👩‍💻", "∑ᵢ xᵢ² ≤ ∞", "\x00\x01\x7f",
           "Ελληνικά русский עברית العربية", "combining: e\u0301 a\u0308", ""]


def random_unicode(seed, count=20, length=40):
  rng = random.Random(seed)
  out = []
  for _ in range(count):
    chars = []
    for _ in range(rng.randint(0, length)):
      while True:
        code = rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0xFFFF),
                           rng.randint(0x10000, 0x10FFFF)])
        if not 0xD800 <= code <= 0xDFFF:  # surrogates are not encodable
          break
      chars.append(chr(code))
    out.append("".join(chars))
  return out


@pytest.mark.parametrize("text", CODE + UNICODE + random_unicode(0))
def test_byte_level_round_trip_and_ids_are_utf8_bytes(text):
  tokenizer = byte_level()
  ids = tokenizer.encode(text)
  assert ids == list(text.encode("utf-8"))
  assert tokenizer.decode(ids) == text


def test_byte_level_vocab():
  tokenizer = byte_level()
  assert tokenizer.vocab_size == 257
  assert tokenizer.eos_id == 256
  # Token i is GPT-2's printable stand-in for byte i (transformers' own table).
  reference = bytes_to_unicode()
  for b in range(256):
    assert tokenizer.backend.id_to_token(b) == reference[b]
  assert tokenizer.backend.id_to_token(256) == EOS
  # Single bytes decode to themselves; ASCII bytes are their characters.
  for b in range(128):
    assert tokenizer.decode([b]) == chr(b)
  # The end-of-text marker is one special token, skippable on decode.
  ids = tokenizer.encode("a" + EOS + "b")
  assert ids == [ord("a"), 256, ord("b")]
  assert tokenizer.decode(ids) == "a" + EOS + "b"
  assert tokenizer.decode(ids, skip_special_tokens=True) == "ab"
  assert tokenizer.encode_batch(CODE) == [tokenizer.encode(t) for t in CODE]


def test_byte_level_json_round_trip(tmp_path):
  tokenizer = byte_level()
  again = Tokenizer.from_json_str(tokenizer.to_json_str())
  texts = CODE + UNICODE + [EOS + "x"]
  assert [again.encode(t) for t in texts] == [tokenizer.encode(t) for t in texts]
  assert again.eos_id == 256 and again.vocab_size == 257
  path = tokenizer.save(str(tmp_path))
  assert os.path.basename(path) == "tokenizer.json"
  from_dir = Tokenizer.from_dir(str(tmp_path))
  assert [from_dir.decode(from_dir.encode(t)) for t in texts] == texts


def test_a_saved_tokenizer_loads_in_transformers_autotokenizer_with_its_eos(tmp_path):
  """lm-evaluation-harness's Hugging Face tokenizer backend loads the directory with
  AutoTokenizer and needs the end-of-text token (docs/serving.md)."""
  from transformers import AutoTokenizer
  tokenizer = byte_level()
  tokenizer.save(str(tmp_path))
  theirs = AutoTokenizer.from_pretrained(str(tmp_path))
  assert theirs.eos_token == EOS and theirs.eos_token_id == tokenizer.eos_id == 256
  for text in CODE + UNICODE + [EOS + "x"]:
    assert theirs(text, add_special_tokens=False)["input_ids"] == tokenizer.encode(text)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A small GPT-2 style byte-level BPE trained on code, saved in both file forms."""
  backend = tokenizers.Tokenizer(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[EOS],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  backend.train_from_iterator(CODE * 20, trainer=trainer)
  json_dir = str(tmp_path_factory.mktemp("tokenizer_json"))
  backend.save(os.path.join(json_dir, "tokenizer.json"))
  gpt2_dir = str(tmp_path_factory.mktemp("vocab_merges"))
  backend.model.save(gpt2_dir)
  assert sorted(os.listdir(gpt2_dir)) == ["merges.txt", "vocab.json"]
  return backend, json_dir, gpt2_dir


@pytest.mark.parametrize("form", ["tokenizer.json", "vocab.json+merges.txt"])
def test_from_dir_loads_trained_bpe(trained, form):
  backend, json_dir, gpt2_dir = trained
  tokenizer = Tokenizer.from_dir(json_dir if form == "tokenizer.json" else gpt2_dir)
  assert tokenizer is not None
  for text in CODE + UNICODE:
    want = backend.encode(text, add_special_tokens=False).ids
    assert tokenizer.encode(text) == want, text
    assert tokenizer.decode(tokenizer.encode(text)) == text
  # The merges are used: code compresses well below one token per byte.
  assert len(tokenizer.encode(CODE[0])) < 0.5 * len(CODE[0].encode("utf-8"))
  assert tokenizer.eos_id == backend.token_to_id(EOS)
  assert tokenizer.vocab_size == backend.get_vocab_size()
  # The end-of-text marker is a single special token in both forms.
  assert tokenizer.encode("x" + EOS) == [tokenizer.encode("x")[0], tokenizer.eos_id]
  assert tokenizer.decode(tokenizer.encode("x" + EOS), skip_special_tokens=True) == "x"


def test_from_dir_added_tokens(trained, tmp_path):
  _, _, gpt2_dir = trained
  for name in ("vocab.json", "merges.txt"):
    with open(os.path.join(gpt2_dir, name)) as f, open(tmp_path / name, "w") as g:
      g.write(f.read())
  with open(os.path.join(gpt2_dir, "vocab.json")) as f:
    size = len(json.load(f))
  with open(tmp_path / "added_tokens.json", "w") as f:
    json.dump({"<|fim|>": size + 1, "<|pad|>": size}, f)
  tokenizer = Tokenizer.from_dir(str(tmp_path))
  assert tokenizer.backend.token_to_id("<|pad|>") == size
  assert tokenizer.backend.token_to_id("<|fim|>") == size + 1
  assert tokenizer.encode("a<|fim|>") == [tokenizer.encode("a")[0], size + 1]


def test_from_dir_without_tokenizer(tmp_path):
  assert Tokenizer.from_dir(str(tmp_path)) is None
  (tmp_path / "vocab.json").write_text("{}")  # half a GPT-2 pair is no tokenizer
  assert Tokenizer.from_dir(str(tmp_path)) is None
  (tmp_path / "tokenizer.json").write_text("not json")
  with pytest.raises(ValueError, match="tokenizer.json"):
    Tokenizer.from_dir(str(tmp_path))
