"""SeqIO vocabulary, tasks and mixtures; the SeqIO and grain token streams agree."""

import numpy as np
import pytest

from data_pipeline import loader, token_dataset
from phi_jax.tokenizer import Tokenizer, byte_level
from tests.data_pipeline.test_token_dataset import code_rows, exercise_rows, write_jsonl

seqio = pytest.importorskip("seqio")
from data_pipeline import seqio_tasks, tfds_builders  # noqa: E402
from data_pipeline.seqio_vocab import TokenizerVocabulary  # noqa: E402

TOK = byte_level()
EOS = TOK.eos_id


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """The three curated sets built by the TFDS builders; tasks registered over them."""
  tmp = tmp_path_factory.mktemp("seqio")
  sets = {"phi1_filtered_code": (code_rows(16), 0.2), "phi1_textbooks":
          (code_rows(7, prefix="book"), 0.0), "phi1_exercises": (exercise_rows(11), 0.0)}
  for name, (rows, fraction) in sets.items():
    jsonl = write_jsonl(tmp / f"{name}.jsonl", rows)
    tfds_builders.build_dataset(name, [jsonl], TOK, str(tmp / "tfds"), fraction)
  vocabulary = TokenizerVocabulary(TOK)
  seqio_tasks.register(str(tmp / "tfds"), vocabulary)
  seqio_tasks.register(str(tmp / "tfds"), vocabulary)  # idempotent
  return str(tmp / "tfds")


def _dirs(data_dir, task):
  return [token_dataset.version_dir(data_dir, name) for name in seqio_tasks.task_names(task)]


def test_vocabulary_matches_the_tokenizer():
  import tensorflow as tf
  vocab = TokenizerVocabulary(TOK)
  text = "def f(x):\n    return 'ü' * x\n"
  ids = TOK.encode(text)
  assert (vocab.eos_id, vocab.vocab_size, vocab.unk_id) == (256, 257, None)
  assert list(vocab.encode(text)) == ids
  assert vocab.encode_tf(tf.constant(text)).numpy().tolist() == ids
  assert vocab.encode_tf(tf.constant([text, "a"])).to_list() == [ids, [97]]
  assert vocab.decode(ids + [EOS, 97]) == text  # stops at <|endoftext|>
  decoded = vocab.decode_tf(tf.constant([ids + [EOS, 97], [97, 98] + [EOS] * len(ids)]))
  assert [t.decode() for t in decoded.numpy()] == [text, "ab"]
  assert vocab == TokenizerVocabulary(Tokenizer.from_json_str(TOK.to_json_str()))
  other = byte_level()
  other.backend.add_tokens(["<extra>"])
  assert vocab != TokenizerVocabulary(other) and len({vocab, TokenizerVocabulary(TOK)}) == 1


def test_tasks_and_mixtures_are_registered_and_readable(data_dir):
  for name in ("phi1_filtered_code", "phi1_textbooks", "phi1_exercises", "humaneval"):
    assert name in seqio.TaskRegistry.names()
  mixture = seqio.get_mixture_or_task("phi1_code_textbook")
  tokens = {n: token_dataset.dataset_info(token_dataset.version_dir(data_dir, n))
            ["splits"]["train"] for n in ("phi1_filtered_code", "phi1_textbooks")}
  for task in mixture.tasks:  # rates proportional to tokens (+ one EOS per document)
    assert mixture.get_rate(task) == tokens[task.name]["tokens"] + tokens[task.name]["documents"]
  assert seqio_tasks.task_names("phi1_code_exercises") == ["phi1_exercises"]
  sampled = list(mixture.get_dataset(None, split="train", shuffle=False).take(5)
                 .as_numpy_iterator())
  assert len(sampled) == 5 and all(ex["targets"][-1] == EOS for ex in sampled)
  validation = list(seqio.get_mixture_or_task("phi1_filtered_code").get_dataset(
      None, split="validation", shuffle=False).as_numpy_iterator())
  assert len(validation) == sum(token_dataset.hash_fraction(r["id"]) < 0.2
                                for r in code_rows(16)) >= 1

  humaneval = list(seqio.get_mixture_or_task("humaneval").get_dataset(
      None, split="test", shuffle=False).as_numpy_iterator())
  assert len(humaneval) == 164
  first = humaneval[0]
  assert first["task_id"] == b"HumanEval/0"
  assert first["inputs"].tolist() == TOK.encode(first["inputs_pretokenized"].decode())
  assert first["targets"].tolist() == TOK.encode(first["targets_pretokenized"].decode()) + [EOS]


@pytest.mark.parametrize("task", ["phi1_code_textbook", "phi1_code_exercises"])
def test_unshuffled_grain_and_seqio_streams_are_equal(data_dir, task):
  rows = seqio_tasks.packed_rows(task, "train", 24)
  it = loader.make_loader(_dirs(data_dir, task), split="train", seq_len=24, batch_size=1,
                          seed=0, eos_id=EOS, shuffle=False, num_epochs=1, shard_index=0,
                          shard_count=1)
  batches = list(it)
  assert len(rows["targets"]) == len(batches) == it.tokens_per_epoch // 24
  np.testing.assert_array_equal(np.concatenate([b["tokens"] for b in batches]),
                                rows["targets"])
  np.testing.assert_array_equal(np.concatenate([b["loss_mask"] for b in batches]),
                                rows["loss_mask"])
  if task == "phi1_code_exercises":
    assert 0 < rows["loss_mask"].mean() < 1


def _documents(tokens, mask):
  ends = np.flatnonzero(tokens == EOS)
  starts = np.concatenate([[0], ends[:-1] + 1])
  return sorted((tuple(tokens[s:e + 1]), tuple(mask[s:e + 1])) for s, e in zip(starts, ends))


def test_shuffled_streams_hold_the_same_documents_per_epoch(data_dir):
  """Shuffled by seed, grain (index permutation) and SeqIO (shuffle buffer) order the
  documents differently: one epoch of each is the same multiset of documents."""
  task = "phi1_code_textbook"
  rows = seqio_tasks.packed_rows(task, "train", 1, shuffle=True, seed=7)
  it = loader.make_loader(_dirs(data_dir, task), split="train", seq_len=1, batch_size=1,
                          seed=7, eos_id=EOS, num_epochs=1, shard_index=0, shard_count=1)
  batches = list(it)
  grain_tokens = np.concatenate([b["tokens"].reshape(-1) for b in batches])
  grain_mask = np.concatenate([b["loss_mask"].reshape(-1) for b in batches])
  seqio_tokens, seqio_mask = rows["targets"].reshape(-1), rows["loss_mask"].reshape(-1)
  assert len(grain_tokens) == len(seqio_tokens) == it.tokens_per_epoch
  assert _documents(grain_tokens, grain_mask) == _documents(seqio_tokens, seqio_mask)
  unshuffled = seqio_tasks.packed_rows(task, "train", 1)["targets"].reshape(-1)
  assert not np.array_equal(grain_tokens, unshuffled)
