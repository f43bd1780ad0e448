"""The fill-in-the-middle transform of training documents, and datasets built with it."""

import math

import numpy as np
import pytest

from data_pipeline import fim as fim_lib
from data_pipeline import token_dataset
from data_pipeline import tokenizer as tok_lib
from data_pipeline.fim import FimConfig
from data_pipeline.token_dataset import JsonlDocuments
from phi_jax import fim
from phi_jax.tokenizer import byte_level
from tests.data_pipeline.test_token_dataset import code_rows, exercise_rows, write_jsonl

ALPHABETS = ("abc xyz_():=\n\t    ", "é ü ß ñ ø", "数据 漢字 かな", "🙂🚀 \u0301\u200d", "\x00\x7f\r")


def _documents(n, seed=0):
  """n (id, text) documents: code, unicode of every width, and the shortest texts (0-3
  characters, where cuts coincide and pieces are empty)."""
  rng = np.random.default_rng(seed)
  documents = []
  for i in range(n):
    length = int(rng.integers(0, 4)) if i % 5 == 0 else int(rng.integers(4, 200))
    alphabet = ALPHABETS[i % len(ALPHABETS)] + ALPHABETS[0]
    text = "".join(alphabet[j] for j in rng.integers(0, len(alphabet), length))
    documents.append((f"doc-{i}", text))
  return documents


@pytest.fixture(scope="module")
def tokenizer():
  """A byte-level BPE with merges (pieces and whole texts tokenize differently) and the
  sentinels."""
  texts = [text for _, text in _documents(300, seed=1)] + [r["text"] for r in code_rows(100)]
  return tok_lib.train_bpe(texts, 600, special_tokens=fim.FIM_TOKENS)


def _restore(tokens, tokenizer):
  """The document of FIM tokens with the sentinels removed and the pieces put back in
  order (an independent reading of the PSM / SPM layouts), and its mode."""
  ids = fim.fim_ids(tokenizer)
  tokens = list(tokens)
  assert tokens.count(ids.prefix) == tokens.count(ids.suffix) == tokens.count(ids.middle) == 1
  s, m = tokens.index(ids.suffix), tokens.index(ids.middle)
  assert tokens[0] == ids.prefix and s < m
  if s == 1:  # SPM: <P><S> suffix <M> prefix middle
    suffix, prefix_middle = tokens[2:m], tokens[m + 1:]
    return tokenizer.decode(prefix_middle) + tokenizer.decode(suffix), fim.SPM
  prefix, suffix, middle = tokens[1:s], tokens[s + 1:m], tokens[m + 1:]
  return tokenizer.decode(prefix) + tokenizer.decode(middle) + tokenizer.decode(suffix), fim.PSM


@pytest.mark.parametrize("make_tokenizer", ["bpe", "byte_level"])
def test_both_modes_restore_every_document(tokenizer, make_tokenizer):
  if make_tokenizer == "byte_level":
    tokenizer = tok_lib.with_special_tokens(byte_level(), fim.FIM_TOKENS)
  documents = _documents(600)
  config = FimConfig(rate=1.0, spm_rate=0.5, seed=3)
  tokens = fim_lib.tokenize(documents, tokenizer, config)
  modes, empty = set(), set()
  for (doc_id, text), doc_tokens in zip(documents, tokens):
    split = fim_lib.split_document(doc_id, text, config)
    assert split.prefix + split.middle + split.suffix == text
    restored, mode = _restore(doc_tokens, tokenizer)
    assert restored == text, doc_id
    # with an empty prefix, PSM and SPM are the same tokens
    assert mode == split.mode or not split.prefix
    modes.add(split.mode)
    empty |= {name for name in ("prefix", "middle", "suffix") if not getattr(split, name)}
    # The pieces are tokenized on their own, as an infilling prompt is: the tokens are
    # the prompt of (prefix, suffix) followed by the middle's.
    prompt = fim.infill_prompt(tokenizer, split.prefix, split.suffix, split.mode)
    assert list(doc_tokens) == prompt + tokenizer.encode(split.middle)
  assert modes == {fim.PSM, fim.SPM}
  assert empty == {"prefix", "middle", "suffix"}


