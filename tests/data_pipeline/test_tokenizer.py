"""Tests of data_pipeline.tokenizer: CodeGen-style BPE training, loading, vocab padding.

The tokenizer is trained on real Python (CPython's standard library) and checked against
independent references: a pure-Python GPT-2 BPE encoder (OpenAI's encoder.py algorithm)
with a brute-force leftmost-longest added-token split, and transformers' CodeGenTokenizer
built from the saved vocab.json + merges.txt with CodeGen's own whitespace-token recipe.
"""

from __future__ import annotations

import glob
import json
import os
import random
import sysconfig

import pytest
import regex
from transformers import CodeGenTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode

from data_pipeline import tokenizer as tok_lib
from phi_jax.fim import FIM_TOKENS
from phi_jax.tokenizer import EOS, Tokenizer, byte_level

VOCAB = 2048
N_FILES = 300  # stdlib files: every 10th is held out of training
GPT2_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
EDGE_CASES = [
    "", " ", "\t", "\n", "x", EOS, "a" + EOS + "b", "<|endoftext", "|endoftext|>",
    "def f():\r\n    return 1\r\n",  # CRLF
    "class A:\n\tdef f(self):\n\t\treturn {'k': [1, 2]}\n",  # tab indents
    " " * 32 + "x", " " * 33 + "x", " " * 62 + "y", "\t" * 10 + "z", "\t" * 19,
    "x = 1  # two spaces\n\n\n   \t  \t\t mixed\n",
    "héllo wörld 日本語 🐍🚀👩‍💻 ∑ᵢ xᵢ² ≤ ∞ e\u0301 \x00\x01\x7f Ελληνικά русский",
    "s = 'it''s'  # 's 't 're 've 'm 'll 'd\n",
]


def _stdlib_files(count: int) -> list[str]:
  """The first `count` UTF-8 .py files of CPython's stdlib (sorted, newlines kept)."""
  root = sysconfig.get_paths()["stdlib"]
  paths = sorted(p for p in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
                 if "site-packages" not in p and os.path.getsize(p) < 200_000)
  texts = []
  for path in paths:
    try:
      with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    except (UnicodeDecodeError, OSError):
      continue
    if text.strip():
      texts.append(text)
    if len(texts) == count:
      break
  assert len(texts) == count, f"only {len(texts)} stdlib files under {root}"
  return texts


def _random_unicode(seed: int, count: int = 20, length: int = 60) -> list[str]:
  rng = random.Random(seed)
  out = []
  for _ in range(count):
    chars = []
    for _ in range(rng.randint(0, length)):
      code = rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0xD7FF),
                         rng.randint(0xE000, 0x10FFFF), ord(" "), ord("\t")])
      chars.append(chr(code))
    out.append("".join(chars))
  return out


@pytest.fixture(scope="module")
def corpus():
  texts = _stdlib_files(N_FILES)
  train = [t for i, t in enumerate(texts) if i % 10]
  held_out = [t for i, t in enumerate(texts) if not i % 10]
  return train, held_out


@pytest.fixture(scope="module")
def trained(corpus):
  return tok_lib.train_bpe(corpus[0], VOCAB, show_progress=False)


# ------------------------------------------------------------------ independent references
class ReferenceGPT2BPE:
  """GPT-2's encoder.py BPE in pure Python, plus a brute-force added-token split."""

  def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]],
               added: dict[str, int]):
    self.vocab, self.added = vocab, added
    self.ranks = {pair: i for i, pair in enumerate(merges)}
    self.byte_encoder = bytes_to_unicode()
    self.cache = {}

  def _bpe(self, word: str) -> list[str]:
    if word in self.cache:
      return self.cache[word]
    parts = list(word)
    while len(parts) > 1:
      pairs = [(self.ranks.get(pair, float("inf")), i)
               for i, pair in enumerate(zip(parts, parts[1:]))]
      rank, i = min(pairs)
      if rank == float("inf"):
        break
      first, second = parts[i], parts[i + 1]
      merged, j = [], 0
      while j < len(parts):  # merge every occurrence of the pair, left to right
        if j < len(parts) - 1 and parts[j] == first and parts[j + 1] == second:
          merged.append(first + second)
          j += 2
        else:
          merged.append(parts[j])
          j += 1
      parts = merged
    self.cache[word] = parts
    return parts

  def _encode_plain(self, text: str) -> list[int]:
    ids = []
    for word in GPT2_PATTERN.findall(text):
      chars = "".join(self.byte_encoder[b] for b in word.encode("utf-8"))
      ids.extend(self.vocab[p] for p in self._bpe(chars))
    return ids

  def encode(self, text: str) -> list[int]:
    ids, start, i = [], 0, 0
    starts = {t[0] for t in self.added}
    while i < len(text):
      match = None
      if text[i] in starts:  # the longest added token starting here, if any
        match = max((t for t in self.added if text.startswith(t, i)), key=len, default=None)
      if match is None:
        i += 1
        continue
      ids += self._encode_plain(text[start:i]) + [self.added[match]]
      i = start = i + len(match)
    return ids + self._encode_plain(text[start:])


