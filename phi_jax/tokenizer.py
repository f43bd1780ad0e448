"""Text <-> token ids, on the Hugging Face `tokenizers` library.

phi-1 uses the CodeGen tokenizer (GPT-2 byte-level BPE plus whitespace-run tokens,
`<|endoftext|>` = 50256, vocab padded to 51200 in the model). `Tokenizer` loads it from a
`tokenizer.json` or from GPT-2 style `vocab.json` + `merges.txt`. `byte_level()` is the
no-merge byte-level tokenizer (256 byte tokens + `<|endoftext|>`) that needs no
training data: every string round-trips through it.
"""

from __future__ import annotations

import functools
import json
import os

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from phi_jax import atomic
from phi_jax.fim import FIM_TOKENS

EOS = "<|endoftext|>"
# The special tokens phi_jax knows: end-of-text and the fill-in-the-middle sentinels.
SPECIAL_TOKENS = (EOS, *FIM_TOKENS)
TOKENIZER_FILE = "tokenizer.json"
# transformers' AutoTokenizer reads the class and the special tokens from it (without
# one it loads tokenizer.json with no end-of-text token, which lm-evaluation-harness's
# Hugging Face tokenizer backend needs: docs/serving.md)
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class Tokenizer:
  """A thin wrapper: encode/decode, the end-of-text id, JSON (de)serialisation."""

  def __init__(self, tokenizer: tokenizers.Tokenizer):
    self.backend = tokenizer

  # ------------------------------------------------------------------ constructors
  @classmethod
  def from_json_str(cls, text: str) -> Tokenizer:
    return cls(tokenizers.Tokenizer.from_str(text))

  @classmethod
  def from_file(cls, path: str) -> Tokenizer:
    try:
      return cls(tokenizers.Tokenizer.from_file(path))
    except Exception as e:
      raise ValueError(f"cannot load tokenizer {path}: {e}") from e

  @classmethod
  def from_dir(cls, directory: str) -> Tokenizer | None:
    """The tokenizer stored in a model directory, or None when there is none."""
    path = os.path.join(directory, TOKENIZER_FILE)
    if os.path.isfile(path):
      return cls.from_file(path)
    vocab, merges = os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
    if os.path.isfile(vocab) and os.path.isfile(merges):
      backend = tokenizers.Tokenizer(models.BPE.from_file(vocab, merges))
      backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
      backend.decoder = decoders.ByteLevel()
      # special tokens may be in vocab.json (GPT-2's <|endoftext|>) or added_tokens.json
      backend.add_special_tokens([t for t in SPECIAL_TOKENS if backend.token_to_id(t) is not None])
      added = os.path.join(directory, "added_tokens.json")
      if os.path.isfile(added):
        with open(added) as f:
          extra = sorted(json.load(f).items(), key=lambda kv: kv[1])
        for token, token_id in extra:  # one at a time: each takes the next id
          added_token = tokenizers.AddedToken(token, special=token in SPECIAL_TOKENS,
                                              normalized=False)
          if added_token.special:
            backend.add_special_tokens([added_token])
          else:
            backend.add_tokens([added_token])
          got = backend.token_to_id(token)
          if got != token_id:
            raise ValueError(f"{added}: {token!r} has id {token_id} there but gets {got} (the "
                             "ids of vocab.json and added_tokens.json are not contiguous)")
      return cls(backend)
    return None

  # ------------------------------------------------------------------ use
  def encode(self, text: str) -> list[int]:
    return self.backend.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

  def decode(self, ids, skip_special_tokens: bool = False) -> str:
    return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

  def token_bytes(self, token_id: int) -> bytes:
    """The bytes token `token_id` stands for: with a byte-level decoder (GPT-2, CodeGen,
    phi-1), a piece of a UTF-8 character may be one token, which `decode` alone would
    show as U+FFFD; special and added tokens are their text."""
    byte_of = self._byte_decoder
    if byte_of is not None and token_id not in self._added_ids:
      piece = self.backend.id_to_token(token_id)
      if piece is not None and all(c in byte_of for c in piece):
        return bytes(byte_of[c] for c in piece)
    return self.decode([token_id]).encode("utf-8")

  @functools.cached_property
  def _byte_decoder(self) -> dict[str, int] | None:
    """GPT-2's printable char -> byte map when the decoder is byte-level, else None."""
    decoder = json.loads(self.backend.to_str()).get("decoder") or {}
    parts = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [
        decoder]
    if not any(part.get("type") == "ByteLevel" for part in parts):
      return None
    return {char: byte for byte, char in _gpt2_bytes_to_unicode().items()}

  @functools.cached_property
  def _added_ids(self) -> frozenset[int]:
    return frozenset(self.backend.get_added_tokens_decoder())

  @property
  def eos_id(self) -> int | None:
    return self.backend.token_to_id(EOS)

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size(with_added_tokens=True)

  def to_json_str(self) -> str:
    return self.backend.to_str()

  def save(self, directory: str) -> str:
    """Writes <directory>/tokenizer.json and a tokenizer_config.json for transformers'
    AutoTokenizer (`hf_config`) atomically (the directory is created); returns the
    tokenizer.json path."""
    path = os.path.join(directory, TOKENIZER_FILE)
    atomic.write_text(path, self.to_json_str())
    atomic.write_json(self.hf_config(), os.path.join(directory, TOKENIZER_CONFIG_FILE))
    return path

  def hf_config(self) -> dict:
    """transformers' tokenizer_config.json for this tokenizer.json: the fast tokenizer
    class, and <|endoftext|> as bos, eos and unk when the vocabulary has it."""
    special = ({"bos_token": EOS, "eos_token": EOS, "unk_token": EOS}
               if self.eos_id is not None else {})
    return {"tokenizer_class": "PreTrainedTokenizerFast", **special,
            "clean_up_tokenization_spaces": False}


def byte_level() -> Tokenizer:
  """The byte-level tokenizer with no merges: ids 0-255 are bytes, 256 is <|endoftext|>."""
  alphabet = pre_tokenizers.ByteLevel.alphabet()
  byte_to_char = _gpt2_bytes_to_unicode()
  vocab = {byte_to_char[b]: b for b in range(256)}
  assert set(vocab) == set(alphabet)
  backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  backend.decoder = decoders.ByteLevel()
  backend.add_special_tokens([EOS])
  return Tokenizer(backend)


def _gpt2_bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible byte -> printable unicode char map (the ByteLevel alphabet)."""
  printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
               + list(range(ord("®"), ord("ÿ") + 1)))
  chars = printable[:]
  n = 0
  for b in range(256):
    if b not in printable:
      printable.append(b)
      chars.append(256 + n)
      n += 1
  return dict(zip(printable, map(chr, chars)))
