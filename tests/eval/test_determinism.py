"""The determinism certificate with fake models: a planted batch dependence is found
(which problems, at which token, how pass@1 moves); a batch-independent decoder is
certified identical. phi_jax's own greedy decoding is certified in the tiny run
(tests/test_run.py)."""

import pytest

from eval import determinism

PROMPTS = [[1] * n for n in (3, 9, 4, 12, 5, 7, 6, 11)]  # token prompts of several lengths
TASKS = [f"T/{i}" for i in range(len(PROMPTS))]


def _decoder(depends_on_batch: bool):
  """A fake greedy decoder: each prompt's completion is 'good' unless (planted bug) it
  shares its batch with a longer prompt, when padding flips a near-tie to 'bad'."""
  calls = []

  def decode(prompts, batch_size):
    calls.append(batch_size)
    out = []
    for begin in range(0, len(prompts), batch_size):
      batch = prompts[begin:begin + batch_size]
      longest = max(len(p) for p in batch)
      out += ["good" if not depends_on_batch or len(p) == longest else "bad" for p in batch]
    return out

  return decode, calls


def _encode(text):
  return [ord(c) for c in text]


def _certify(decode, batch_size=4):
  reference = decode(PROMPTS, batch_size)  # the evaluation's own decoding
  ran = []

  def execute(indices, completions):
    ran.extend(indices)
    return [c == "good" for c in completions]

  cert = determinism.certify(TASKS, PROMPTS, reference, [c == "good" for c in reference],
                             decode=decode, encode=_encode, execute=execute,
                             batch_size=batch_size, seed=3)
  return cert, reference, ran


def test_a_planted_batch_dependence_is_detected():
  decode, calls = _decoder(depends_on_batch=True)
  cert, reference, ran = _certify(decode)
  # at batch 4, only the longest prompt of each batch of the evaluation came out right
  assert reference.count("good") == 2 and cert["reference_pass@1"] == 0.25
  alone = cert["variants"]["batch_1"]
  assert alone["diverged"] == 6 and alone["verdict_changed"] == 6  # each alone is right
  assert alone["pass@1"] == 1.0 and alone["pass@1_change"] == pytest.approx(0.75)
  assert alone["first_divergence"] == {TASKS[i]: 0 for i in (0, 1, 2, 4, 5, 6)}
  assert not cert["identical"] and calls[1:] == [4, 1]  # shuffled at 4, then each alone
  # only the completions that changed were executed again
  assert sorted(set(ran)) == [0, 1, 2, 4, 5, 6]


def test_a_batch_independent_decoder_is_certified_identical():
  decode, _ = _decoder(depends_on_batch=False)
  cert, _, ran = _certify(decode)
  assert cert["identical"] and ran == []
  for variant in cert["variants"].values():
    assert variant["diverged"] == 0 and variant["pass@1_change"] == 0.0


def test_first_divergence_and_choice():
  assert determinism.first_divergence([1, 2, 3], [1, 2, 3]) is None
  assert determinism.first_divergence([1, 2, 3], [1, 5, 3]) == 1
  assert determinism.first_divergence([1, 2], [1, 2, 3]) == 2
  chosen = determinism.choose(100, 10, seed=0)
  assert len(set(chosen)) == 10 and chosen == sorted(chosen)
  assert chosen == determinism.choose(100, 10, seed=0) != determinism.choose(100, 10, seed=1)
  assert determinism.choose(5, 10, seed=0) == [0, 1, 2, 3, 4]