def _reference_of(tokenizer: Tokenizer) -> ReferenceGPT2BPE:
  spec = json.loads(tokenizer.to_json_str())
  merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
            for m in spec["model"]["merges"]]
  added = {entry["content"]: entry["id"] for entry in spec["added_tokens"]}
  return ReferenceGPT2BPE(spec["model"]["vocab"], merges, added)


def _codegen_transformers_tokenizer(directory: str) -> CodeGenTokenizer:
  """transformers' CodeGen tokenizer from vocab.json + merges.txt, CodeGen's recipe."""
  t = CodeGenTokenizer(vocab=os.path.join(directory, "vocab.json"),
                       merges=os.path.join(directory, "merges.txt"))
  # salesforce/CodeGen jaxformer/hf/sample.py: include_whitespace then include_tabs.
  t.add_tokens([" " * n for n in reversed(range(2, 32))], special_tokens=False)
  t.add_tokens(["\t" * n for n in reversed(range(2, 10))], special_tokens=False)
  return t


# ------------------------------------------------------------------ the trained tokenizer
def test_vocab_layout_is_codegen_style(trained):
  assert trained.vocab_size == VOCAB
  assert tok_lib.token_id_bound(trained) == VOCAB
  vocab = trained.backend.get_vocab(with_added_tokens=True)
  assert sorted(vocab.values()) == list(range(VOCAB))  # no holes, no duplicates
  # ids 0..255: GPT-2's byte symbols in code-point order, as in GPT-2's vocab.json.
  assert [trained.backend.id_to_token(i) for i in range(256)] == sorted(
      bytes_to_unicode().values())
  # <|endoftext|> closes the BPE vocabulary; CodeGen's 38 whitespace runs follow it.
  n_ws = len(tok_lib.CODEGEN_WHITESPACE_TOKENS)
  assert n_ws == 38 and tok_lib.CODEGEN_VOCAB_SIZE == 50257 + n_ws
  assert trained.eos_id == VOCAB - 1 - n_ws
  ws = [trained.backend.id_to_token(trained.eos_id + 1 + k) for k in range(n_ws)]
  assert ws == [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]
  # The merges are real: the training text's most common words are single tokens.
  for word in ("def", "Ġself", "Ġreturn", "Ġimport", "):"):
    assert word in vocab, word
  # No BPE token holds raw (un-byte-mapped) whitespace or the end-of-text marker.
  base = [t for t, i in vocab.items() if i < trained.eos_id]
  assert not any(c in t for t in base for c in " \t\n") and EOS not in base


def test_round_trip_every_file(corpus, trained):
  train, held_out = corpus
  texts = (train + held_out + [t.replace("\n", "\r\n") for t in held_out]
           + [t.replace("    ", "\t") for t in held_out] + EDGE_CASES + _random_unicode(0))
  all_ids = list(tok_lib.encode_batches(trained, texts, batch_size=64))
  assert len(all_ids) == len(texts)
  for i, (text, ids) in enumerate(zip(texts, all_ids)):
    assert trained.decode(ids) == text, f"text {i} does not round-trip"
    assert all(0 <= t < VOCAB for t in ids)
    # <|endoftext|> only where the text has the literal marker.
    assert (trained.eos_id in ids) == (EOS in text), i


def test_encode_batches_matches_encode(corpus, trained):
  texts = corpus[1][:25] + EDGE_CASES
  want = [trained.encode(t) for t in texts]
  for batch_size in (1, 7, 1000):
    assert list(tok_lib.encode_batches(trained, iter(texts), batch_size)) == want


