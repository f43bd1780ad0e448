"""The fill-in-the-middle transform of training documents (Bavarian et al. 2022).

With probability `rate` a document is cut at two character positions, each uniform
over the len(text) + 1 places between characters (sorted; pieces may be empty), into
prefix, middle and suffix, and written as a FIM document (`phi_jax.fim`): in SPM order
with probability `spm_rate`, else PSM. The paper found cutting characters better than
cutting tokens (a token-level cut never teaches the model to finish a partial token).
Each piece is tokenized on its own, as `phi_jax.fim.infill_prompt` does at inference.

The draws are a function of (seed, document id) alone, taken from a sha256 of the
two: a rebuilt or resumed dataset transforms every document exactly as before, on any
machine, whatever the order or batching of the documents.

The data stage applies it to the text datasets (filtered code, textbooks) when
config.data.fim_rate > 0; exercises keep their prompt -> solution form.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from phi_jax import fim
from phi_jax.tokenizer import Tokenizer

_DOMAIN = b"phi_jax.fim/1"  # separates these draws from other hashes of the same ids


@dataclasses.dataclass(frozen=True)
class FimConfig:
  """How often documents are transformed, and in which order.

  Attributes:
    rate: the probability that a document becomes a FIM document (0 = never).
    spm_rate: the probability that a FIM document is in SPM rather than PSM order
      (the FIM paper's joint training used 0.5).
    seed: the run's seed; the draws of a document are a function of (seed, its id).
  """
  rate: float
  spm_rate: float = 0.5
  seed: int = 0

  def __post_init__(self):
    for name in ("rate", "spm_rate"):
      value = getattr(self, name)
      if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"FIM {name} must be in [0, 1], got {value!r}")

  def describe(self) -> dict:
    """What a dataset built with this transform records (and is fingerprinted by)."""
    return {"rate": float(self.rate), "spm_rate": float(self.spm_rate),
            "seed": int(self.seed), "format": _DOMAIN.decode()}


@dataclasses.dataclass(frozen=True)
class FimSplit:
  """A document cut for FIM: text == prefix + middle + suffix."""
  mode: str
  prefix: str
  middle: str
  suffix: str


def _uniforms(seed: int, doc_id: str) -> tuple[float, ...]:
  """Four numbers in [0, 1) drawn from the document's id and the seed."""
  digest = hashlib.sha256(_DOMAIN + b"\0" + str(int(seed)).encode() + b"\0"
                          + doc_id.encode()).digest()
  return tuple(int.from_bytes(digest[i:i + 8], "big") / 2.0**64 for i in range(0, 32, 8))


def split_document(doc_id: str, text: str, config: FimConfig) -> FimSplit | None:
  """The document's FIM cut, or None when it stays a plain left-to-right document."""
  use, order, first, second = _uniforms(config.seed, doc_id)
  if use >= config.rate:
    return None
  places = len(text) + 1
  a, b = sorted((int(first * places), int(second * places)))
  return FimSplit(mode=fim.SPM if order < config.spm_rate else fim.PSM,
                  prefix=text[:a], middle=text[a:b], suffix=text[b:])


def tokenize(documents: Sequence[tuple[str, str]], tokenizer: Tokenizer,
             config: FimConfig) -> list[np.ndarray]:
  """The int32 tokens of each (id, text): FIM documents arranged with the sentinels,
  the others encoded whole. Raises ValueError if the tokenizer has no sentinels."""
  ids = fim.fim_ids(tokenizer)
  splits = [split_document(doc_id, text, config) for doc_id, text in documents]
  pieces = []  # the texts to encode: one per plain document, three per FIM document
  for (_, text), split in zip(documents, splits):
    pieces.extend([text] if split is None else [split.prefix, split.middle, split.suffix])
  encoded = iter(tokenizer.encode_batch(pieces))
  out = []
  for split in splits:
    if split is None:
      tokens = next(encoded)
    else:
      prefix, middle, suffix = next(encoded), next(encoded), next(encoded)
      tokens = fim.arrange(prefix, middle, suffix, ids, split.mode)
    out.append(np.asarray(tokens, np.int32))
  return out
