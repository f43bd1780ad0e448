"""Training and loading the tokenizer: a CodeGen-style byte-level BPE, or an existing one.

phi-1 uses the CodeGen-350M-mono tokenizer unchanged: GPT-2's byte-level BPE (50257
tokens, `<|endoftext|>` = 50256) plus 38 non-special added tokens for runs of 31..2
spaces (ids 50257..50286) and 9..2 tabs (ids 50287..50294), 50295 tokens in all, padded
to 51200 embedding rows in the model. For the real recipe load it with
`load_tokenizer("Salesforce/codegen-350M-mono")` (or its local directory).

`train_bpe` trains the same kind of tokenizer on your own corpus (the scaled-down
pipeline, or another language): the same layout, with `vocab_size` counting everything:

  ids 0..255                 the 256 byte symbols of GPT-2's ByteLevel alphabet,
                             ordered by code point (as in GPT-2's vocab.json)
  ids 256..n-1               merges, in the order they were learned
  id n                       `<|endoftext|>` (special)
  ids n+1..n+38              CodeGen's whitespace runs (31..2 spaces, 9..2 tabs)
  ids n+39..                 `special_tokens` asked for (the fill-in-the-middle
                             sentinels of `phi_jax.fim` when training with FIM)

`with_special_tokens` appends such tokens to a loaded tokenizer (CodeGen's: ids
50295.. of its 51200 model rows, which are padding otherwise).

The ByteLevel pre-tokenizer (GPT-2 regex, no prefix space) and the full 256-byte alphabet
make every string round-trip. The whitespace runs are added tokens: `tokenizers` cuts
them out of the text (leftmost-longest) before pre-tokenization, so an indent of 4 or 8
spaces is one token and the word after it carries no leading space ("    return" ->
["    ", "return"]), exactly as CodeGen does. The training text is split the same way, so
no merges are wasted on space runs that encoding never produces.

`<|endoftext|>` written literally in a text is encoded as the special token (what
`tokenizers` and transformers do with special tokens, and so CodeGen), never as the
13 characters: documents are joined with it, so code that contains the literal string
gets a document boundary there (set `tokenizer.backend.encode_special_tokens = True` to
encode the marker as plain text instead).

Training is deterministic (the same texts give byte-identical JSON, across processes).
Measured on the 2-core dev machine (shared, so +-50%): 20 MB of CPython stdlib source
(1270 files) trains to 32000 tokens in 5-14 s and to 51200 in about 7 s; 2 MB to 2048
tokens in 0.5 s. Encoding runs at roughly 1-1.5 MB/s there: encode a large corpus with
`encode_batches` (batches through the Rust-parallel `encode_batch`, which scales with
cores), not text by text in Python.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from phi_jax import atomic
from phi_jax.tokenizer import EOS, TOKENIZER_FILE, Tokenizer, byte_level

# CodeGen's added tokens, in id order (salesforce/CodeGen jaxformer/hf/sample.py,
# create_custom_gpt2_tokenizer: include_whitespace(n_min=2, n_max=32) then
# include_tabs(n_min=2, n_max=10), each `reversed(range(n_min, n_max))`).
CODEGEN_WHITESPACE_TOKENS = tuple([" " * n for n in range(31, 1, -1)]
                                  + ["\t" * n for n in range(9, 1, -1)])
CODEGEN_VOCAB_SIZE = 50295  # GPT-2's 50257 + the 38 whitespace runs
PHI1_MODEL_VOCAB_SIZE = 51200  # embedding rows of phi-1 (= padded_vocab_size(50295, 1024))
# Files a tokenizer is made of, in a model directory or a hub repository.
TOKENIZER_FILES = (TOKENIZER_FILE, "vocab.json", "merges.txt", "added_tokens.json",
                   "special_tokens_map.json", "tokenizer_config.json")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Where `tokenizers` cuts the added tokens out of a text: its AddedVocabulary matches
# leftmost-longest, which is what this greedy regex alternation does for these tokens.
_ADDED_TOKEN_PATTERN = r" {2,31}|\t{2,9}|" + re.escape(EOS)
_TRAIN_BATCH = 1000  # texts handed to the Rust trainer at a time


def _whitespace_added_tokens() -> list[tokenizers.AddedToken]:
  return [tokenizers.AddedToken(t, normalized=False) for t in CODEGEN_WHITESPACE_TOKENS]


def _empty_byte_level(model: models.Model) -> tokenizers.Tokenizer:
  backend = tokenizers.Tokenizer(model)
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  return backend


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
  it = iter(texts)
  while batch := list(itertools.islice(it, size)):
    for i, text in enumerate(batch):
      if not isinstance(text, str):
        raise TypeError(f"train_bpe: text {i} of a batch is {type(text).__name__}, not str")
    yield batch


def train_bpe(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2,
              special_tokens: Sequence[str] = (),
              show_progress: bool | None = None) -> Tokenizer:
  """Trains a CodeGen-style byte-level BPE (see the module docstring for the layout).

  Args:
    texts: the training documents (any iterable; consumed once, streamed in batches).
    vocab_size: the size of the final vocabulary, counting the 256 bytes, the merges,
      `<|endoftext|>`, the 38 whitespace-run tokens and `special_tokens` (so at least
      295 + len(special_tokens)).
    min_frequency: a pair must occur at least this often to be merged.
    special_tokens: more special tokens, given the last ids (never split, never
      learned from: the training text is cut at them like at `<|endoftext|>`).
    show_progress: the `tokenizers` progress bar; None = when stderr is a terminal.

  Returns:
    The tokenizer. It has exactly `vocab_size` tokens unless the corpus runs out of
    pairs occurring `min_frequency` times first; then it is smaller and a warning says
    how many it got.
  """
  special_tokens = _check_special_tokens(special_tokens)
  n_fixed = 256 + 1 + len(CODEGEN_WHITESPACE_TOKENS) + len(special_tokens)
  if vocab_size < n_fixed:
    raise ValueError(f"train_bpe: vocab_size {vocab_size} is below {n_fixed} (256 bytes, "
                     f"<|endoftext|>, {len(CODEGEN_WHITESPACE_TOKENS)} whitespace runs and "
                     f"{len(special_tokens)} more special tokens)")
  if show_progress is None:
    show_progress = sys.stderr.isatty()
  # The trainer's pre-tokenizer first drops what encoding cuts out as added tokens
  # (whitespace runs, <|endoftext|>), so the merges are learned on exactly the pieces
  # that reach the BPE model when encoding.
  trainee = _empty_byte_level(models.BPE())
  pattern = "|".join([_ADDED_TOKEN_PATTERN, *map(re.escape, special_tokens)])
  trainee.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(pattern), behavior="removed"),
      pre_tokenizers.ByteLevel(add_prefix_space=False)])
  n_base = vocab_size - 1 - len(CODEGEN_WHITESPACE_TOKENS) - len(special_tokens)
  trainer = trainers.BpeTrainer(vocab_size=n_base, min_frequency=min_frequency,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                special_tokens=[], show_progress=show_progress)
  trainee.train_from_iterator(_batches(texts, _TRAIN_BATCH), trainer=trainer)
  model = json.loads(trainee.to_str())["model"]
  learned = sorted(model["vocab"].items(), key=lambda kv: kv[1])
  merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
            for m in model["merges"]]
  tokenizer = from_vocab_merges([token for token, _ in learned], merges, special_tokens)
  if tokenizer.vocab_size != vocab_size:
    warnings.warn(f"train_bpe: the corpus gave only {tokenizer.vocab_size} of the "
                  f"{vocab_size} tokens asked for ({len(merges)} merges occur at least "
                  f"{min_frequency} times); use more text or a smaller vocab_size",
                  stacklevel=2)
  return tokenizer


def from_vocab_merges(base_tokens: list[str], merges: list[tuple[str, str]],
                      special_tokens: Sequence[str] = ()) -> Tokenizer:
  """The CodeGen-layout tokenizer of a byte-level BPE: `base_tokens[i]` gets id i.

  `<|endoftext|>` follows the base vocabulary and the whitespace runs follow it, as in
  CodeGen (GPT-2's 50257 tokens, of which `<|endoftext|>` is the last, then 38 runs);
  `special_tokens` come last.
  """
  vocab = {token: i for i, token in enumerate(base_tokens)}
  if len(vocab) != len(base_tokens):
    raise ValueError("from_vocab_merges: base_tokens has duplicates")
  missing = set(pre_tokenizers.ByteLevel.alphabet()) - set(vocab)
  if missing:
    raise ValueError(f"from_vocab_merges: {len(missing)} byte symbols missing from the "
                     "vocabulary (strings with those bytes would not round-trip)")
  vocab[EOS] = len(vocab)
  backend = _empty_byte_level(models.BPE(vocab=vocab, merges=list(merges)))
  backend.add_special_tokens([EOS])
  backend.add_tokens(_whitespace_added_tokens())
  return with_special_tokens(Tokenizer(backend), special_tokens)


def _check_special_tokens(tokens: Sequence[str]) -> tuple[str, ...]:
  if isinstance(tokens, str) or not all(isinstance(t, str) and t for t in tokens):
    raise TypeError(f"special tokens must be a sequence of non-empty strings, got {tokens!r}")
  tokens = tuple(tokens)
  if len(set(tokens)) != len(tokens) or EOS in tokens:
    raise ValueError(f"special tokens must be distinct and not {EOS}: {tokens!r}")
  return tokens


def with_special_tokens(tokenizer: Tokenizer, tokens: Sequence[str]) -> Tokenizer:
  """A copy of `tokenizer` with the special tokens it lacks appended, in order, at the
  next free ids (those it has keep theirs)."""
  tokens = _check_special_tokens(tokens)
  copy = Tokenizer.from_json_str(tokenizer.to_json_str())
  missing = [t for t in tokens if copy.backend.token_to_id(t) is None]
  for token in missing:  # one at a time: each at the next id, in the order given
    copy.backend.add_special_tokens([tokenizers.AddedToken(token, special=True,
                                                           normalized=False)])
  return copy


def save_gpt2_files(tokenizer: Tokenizer, directory: str) -> list[str]:
  """Writes `tokenizer` as GPT-2/CodeGen style files: vocab.json, merges.txt, added_tokens.json.

  vocab.json holds the BPE vocabulary (with `<|endoftext|>`, as GPT-2's does) and
  added_tokens.json the added tokens that are not in it (CodeGen's whitespace runs, the
  fill-in-the-middle sentinels), so
  `phi_jax.tokenizer.Tokenizer.from_dir` and transformers' GPT2/CodeGen tokenizers
  rebuild the same ids from them. Files are written atomically; returns their paths.
  """
  spec = json.loads(tokenizer.to_json_str())
  model = spec["model"]
  if model.get("type") != "BPE":
    raise ValueError(f"save_gpt2_files: the tokenizer's model is {model.get('type')}, not BPE")
  vocab = dict(model["vocab"])
  added = {}
  for entry in sorted(spec.get("added_tokens", []), key=lambda e: e["id"]):
    if entry["content"] in vocab:
      continue
    # a special token right after the vocabulary joins it (GPT-2's <|endoftext|>)
    if entry["special"] and entry["id"] == len(vocab) and not added:
      vocab[entry["content"]] = entry["id"]
    else:
      added[entry["content"]] = entry["id"]
  merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
  paths = [os.path.join(directory, name) for name in
           ("vocab.json", "merges.txt", "added_tokens.json")]
  atomic.write_text(paths[0], json.dumps(vocab, ensure_ascii=False))
  atomic.write_text(paths[1], "#version: 0.2\n" + "".join(m + "\n" for m in merges))
  atomic.write_text(paths[2], json.dumps(added, ensure_ascii=False))
  return paths


def load_tokenizer(spec: str) -> Tokenizer:
  """The tokenizer that `spec` names.

  Args:
    spec: 'byte_level' (256 bytes + `<|endoftext|>`); a tokenizer.json file; a
      directory with a tokenizer.json or GPT-2 style vocab.json + merges.txt (+
      added_tokens.json); or a Hugging Face hub repo id such as
      'Salesforce/codegen-350M-mono' (downloads only its tokenizer files; needs network).

  Raises:
    FileNotFoundError: nothing at `spec`, or a hub id that cannot be downloaded.
    ValueError: a file that is not a valid tokenizer.
  """
  if spec == "byte_level":
    return byte_level()
  if os.path.isfile(spec):
    return Tokenizer.from_file(spec)
  if os.path.isdir(spec):
    tokenizer = Tokenizer.from_dir(spec)
    if tokenizer is None:
      raise FileNotFoundError(f"tokenizer {spec}: the directory has no {TOKENIZER_FILE} "
                              "and no vocab.json + merges.txt")
    return tokenizer
  if _REPO_ID.match(spec) and not spec.startswith((".", "/")):
    directory = _download_tokenizer(spec)
    tokenizer = Tokenizer.from_dir(directory)
    if tokenizer is None:
      raise FileNotFoundError(f"tokenizer {spec}: the hub repository has no "
                              f"{TOKENIZER_FILE} and no vocab.json + merges.txt")
    return tokenizer
  raise FileNotFoundError(f"tokenizer {spec}: no such file or directory (expected "
                          "'byte_level', a tokenizer.json, a directory or a hub repo id)")


def _download_tokenizer(repo_id: str) -> str:
  """A local snapshot of the tokenizer files (only) of a hub repository."""
  try:
    import huggingface_hub  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise FileNotFoundError(f"tokenizer {repo_id}: not a local path, and huggingface_hub "
                            "(needed to download it) is not installed") from e
  try:
    return huggingface_hub.snapshot_download(repo_id=repo_id,
                                             allow_patterns=list(TOKENIZER_FILES))
  except Exception as e:  # offline, unknown or gated repository
    raise FileNotFoundError(f"tokenizer {repo_id}: not a local path and could not be "
                            f"downloaded from the Hugging Face hub "
                            f"({type(e).__name__}: {e})") from e


def padded_vocab_size(n: int, multiple: int = 64) -> int:
  """`n` rounded up to a multiple of `multiple` (embedding rows that shard and tile well).

  phi-1: CodeGen's 50295 tokens -> 51200 rows = padded_vocab_size(50295, 1024)
  (padded_vocab_size(50295) is 50304).
  """
  if n < 1 or multiple < 1:
    raise ValueError(f"padded_vocab_size: n={n} and multiple={multiple} must be positive")
  return -(-n // multiple) * multiple


def token_id_bound(tokenizer: Tokenizer) -> int:
  """1 + the largest id the tokenizer can produce (the embedding rows it needs)."""
  ids = tokenizer.backend.get_vocab(with_added_tokens=True).values()
  return max(max(ids, default=-1) + 1, tokenizer.vocab_size)


def check_model_vocab(tokenizer: Tokenizer, model_vocab: int) -> int:
  """Checks that a model with `model_vocab` embedding rows can take every token id.

  Returns:
    The number of padding rows (ids no token uses), e.g. 905 for CodeGen in phi-1.

  Raises:
    ValueError: the model's vocabulary is smaller than the tokenizer's.
  """
  needed = token_id_bound(tokenizer)
  if model_vocab < needed:
    raise ValueError(f"the model's vocab_size is {model_vocab} but the tokenizer has ids up "
                     f"to {needed - 1} ({tokenizer.vocab_size} tokens); set the model's "
                     f"vocab_size to at least {needed}, e.g. {padded_vocab_size(needed)}")
  return model_vocab - needed


def encode_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
  """The ids of each text (no special tokens added), in one Rust-parallel call.

  `tokenizers`' `encode_batch_fast` when the installed version has it: the same ids as
  `Tokenizer.encode_batch` without the character offsets nothing here reads (their
  bookkeeping is most of a byte-level encode).
  """
  backend = tokenizer.backend
  encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
  return [encoding.ids for encoding in encode(texts, add_special_tokens=False)]


def encode_batches(tokenizer: Tokenizer, texts: Iterable[str],
                   batch_size: int = 1024) -> Iterator[list[int]]:
  """The ids of each text, in order, encoded `batch_size` at a time in parallel (Rust)."""
  for batch in _batches(texts, batch_size):
    yield from encode_ids(tokenizer, batch)
