"""The grain loader (no TF): packing, epochs, loss masks, segments, resume, sharding."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipeline import loader, token_dataset
from data_pipeline.token_dataset import DatasetError, JsonlDocuments
from phi_jax.tokenizer import byte_level
from tests.data_pipeline.test_token_dataset import code_rows, exercise_rows, write_jsonl

TOK = byte_level()
EOS = TOK.eos_id
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(tmp_path, name, rows, kind="text", fraction=0.0):
  """A token dataset written without TF from JSONL rows; its version directory."""
  docs = JsonlDocuments([write_jsonl(tmp_path / f"{name}.jsonl", rows)], kind, fraction)
  return token_dataset.write_records(
      name, {s: docs.records(s, TOK) for s in docs.splits()}, str(tmp_path / "data"), TOK,
      kind=kind)


def expected_docs(code, exercises=()):
  """(tokens + EOS, loss mask) per document, tokenized independently of the loader."""
  docs = [(TOK.encode(r["text"]) + [EOS], [1] * (len(TOK.encode(r["text"])) + 1))
          for r in code]
  for r in exercises:
    prompt, solution = TOK.encode(r["prompt"]), TOK.encode(r["solution"])
    docs.append((prompt + solution + [EOS], [0] * len(prompt) + [1] * (len(solution) + 1)))
  return docs


def stream(batches, key="tokens"):
  return np.concatenate([b[key].reshape(-1) for b in batches]) if batches else np.zeros(0)


def split_docs(tokens, mask):
  """(tokens, mask) of each EOS-terminated document of a stream (a partial tail dropped)."""
  ends = np.flatnonzero(tokens == EOS)
  starts = np.concatenate([[0], ends[:-1] + 1])
  return [(tokens[s:e + 1].tolist(), mask[s:e + 1].tolist()) for s, e in zip(starts, ends)]


def make(dirs, **kwargs):
  args = dict(split="train", seq_len=16, batch_size=4, seed=3, eos_id=EOS, shard_index=0,
              shard_count=1)
  args.update(kwargs)
  return loader.make_loader(dirs, **args)


@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
  """(dataset dirs, code rows, exercise rows): a code + exercises mixture."""
  tmp_path = tmp_path_factory.mktemp("mixture")
  code, exercises = code_rows(14), exercise_rows(9)
  return [build(tmp_path, "code", code), build(tmp_path, "ex", exercises, "exercise")], \
      code, exercises


def test_every_token_once_per_epoch_new_order_each_epoch_and_exercise_masks(mixture):
  dirs, code, exercises = mixture
  want = expected_docs(code, exercises)
  epoch_tokens = sum(len(t) for t, _ in want)
  it = make(dirs, seq_len=7, batch_size=1, num_epochs=3)
  assert it.tokens_per_epoch == epoch_tokens
  batches = list(it)
  assert len(batches) == 3 * epoch_tokens // 7  # only the last partial row is dropped
  tokens, mask = stream(batches), stream(batches, "loss_mask")
  orders = []
  for epoch in range(2):
    window = slice(epoch * epoch_tokens, (epoch + 1) * epoch_tokens)
    docs = split_docs(tokens[window], mask[window])
    assert sorted(docs) == sorted(want)  # every document once, masks right
    orders.append([want.index(d) for d in docs])
  assert orders[0] != orders[1] and orders[0] != sorted(orders[0])
  tail = split_docs(tokens[2 * epoch_tokens:], mask[2 * epoch_tokens:])
  assert all(d in want for d in tail) and len(tail) < len(want)


def test_unshuffled_stream_is_the_files_in_order(mixture):
  dirs, code, exercises = mixture
  batches = list(make(dirs, shuffle=False, num_epochs=1, batch_size=2))
  want = expected_docs(code, exercises)
  flat_tokens = np.concatenate([t for t, _ in want])
  flat_mask = np.concatenate([m for _, m in want])
  n = len(batches) * 2 * 16
  assert n > len(flat_tokens) - 32
  np.testing.assert_array_equal(stream(batches), flat_tokens[:n])
  np.testing.assert_array_equal(stream(batches, "loss_mask"), flat_mask[:n])


def test_segment_ids_and_positions(mixture):
  dirs, _, _ = mixture
  with_segments = [next(it) for it in [make(dirs, segment_ids=True)] for _ in range(30)]
  plain = make(dirs)
  for batch in with_segments:
    other = next(plain)
    assert set(other) == {"tokens", "loss_mask"}
    np.testing.assert_array_equal(batch["tokens"], other["tokens"])
    np.testing.assert_array_equal(batch["loss_mask"], other["loss_mask"])
    for row in range(batch["tokens"].shape[0]):  # brute force: count EOS along the row
      segment, position = 1, 0
      for t, token in enumerate(batch["tokens"][row]):
        assert (batch["segment_ids"][row, t], batch["positions"][row, t]) == (segment, position)
        segment, position = (segment + 1, 0) if token == EOS else (segment, position + 1)
    for key in batch:
      assert batch[key].dtype == np.int32 and batch[key].shape == (4, 16)


def test_restored_loader_continues_exactly_across_epochs(mixture):
  dirs, _, _ = mixture
  it = make(dirs, segment_ids=True)
  n = 2 * it.tokens_per_epoch // 64 + 5  # more than two epochs
  states, batches = [], []
  for _ in range(n):
    states.append(json.loads(json.dumps(it.get_state())))
    batches.append(next(it))
  assert states[-1]["epoch"] >= 2
  for cut in (0, 1, 17, n - 3):
    restored = make(dirs, segment_ids=True)
    restored.set_state(states[cut])
    for want in batches[cut:]:
      got = next(restored)
      for key in want:
        np.testing.assert_array_equal(got[key], want[key])
  other_seed = make(dirs, seed=4)
  with pytest.raises(DatasetError, match="seed"):
    other_seed.set_state(states[3])


def test_worker_processes_give_the_same_batches_and_resume(mixture):
  """Packing stays in-process, so any worker_count yields the same batches, and a state
  saved with one worker count resumes with another."""
  dirs, _, _ = mixture
  in_process = make(dirs)
  want = [next(in_process) for _ in range(25)]
  workers = make(dirs, worker_count=2)
  try:
    for batch in want[:9]:
      np.testing.assert_array_equal(next(workers)["tokens"], batch["tokens"])
    state = json.loads(json.dumps(workers.get_state()))
  finally:
    workers.close()
  resumed = make(dirs, worker_count=1)
  try:
    resumed.set_state(state)
    for batch in want[9:]:
      np.testing.assert_array_equal(next(resumed)["tokens"], batch["tokens"])
  finally:
    resumed.close()
  in_process.set_state(state)
  np.testing.assert_array_equal(next(in_process)["tokens"], want[9]["tokens"])


def test_grain_checkpoint_handler_round_trip(mixture, tmp_path):
  from etils import epath
  import grain
  dirs, _, _ = mixture
  it = make(dirs)
  for _ in range(5):
    next(it)
  handler = grain.checkpoint.CheckpointHandler()
  handler.save(epath.Path(tmp_path), item=it)
  want = next(it)
  restored = handler.restore(epath.Path(tmp_path), item=make(dirs))
  np.testing.assert_array_equal(next(restored)["tokens"], want["tokens"])


def test_host_shards_are_disjoint_and_cover_the_data(mixture):
  dirs, code, exercises = mixture
  want = expected_docs(code, exercises)
  seen = []
  for host in range(3):
    it = make(dirs, seq_len=1, batch_size=3, shard_index=host, shard_count=3, num_epochs=1)
    batches = list(it)
    assert all(b["tokens"].shape == (1, 1) for b in batches)
    docs = split_docs(stream(batches), stream(batches, "loss_mask"))
    assert len(docs) == it.documents_per_epoch == len(range(host, len(want), 3))
    seen.append(docs)
  all_docs = [d for docs in seen for d in docs]
  assert sorted(all_docs) == sorted(want)  # together: everything, each once


def test_bad_inputs_give_clear_errors(mixture, tmp_path):
  dirs, _, _ = mixture
  with pytest.raises(DatasetError, match=f"{tmp_path}/missing: no such dataset directory"):
    make([str(tmp_path / "missing")])
  with pytest.raises(DatasetError, match=f"{tmp_path}: not a built token dataset"):
    make([str(tmp_path)])
  with pytest.raises(DatasetError, match=f"{dirs[0]}: tokenized with <.endoftext.> = 256"):
    make(dirs, eos_id=50256)
  with pytest.raises(DatasetError, match=f"{dirs[1]}: tokenized by tokenizer sha256"):
    make(dirs[1:], tokenizer_sha256="0" * 64)
  with pytest.raises(DatasetError, match="no split 'validation'"):
    make(dirs, split="validation")
  with pytest.raises(DatasetError, match=f"the train split of {dirs[0]} has .* fewer than one"):
    make(dirs[:1], seq_len=10**6)
  with pytest.raises(ValueError, match="multiple of the number of hosts"):
    make(dirs, batch_size=5, shard_count=2)
  sha = token_dataset.tokenizer_sha256(TOK)
  assert make(dirs, tokenizer_sha256=sha).tokens_per_epoch > 0
  info = loader.dataset_info(dirs[1])
  assert (info["eos_id"], info["tokenizer_sha256"], info["kind"]) == (EOS, sha, "exercise")


def test_loader_never_imports_tensorflow(tmp_path):
  code = f"""
import json, sys
from data_pipeline import loader, token_dataset
from data_pipeline.token_dataset import TokenRecord
from phi_jax.tokenizer import byte_level
import numpy as np
tok = byte_level()
records = [TokenRecord(id=str(i), tokens=np.arange(i + 5, dtype=np.int32)) for i in range(20)]
path = token_dataset.write_records("t", {{"train": records}}, {str(tmp_path)!r}, tok)
it = loader.make_loader([path], split="train", seq_len=8, batch_size=2, seed=0,
                        eos_id=tok.eos_id, segment_ids=True, shard_index=0, shard_count=1)
batches = [next(it) for _ in range(20)]
it.set_state(json.loads(json.dumps(it.get_state())))
next(it)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in
                        ("tensorflow", "tensorflow_datasets", "seqio"))))
"""
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert json.loads(out.stdout.strip().splitlines()[-1]) == []
