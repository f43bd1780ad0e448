"""A `seqio.Vocabulary` over a phi_jax `Tokenizer` (data stage only: imports TF/SeqIO).

SeqIO tasks describe the curated datasets with this vocabulary: ids are the
tokenizer's, eos_id is `<|endoftext|>`, there is no unk id. SeqIO reserves pad id 0,
which in a byte-level BPE is a real token ('!'); nothing here pads, and decoding stops
at the first <|endoftext|> instead of dropping zeros. Two vocabularies are equal when
their tokenizers' JSON is (same sha256).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import seqio
import tensorflow as tf

from data_pipeline.token_dataset import tokenizer_sha256
from phi_jax.tokenizer import Tokenizer


class TokenizerVocabulary(seqio.Vocabulary):
  """seqio.Vocabulary wrapping `tokenizer` (encode/decode in Python and in tf.data)."""

  def __init__(self, tokenizer: Tokenizer):
    if tokenizer.eos_id is None:
      raise ValueError("the tokenizer has no <|endoftext|> token (the vocabulary's eos)")
    self.tokenizer = tokenizer
    self.sha256 = tokenizer_sha256(tokenizer)
    super().__init__(extra_ids=0)

  @property
  def eos_id(self) -> int:
    return int(self.tokenizer.eos_id)

  @property
  def unk_id(self) -> None:
    return None

  @property
  def _base_vocab_size(self) -> int:
    return int(self.tokenizer.vocab_size)

  # ---------------------------------------------------------------- Python
  def _encode(self, s: str) -> list[int]:
    return self.tokenizer.encode(s)

  def _decode(self, ids) -> str:
    ids = [int(i) for i in ids]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return self.tokenizer.decode(ids)

  # ---------------------------------------------------------------- TensorFlow
  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor | tf.RaggedTensor:
    """string [] -> int32 [n]; string [b] -> int32 ragged [b, None]."""
    s = tf.convert_to_tensor(s, tf.string)

    def encode_one(text: np.ndarray | bytes) -> np.ndarray:
      text = text.item() if isinstance(text, np.ndarray) else text
      return np.asarray(self.tokenizer.encode(text.decode("utf-8")), np.int32)

    if s.shape.rank == 0:
      ids = tf.numpy_function(encode_one, [s], tf.int32, stateful=False)
      return tf.ensure_shape(ids, [None])

    def encode_many(texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
      encoded = self.tokenizer.encode_batch([t.decode("utf-8") for t in texts.reshape(-1)])
      lengths = np.asarray([len(e) for e in encoded], np.int64)
      flat = np.asarray([i for e in encoded for i in e], np.int32)
      return flat, lengths

    if s.shape.rank != 1:
      raise ValueError(f"encode_tf takes a string scalar or vector, got shape {s.shape}")
    flat, lengths = tf.numpy_function(encode_many, [s], (tf.int32, tf.int64), stateful=False)
    return tf.RaggedTensor.from_row_lengths(tf.ensure_shape(flat, [None]),
                                            tf.ensure_shape(lengths, [None]))

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """int [..., n] -> string [...] (each row up to its first <|endoftext|>)."""
    ids = tf.convert_to_tensor(ids)

    def decode_rows(array: np.ndarray) -> np.ndarray:
      rows = array.reshape((-1, array.shape[-1]))
      texts = [self._decode(row.tolist()).encode("utf-8") for row in rows]
      return np.asarray(texts, dtype=object).reshape(array.shape[:-1])

    texts = tf.numpy_function(decode_rows, [ids], tf.string, stateful=False)
    return tf.ensure_shape(texts, ids.shape[:-1])

  # ---------------------------------------------------------------- identity
  def __eq__(self, other) -> bool:
    return isinstance(other, TokenizerVocabulary) and other.sha256 == self.sha256

  def __hash__(self) -> int:
    return hash(self.sha256)

  def __repr__(self) -> str:
    return f"TokenizerVocabulary(vocab_size={self.vocab_size}, sha256={self.sha256[:12]})"


class LazyTokenizerVocabulary(TokenizerVocabulary):
  """A TokenizerVocabulary whose tokenizer `load()` returns on first use (not before).

  What `import data_pipeline.seqio_registry` registers: the tasks exist at import, the
  tokenizer is read when a program first encodes, decodes or reads data.
  """

  def __init__(self, load: Callable[[], Tokenizer], description: str = "lazy"):
    self._load = load
    self._loaded: TokenizerVocabulary | None = None
    self._description = description
    seqio.Vocabulary.__init__(self, extra_ids=0)  # pylint: disable=non-parent-init-called

  def _vocabulary(self) -> TokenizerVocabulary:
    if self._loaded is None:
      self._loaded = TokenizerVocabulary(self._load())
    return self._loaded

  @property
  def tokenizer(self) -> Tokenizer:
    return self._vocabulary().tokenizer

  @property
  def sha256(self) -> str:
    return self._vocabulary().sha256

  def __repr__(self) -> str:
    if self._loaded is None:
      return f"LazyTokenizerVocabulary({self._description}, not loaded yet)"
    return f"Lazy{self._loaded!r}"