def test_rates_are_met_within_binomial_bounds():
  n = 4000
  documents = [(f"id/{i}", "x" * 99) for i in range(n)]
  for rate, spm_rate in ((0.5, 0.5), (0.1, 0.9), (0.9, 0.0)):
    splits = [fim_lib.split_document(d, t, FimConfig(rate, spm_rate, seed=7))
              for d, t in documents]
    used = [s for s in splits if s is not None]
    # 5 standard deviations of the binomial: a correct transform fails once in ~10^6
    assert abs(len(used) - n * rate) <= 5 * math.sqrt(n * rate * (1 - rate)), (rate, len(used))
    spm = sum(s.mode == fim.SPM for s in used)
    k = len(used)
    assert abs(spm - k * spm_rate) <= 5 * math.sqrt(k * spm_rate * (1 - spm_rate)) + 1e-9
    # The two cuts are independent uniform places: E|U1 - U2| = 1/3 of the document,
    # with standard deviation sqrt(1/18) per document.
    middle = np.array([len(s.middle) / 100 for s in used])
    assert abs(middle.mean() - 1 / 3) <= 5 * math.sqrt(1 / 18 / k) + 0.01
  assert all(fim_lib.split_document(d, t, FimConfig(0.0)) is None for d, t in documents)


def test_same_document_and_seed_give_the_same_transform(tokenizer):
  documents = _documents(200, seed=5)
  config = FimConfig(rate=0.5, seed=11)
  once = fim_lib.tokenize(documents, tokenizer, config)
  # other batches, another order, a fresh config object: the same tokens per document
  again = {}
  for chunk in (documents[150:], documents[:40][::-1], documents[40:150]):
    for (doc_id, _), tokens in zip(chunk, fim_lib.tokenize(chunk, tokenizer,
                                                           FimConfig(rate=0.5, seed=11))):
      again[doc_id] = tokens
  for (doc_id, _), tokens in zip(documents, once):
    np.testing.assert_array_equal(tokens, again[doc_id])
  # another seed cuts (most) documents elsewhere
  other = fim_lib.tokenize(documents, tokenizer, FimConfig(rate=0.5, seed=12))
  assert sum(not np.array_equal(a, b) for a, b in zip(once, other)) > len(documents) // 3


def test_plain_documents_are_tokenized_whole(tokenizer):
  documents = _documents(50)
  tokens = fim_lib.tokenize(documents, tokenizer, FimConfig(rate=0.0))
  assert [list(t) for t in tokens] == tokenizer.encode_batch([t for _, t in documents])


def test_bad_settings_and_tokenizers_without_sentinels_are_refused():
  with pytest.raises(ValueError, match="rate must be in"):
    FimConfig(rate=1.5)
  with pytest.raises(ValueError, match="spm_rate must be in"):
    FimConfig(rate=0.5, spm_rate=-0.1)
  with pytest.raises(ValueError, match="no fill-in-the-middle tokens"):
    fim_lib.tokenize([("a", "text")], byte_level(), FimConfig(rate=1.0))


