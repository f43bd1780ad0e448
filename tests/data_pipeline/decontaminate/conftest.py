"""Shared fixtures: HumanEval's problems as decontamination targets, a near-copy of one."""

from __future__ import annotations

import os

import pytest

from data_pipeline.decontaminate.targets import load_targets

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
MBPP_PATH = os.path.join(REPO, "..", "shared", "data", "mbpp", "mbpp.jsonl")

# HumanEval/37 (sort_even) with every name changed, the two independent slices
# swapped and a comment added: the kind of near-copy decontamination must catch
NEAR_COPY_37 = '''\
def sort_even_positions(values: list):
    """Sort the items at even positions, keep the odd ones where they are."""
    odd_items = values[1::2]  # taken first here
    even_items = values[::2]
    even_items.sort()
    out = []
    for a, b in zip(even_items, odd_items):
        out.extend([a, b])
    if len(even_items) > len(odd_items):
        out.append(even_items[-1])
    return out
'''

UNRELATED = '''\
def parse_config(path):
    settings = {}
    with open(path) as handle:
        for line in handle:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings
'''


@pytest.fixture(scope="session")
def humaneval_targets():
  targets, unavailable = load_targets(["humaneval"])
  assert not unavailable and len(targets) == 164
  return targets


# a small random-init phi: random features of the bytes (what the offline default is)
SMALL_MODEL = dict(vocab_size=257, d_model=64, num_layers=2, num_heads=2, mlp_dim=256,
                   rotary_dim=16, max_seq_len=256, dtype="float32")


@pytest.fixture(scope="session")
def random_embedder():
  """The offline default: a random-init phi over bytes (uninformative)."""
  from data_pipeline.decontaminate.embedding import make_embedder  # pylint: disable=g-import-not-at-top
  return make_embedder("", model=SMALL_MODEL, max_len=256)


def structure_tokenizer():
  """A naming-agnostic code tokenizer: Python keywords and punctuation are tokens, every
  other word (identifiers) is the one token N, numbers are 0; docstrings, other
  triple-quoted strings and comments are dropped."""
  import keyword  # pylint: disable=g-import-not-at-top
  import tokenizers  # pylint: disable=g-import-not-at-top
  from tokenizers import models, normalizers, pre_tokenizers  # pylint: disable=g-import-not-at-top
  from phi_jax.tokenizer import EOS, Tokenizer  # pylint: disable=g-import-not-at-top
  vocab = {EOS: 0}
  for token in sorted(keyword.kwlist) + list("()[]{}:,.=+-*/%<>!&|^~@") + ["N", "0"]:
    vocab.setdefault(token, len(vocab))
  backend = tokenizers.Tokenizer(models.WordLevel(vocab=vocab, unk_token="N"))
  backend.normalizer = normalizers.Sequence([
      normalizers.Replace(tokenizers.Regex(r"(\"\"\"|''')[\s\S]*?(\"\"\"|''')|#[^\n]*"), " "),
      normalizers.Replace(tokenizers.Regex(r"\b\d[\w.]*"), "0")])
  backend.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.WhitespaceSplit(),
      pre_tokenizers.Split(tokenizers.Regex(r"\w+|[^\w\s]"), behavior="isolated")])
  return Tokenizer(backend)


@pytest.fixture(scope="session")
def structure_embedder():
  """A deterministic embedder that is informative about code structure: the data side's
  Embedder over a random-init phi reading `structure_tokenizer`'s tokens (random
  contextual features of the naming-agnostic token sequence)."""
  from data_pipeline.embed import Embedder  # pylint: disable=g-import-not-at-top
  from phi_jax import pretrained  # pylint: disable=g-import-not-at-top
  from phi_jax.config import PhiConfig  # pylint: disable=g-import-not-at-top
  tokenizer = structure_tokenizer()
  config = PhiConfig.from_mapping(dict(SMALL_MODEL, vocab_size=tokenizer.vocab_size))
  return Embedder(pretrained.init_model(config, 0), tokenizer,
                  source="structure tokens (test model)")
