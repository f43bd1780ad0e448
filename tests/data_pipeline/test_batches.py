"""Training data selection: names -> built datasets -> loader batches with the loss policy."""

import dataclasses

import numpy as np
import pytest

from data_pipeline import batches as data
from data_pipeline import catalog, token_dataset
from phi_jax import tokenizer as tokenizer_lib
from phi_jax.train.settings import TrainSettings
from tests.phi_jax.train.driver import build_data

SEQ_LEN = 64


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("work"))
  build_data(directory)
  return directory


def train_cfg(**overrides):
  values = dict(data=("phi1_filtered_code",), seq_len=SEQ_LEN, batch_size=4)
  values.update(overrides)
  return dataclasses.replace(TrainSettings(), **values)


def test_a_partial_mixture_is_an_error_unless_allowed(workdir):
  with pytest.raises(data.DataError, match="needs phi1_textbooks, which the data stage did "
                     "not build.*allow_partial_mixtures"):
    data.dataset_dirs("phi1_code_textbook", workdir, "config.train.data")
  skipped = []
  dirs = data.dataset_dirs("phi1_code_textbook", workdir, "config.train.data",
                           allow_partial=True, skipped=skipped)
  assert dirs == [catalog.built_version_dir(catalog.tfds_dir(workdir), catalog.FILTERED_CODE)]
  assert skipped == ["phi1_textbooks"]
  # a name none of whose components is built is left out too, if another one is found
  assert data.dataset_dirs(("phi1_textbooks", "phi1_filtered_code"), workdir, "w",
                           allow_partial=True) == dirs
  exercises = data.dataset_dirs("phi1_code_exercises", workdir, "config.finetune.data")
  assert exercises == data.dataset_dirs("phi1_exercises", workdir, "config.finetune.data")
  both = data.dataset_dirs(f"phi1_exercises,{dirs[0]}", workdir, "config.train.data")
  assert both == exercises + dirs


def test_unknown_or_unbuilt_data_is_a_clear_error(workdir, tmp_path):
  with pytest.raises(data.DataError, match="unknown dataset 'phi1_nope'"):
    data.dataset_dirs("phi1_nope", workdir, "config.train.data")
  with pytest.raises(data.DataError, match="run the data stage first"):
    data.dataset_dirs("phi1_exercises", str(tmp_path), "config.finetune.data")
  with pytest.raises(data.DataError, match="not a built dataset directory"):
    data.dataset_dirs(str(tmp_path), workdir, "config.train.data")


def test_exercise_batches_mask_prompts_unless_asked_not_to(workdir):
  tok = tokenizer_lib.byte_level()
  cfg = train_cfg(data="phi1_exercises", loss_on_solution_only=True, seq_len=1024)
  batch = next(data.make_batches(cfg, workdir, tok, split="train", seed=0, where="finetune"))
  assert batch["tokens"].shape == batch["loss_mask"].shape == (4, 1024)
  mask = batch["loss_mask"]
  assert 0 < mask.mean() < 1  # prompts (0) and solutions (1) both present
  # every <|endoftext|> counts (the model learns to stop), so do the tokens after a
  # prompt: the mask turns on inside documents, never on a prompt's first token
  assert (mask[batch["tokens"] == tok.eos_id] == 1).all()
  cfg = dataclasses.replace(cfg, loss_on_solution_only=False)
  plain = next(data.make_batches(cfg, workdir, tok, split="train", seed=0, where="finetune"))
  np.testing.assert_array_equal(plain["tokens"], batch["tokens"])
  assert (plain["loss_mask"] == 1).all()


def test_batches_resume_from_their_state(workdir):
  tok = tokenizer_lib.byte_level()
  straight = data.make_batches(train_cfg(), workdir, tok, split="train", seed=3, where="train")
  for _ in range(3):
    next(straight)
  state = straight.get_state()
  want = [next(straight)["tokens"] for _ in range(3)]
  resumed = data.make_batches(train_cfg(), workdir, tok, split="train", seed=3, where="train")
  resumed.set_state(state)
  for expected in want:
    np.testing.assert_array_equal(next(resumed)["tokens"], expected)


def test_segment_ids_and_validation_split(workdir):
  tok = tokenizer_lib.byte_level()
  batch = next(data.make_batches(train_cfg(segment_ids=True), workdir, tok,
                                 split="validation", seed=0, where="train"))
  assert set(batch) == {"tokens", "loss_mask", "segment_ids", "positions"}
  segments, positions, tokens = batch["segment_ids"], batch["positions"], batch["tokens"]
  for row in range(len(tokens)):  # brute force: a new segment right after each EOS
    expected_segment, expected_position = 1, 0
    for t in range(SEQ_LEN):
      assert (segments[row, t], positions[row, t]) == (expected_segment, expected_position)
      expected_position += 1
      if tokens[row, t] == tok.eos_id:
        expected_segment, expected_position = expected_segment + 1, 0


def test_data_tokenized_with_another_tokenizer_is_refused(workdir, tmp_path):
  other = tokenizer_lib.byte_level()
  other.backend.add_tokens(["<|pad|>"])  # same eos id, another tokenizer
  assert token_dataset.tokenizer_sha256(other) != token_dataset.tokenizer_sha256(
      tokenizer_lib.byte_level())
  with pytest.raises(data.DataError, match="config.train.data.*tokenizer"):
    data.make_batches(train_cfg(), workdir, other, split="train", seed=0, where="train")