def read_split(path, split):
  """The decoded records of a built token dataset's split, in file order."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  from data_pipeline import example_proto  # pylint: disable=g-import-not-at-top
  records = []
  for shard in token_dataset.dataset_info(path)["splits"][split]["shards"]:
    reader = array_record_module.ArrayRecordReader(shard)
    records += [example_proto.decode(r) for r in reader.read_all()]
    reader.close()
  return records


def test_dataset_build_applies_the_transform_reproducibly(tokenizer, tmp_path):
  rows = code_rows(60)
  jsonl = write_jsonl(tmp_path / "code.jsonl", rows)
  config = FimConfig(rate=0.5, spm_rate=0.5, seed=1)
  texts = {r["id"]: r["text"] for r in rows}
  built = []
  for attempt in range(2):  # a rebuild writes the same records
    path = token_dataset.write_jsonl_dataset("phi1_filtered_code", [jsonl], tokenizer,
                                             str(tmp_path / f"tfds{attempt}"),
                                             validation_fraction=0.1, fim=config)
    built.append({s: read_split(path, s) for s in ("train", "validation")})
  n_fim = 0
  for split in ("train", "validation"):
    for a, b in zip(*(b[split] for b in built)):
      np.testing.assert_array_equal(a.tokens, b.tokens)
    for record in built[0][split]:
      if fim.fim_ids(tokenizer).prefix in record.tokens:
        n_fim += 1
        assert _restore(record.tokens, tokenizer)[0] == texts[record.id]
      else:
        assert list(record.tokens) == tokenizer.encode(texts[record.id])
  assert 0 < n_fim < len(rows)
  info = token_dataset.dataset_info(path)
  assert info["built_from"]["fim"] == config.describe()
  # the transform is part of what the dataset is built from: another rate, another dataset
  description = lambda c: token_dataset.inputs_description(  # noqa: E731
      "phi1_filtered_code", [jsonl], tokenizer, 0.1, c)["sha256"]
  assert len({description(None), description(config),
              description(FimConfig(rate=0.6, seed=1)),
              description(FimConfig(rate=0.5, spm_rate=0.4, seed=1)),
              description(FimConfig(rate=0.5, seed=2))}) == 5


def test_exercises_are_not_transformed(tmp_path):
  jsonl = write_jsonl(tmp_path / "ex.jsonl", exercise_rows(4))
  with pytest.raises(ValueError, match="applies to text documents"):
    JsonlDocuments([jsonl], "exercise", 0.0, fim=FimConfig(rate=0.5))


# ---------------------------------------------------------------------- a model learns it
FUNCTIONS = ("def add(a, b):\n    return a + b\n",
             "def neg(x):\n    return -x\n",
             "def first(items):\n    return items[0]\n",
             "def is_even(n):\n    return n % 2 == 0\n")


def _middle_loss(model, documents, tokenizer, config):
  """Mean cross entropy of the middles (and their <|endoftext|>) of FIM documents."""
  from phi_jax.train import step as step_lib  # pylint: disable=g-import-not-at-top
  from phi_jax.pretrained import params_of  # pylint: disable=g-import-not-at-top
  rows, masks = [], []
  for (doc_id, text), tokens in zip(documents, fim_lib.tokenize(documents, tokenizer, config)):
    split = fim_lib.split_document(doc_id, text, config)
    start = len(fim.infill_prompt(tokenizer, split.prefix, split.suffix, split.mode))
    row = list(tokens) + [tokenizer.eos_id]
    mask = [0] * len(row)
    mask[start:] = [1] * (len(row) - start)  # loss_mask[t]: target t is counted
    rows.append(row + [0] * (64 - len(row)))
    masks.append(mask + [0] * (64 - len(mask)))
  total, count = step_lib.loss_sums(
      params_of(model), model.config,
      {"tokens": np.asarray(rows, np.int32), "loss_mask": np.asarray(masks, np.int32)})
  return float(total / count)


STEPS = 100  # ~20 s on 2 CPU cores


def test_a_tiny_model_trained_with_fim_learns_to_infill_its_corpus(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  from configs.base import get_config  # pylint: disable=g-import-not-at-top
  from phi_jax.train.settings import train_settings  # pylint: disable=g-import-not-at-top
  from data_pipeline import loader as loader_lib  # pylint: disable=g-import-not-at-top
  from phi_jax.config import PhiConfig  # pylint: disable=g-import-not-at-top
  from phi_jax.pretrained import model_from_params  # pylint: disable=g-import-not-at-top
  from phi_jax.train import mesh as mesh_lib, step as step_lib  # pylint: disable=g-import-not-at-top

  tokenizer = tok_lib.with_special_tokens(byte_level(), fim.FIM_TOKENS)
  config = FimConfig(rate=1.0, spm_rate=0.5, seed=0)
  # the small corpus, repeated: every copy has its own id, so its own cut
  rows = [{"id": f"f{k}-{r}", "text": text} for r in range(64)
          for k, text in enumerate(FUNCTIONS)]
  path = token_dataset.write_jsonl_dataset("phi1_filtered_code",
                                           [write_jsonl(tmp_path / "code.jsonl", rows)],
                                           tokenizer, str(tmp_path / "tfds"), fim=config)
  batches = loader_lib.make_loader([path], split="train", seq_len=64, batch_size=16, seed=0,
                                   eos_id=tokenizer.eos_id, segment_ids=True, shard_index=0,
                                   shard_count=1)
  model_config = PhiConfig(vocab_size=264, d_model=64, num_layers=2, num_heads=4, mlp_dim=256,
                           rotary_dim=8, max_seq_len=64, dtype="float32",
                           attention_dropout=0.0, residual_dropout=0.0)
  train_cfg = train_settings(steps=STEPS, batch_size=16, lr=3e-3, warmup_steps=10,
                             weight_decay=0.0)
  mesh = mesh_lib.make_mesh(dict(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
  trainer = step_lib.Trainer(model_config, train_cfg, mesh,
                             mesh_lib.parse_rules(get_config().mesh.rules), total_steps=STEPS)
  state = trainer.init_state(seed=0)
  # other copies of the same functions, cut elsewhere: infilling, not recall of the cut
  held_out = [(f"held-out-{k}-{r}", text) for r in range(8) for k, text in enumerate(FUNCTIONS)]
  before = _middle_loss(model_from_params(model_config, state.params), held_out, tokenizer,
                        config)
  for i in range(STEPS):
    batch = next(batches)
    state, _ = trainer.train_step(state, trainer.shard_batch(batch), jax.random.key(i))
  batches.close()
  after = _middle_loss(model_from_params(model_config, state.params), held_out, tokenizer,
                       config)
  # measured: 5.5 nats per middle token at the random init, 0.65 after 100 steps
  assert after < 0.2 * before, (before, after)