def test_end_of_text_is_one_special_token(trained):
  eos = trained.eos_id
  ids = trained.encode("x = 1" + EOS + "y = 2")
  assert ids.count(eos) == 1
  assert ids == trained.encode("x = 1") + [eos] + trained.encode("y = 2")
  assert trained.decode(ids) == "x = 1" + EOS + "y = 2"
  assert trained.decode(ids, skip_special_tokens=True) == "x = 1y = 2"
  assert trained.decode([eos]) == EOS
  # Only the exact marker: near misses are ordinary text.
  for text in ("<|endoftext", "|endoftext|>", "<|EndOfText|>", "< |endoftext|>"):
    assert eos not in trained.encode(text)
  # The documented opt-out: the literal marker as plain text (a copy, not the fixture).
  plain = Tokenizer.from_json_str(trained.to_json_str())
  plain.backend.encode_special_tokens = True
  assert eos not in plain.encode("x" + EOS) and plain.decode(plain.encode(EOS)) == EOS
  spec = next(e for e in json.loads(trained.to_json_str())["added_tokens"]
              if e["content"] == EOS)
  assert spec["special"] and spec["id"] == eos


def test_whitespace_runs_are_single_tokens(trained):
  vocab = trained.backend.get_vocab(with_added_tokens=True)
  ws_id = lambda run: vocab[run]  # pylint: disable=unnecessary-lambda-assignment
  ret = trained.encode("return")
  for n in (4, 8):  # indentation: the run is one token, the word keeps no space
    assert trained.encode("\n" + " " * n + "return") == (
        trained.encode("\n") + [ws_id(" " * n)] + ret)
    assert trained.encode("\t" * (n // 4) + "return") == (
        ([ws_id("\t" * (n // 4))] if n == 8 else trained.encode("\t")) + ret)
  for n in range(2, 32):
    assert trained.encode(" " * n) == [ws_id(" " * n)]
  for n in range(2, 10):
    assert trained.encode("\t" * n) == [ws_id("\t" * n)]
  # Longer runs: leftmost-longest (31 + rest; a lone leftover space joins the next word).
  assert trained.encode(" " * 40) == [ws_id(" " * 31), ws_id(" " * 9)]
  assert trained.encode(" " * 32 + "return") == [ws_id(" " * 31)] + trained.encode(" return")
  assert trained.encode("\t" * 12) == [ws_id("\t" * 9), ws_id("\t" * 3)]
  # A single space or tab is never an added token: it goes through the BPE.
  assert trained.encode("a b") == trained.encode("a") + trained.encode(" b")


def test_matches_pure_python_gpt2_bpe(corpus, trained):
  reference = _reference_of(trained)
  texts = corpus[1][:12] + EDGE_CASES + _random_unicode(1, count=10)
  for i, text in enumerate(texts):
    assert trained.encode(text) == reference.encode(text), f"text {i}"


def test_matches_transformers_codegen_tokenizer(corpus, trained, tmp_path):
  paths = tok_lib.save_gpt2_files(trained, str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["added_tokens.json", "merges.txt", "vocab.json"]
  with open(paths[0]) as f:
    assert json.load(f)[EOS] == trained.eos_id  # like GPT-2's vocab.json
  hf = _codegen_transformers_tokenizer(str(tmp_path))
  assert len(hf) == VOCAB and hf.eos_token_id == trained.eos_id
  texts = corpus[1] + EDGE_CASES + _random_unicode(2)
  for i, text in enumerate(texts):
    assert hf.encode(text, add_special_tokens=False) == trained.encode(text), f"text {i}"
  # The GPT-2 style files load back through phi_jax's loader with the same ids.
  again = Tokenizer.from_dir(str(tmp_path))
  assert again.vocab_size == VOCAB and again.eos_id == trained.eos_id
  assert [again.encode(t) for t in texts] == [trained.encode(t) for t in texts]


def test_compresses_held_out_code(corpus, trained):
  held_out = corpus[1]
  n_bytes = sum(len(t.encode("utf-8")) for t in held_out)
  n_tokens = sum(map(len, trained.encode_batch(held_out)))
  n_byte_level = sum(map(len, byte_level().encode_batch(held_out)))
  assert n_byte_level == n_bytes  # the baseline: one token per byte
  # Measured 2.95 bytes/token at vocab 2048 on these held-out files (32k tokens trained
  # on 20 MB of stdlib give about 3.9).
  assert n_bytes / n_tokens > 2.7


def test_training_is_deterministic(corpus):
  texts = corpus[0][:60]
  first = tok_lib.train_bpe(texts, 1000, show_progress=False).to_json_str()
  second = tok_lib.train_bpe(iter(texts), 1000, show_progress=False).to_json_str()
  assert first == second


def test_save_and_from_dir_give_the_same_ids(corpus, trained, tmp_path):
  path = trained.save(str(tmp_path))
  texts = corpus[1][:10] + EDGE_CASES
  want = [trained.encode(t) for t in texts]
  for loaded in (Tokenizer.from_dir(str(tmp_path)), Tokenizer.from_file(path),
                 tok_lib.load_tokenizer(path), tok_lib.load_tokenizer(str(tmp_path))):
    assert [loaded.encode(t) for t in texts] == want
    assert loaded.vocab_size == VOCAB and loaded.eos_id == trained.eos_id
  assert Tokenizer.from_json_str(trained.to_json_str()).to_json_str() == trained.to_json_str()


def test_small_corpus_warns_with_the_size_it_got():
  texts = ["def f(x):\n    return x + 1\n"] * 5
  with pytest.warns(UserWarning, match=r"gave only \d+ of the 5000 tokens"):
    tokenizer = tok_lib.train_bpe(texts, 5000, show_progress=False)
  assert 256 + 39 < tokenizer.vocab_size < 5000
  assert tok_lib.token_id_bound(tokenizer) == tokenizer.vocab_size
  assert tokenizer.decode(tokenizer.encode(texts[0])) == texts[0]


def test_bad_training_input():
  with pytest.raises(ValueError, match="vocab_size 294 is below 295"):
    tok_lib.train_bpe(["x"], 294)
  with pytest.raises(TypeError, match="bytes, not str"):
    tok_lib.train_bpe(["ok", b"raw bytes"], 400)


# ------------------------------------------------------------------ loading
def test_load_tokenizer_specs(trained, tmp_path):
  assert tok_lib.load_tokenizer("byte_level").to_json_str() == byte_level().to_json_str()
  with pytest.raises(FileNotFoundError, match="nope/missing.json"):
    tok_lib.load_tokenizer(str(tmp_path / "nope" / "missing.json"))
  with pytest.raises(FileNotFoundError, match=f"tokenizer {tmp_path}: the directory has no"):
    tok_lib.load_tokenizer(str(tmp_path))
  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  with pytest.raises(ValueError, match="bad.json"):
    tok_lib.load_tokenizer(str(bad))


def test_load_tokenizer_hub_offline_names_the_repo():
  # tests/conftest.py sets HF_HUB_OFFLINE=1: nothing can be downloaded.
  with pytest.raises(FileNotFoundError, match="tokenizer Salesforce/codegen-350M-mono"):
    tok_lib.load_tokenizer("Salesforce/codegen-350M-mono")


def test_load_tokenizer_hub_downloads_only_tokenizer_files(trained, tmp_path, monkeypatch):
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  tok_lib.save_gpt2_files(trained, str(tmp_path))
  calls = []

  def fake_snapshot_download(repo_id, **kwargs):
    calls.append((repo_id, kwargs))
    return str(tmp_path)

  monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
  loaded = tok_lib.load_tokenizer("org/some-model")
  assert loaded.encode("def f():\n    pass\n" + EOS) == trained.encode(
      "def f():\n    pass\n" + EOS)
  (repo_id, kwargs), = calls
  assert repo_id == "org/some-model"
  patterns = kwargs["allow_patterns"]
  assert {"tokenizer.json", "vocab.json", "merges.txt", "added_tokens.json"} <= set(patterns)
  assert not any(p.endswith((".bin", ".safetensors")) or "*" in p for p in patterns)


# ------------------------------------------------------------------ model vocabulary
@pytest.mark.parametrize("multiple", [1, 8, 64, 128, 1024])
def test_padded_vocab_size(multiple):
  for n in [1, 2, 63, 64, 65, 257, 2048, 50257, 50295]:
    want = next(m for m in range(n, n + multiple) if m % multiple == 0)  # brute force
    assert tok_lib.padded_vocab_size(n, multiple) == want
  with pytest.raises(ValueError):
    tok_lib.padded_vocab_size(0)


def test_phi1_padding_of_the_codegen_vocab():
  assert tok_lib.padded_vocab_size(tok_lib.CODEGEN_VOCAB_SIZE) == 50304
  assert tok_lib.padded_vocab_size(tok_lib.CODEGEN_VOCAB_SIZE, 1024) == 51200
  assert tok_lib.PHI1_MODEL_VOCAB_SIZE == 51200


def test_check_model_vocab(trained):
  assert tok_lib.check_model_vocab(trained, VOCAB) == 0
  assert tok_lib.check_model_vocab(trained, tok_lib.padded_vocab_size(VOCAB + 1)) == 64
  with pytest.raises(ValueError, match=r"vocab_size is 2047 but the tokenizer has ids up "
                     r"to 2047 \(2048 tokens\).*at least 2048"):
    tok_lib.check_model_vocab(trained, VOCAB - 1)
  assert tok_lib.check_model_vocab(byte_level(), 320) == 320 - 257
  with pytest.raises(ValueError, match="vocab_size is 256"):
    tok_lib.check_model_vocab(byte_level(), 256)


# ------------------------------------------------------------------ special tokens (FIM)
def test_trained_with_special_tokens_keeps_the_size_and_puts_them_last(corpus):
  texts = corpus[0][:40]
  with_fim = tok_lib.train_bpe(texts, 700, special_tokens=FIM_TOKENS, show_progress=False)
  plain = tok_lib.train_bpe(texts, 697, show_progress=False)
  assert with_fim.vocab_size == 700  # the sentinels count in vocab_size
  assert [with_fim.backend.token_to_id(t) for t in FIM_TOKENS] == [697, 698, 699]
  # the same merges as a tokenizer 3 tokens smaller: the sentinels cost no BPE training
  for text in texts[:5] + EDGE_CASES:
    assert with_fim.encode(text) == plain.encode(text)
  # a sentinel in a text is the one special token, never its characters
  assert with_fim.encode("a" + FIM_TOKENS[2] + "b") == (
      with_fim.encode("a") + [699] + with_fim.encode("b"))
  assert with_fim.decode(with_fim.encode(FIM_TOKENS[0] + "x"), skip_special_tokens=True) == "x"


def test_with_special_tokens_appends_only_the_missing_ones(trained):
  first = tok_lib.with_special_tokens(trained, FIM_TOKENS[:1])
  both = tok_lib.with_special_tokens(first, FIM_TOKENS)
  assert trained.backend.token_to_id(FIM_TOKENS[0]) is None  # the original is unchanged
  assert [both.backend.token_to_id(t) for t in FIM_TOKENS] == [VOCAB, VOCAB + 1, VOCAB + 2]
  assert tok_lib.token_id_bound(both) == both.vocab_size == VOCAB + 3
  with pytest.raises(ValueError, match="distinct"):
    tok_lib.with_special_tokens(trained, ["<a>", "<a>"])


def test_special_tokens_round_trip_through_gpt2_files(trained, tmp_path):
  tokenizer = tok_lib.with_special_tokens(trained, FIM_TOKENS)
  tok_lib.save_gpt2_files(tokenizer, str(tmp_path))
  with open(tmp_path / "added_tokens.json") as f:
    added = json.load(f)
  assert [added[t] for t in FIM_TOKENS] == [VOCAB, VOCAB + 1, VOCAB + 2]
  again = Tokenizer.from_dir(str(tmp_path))
  text = FIM_TOKENS[0] + "def f():" + FIM_TOKENS[2] + "\n    return 1\n" + FIM_TOKENS[1]
  assert again.encode(text) == tokenizer.encode(text)
  assert again.decode(again.encode(text), skip_special_tokens=True) == (
      "def f():\n    return 1\n")
  # transformers' CodeGen tokenizer with the added tokens maps them to the same ids
  hf = CodeGenTokenizer.from_pretrained(str(tmp_path))
  assert hf.convert_tokens_to_ids(list(FIM_TOKENS)) == [VOCAB, VOCAB + 1, VOCAB + 2]
  assert hf.encode(text, add_special_tokens=False) == tokenizer.encode(text)
  # the byte-level tokenizer's specials all follow its 256 bytes in vocab.json
  byte_fim = tok_lib.with_special_tokens(byte_level(), FIM_TOKENS)
  tok_lib.save_gpt2_files(byte_fim, str(tmp_path / "bytes"))
  assert Tokenizer.from_dir(str(tmp_path / "bytes")).encode(text) == byte_fim.encode(text)
