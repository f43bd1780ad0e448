"""Fill-in-the-middle at inference: the prompt format, generate(suffix=), the sentinels
through checkpoints, HF export and `transformers`."""

import os

import pytest
import transformers

import phi_jax
from phi_jax import checkpoint, convert, fim
from phi_jax.pretrained import params_of
from phi_jax.tokenizer import Tokenizer, byte_level
from tests.conftest import make_hf_phi

IDS = fim.FimIds(prefix=257, middle=258, suffix=259)


def fim_byte_level() -> Tokenizer:
  """The byte-level tokenizer with the sentinels at 257, 258, 259 (phi_jax has no
  data_pipeline here: they are added as data_pipeline.tokenizer.with_special_tokens does)."""
  tokenizer = byte_level()
  tokenizer.backend.add_special_tokens(list(fim.FIM_TOKENS))
  return tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A random transformers Phi over the byte vocabulary + sentinels (260), with the
  FIM tokenizer beside it."""
  directory = str(tmp_path_factory.mktemp("fim") / "hf")
  make_hf_phi(directory, vocab_size=260, initializer_range=0.1)
  fim_byte_level().save(directory)
  return directory


def test_layouts_follow_the_fim_paper():
  p, m, s = [1, 2], [3], [4, 5]
  assert fim.arrange(p, m, s, IDS, fim.PSM) == [257, 1, 2, 259, 4, 5, 258, 3]
  assert fim.arrange(p, m, s, IDS, fim.SPM) == [257, 259, 4, 5, 258, 1, 2, 3]
  with pytest.raises(ValueError, match="mode"):
    fim.arrange(p, m, s, IDS, "pms")


def test_infill_prompt_tokenizes_the_pieces_apart():
  tokenizer = fim_byte_level()
  assert fim.fim_ids(tokenizer) == IDS
  assert fim.infill_prompt(tokenizer, "ab", "c") == [257, 97, 98, 259, 99, 258]
  assert fim.infill_prompt(tokenizer, "ab", "c", fim.SPM) == [257, 259, 99, 258, 97, 98]
  # the same tokens as the sentinels written in the text (the tokenizer cuts them out)
  text = f"{fim.FIM_PREFIX}ab{fim.FIM_SUFFIX}c{fim.FIM_MIDDLE}"
  assert tokenizer.encode(text) == fim.infill_prompt(tokenizer, "ab", "c")


def test_a_tokenizer_without_sentinels_is_refused_by_name():
  assert not fim.has_fim_tokens(byte_level())
  with pytest.raises(ValueError, match=r"no fill-in-the-middle tokens \(<\|fim_prefix\|>"):
    fim.infill_prompt(byte_level(), "a", "b")


def test_generate_with_suffix_continues_the_infill_prompt(model_dir):
  model = phi_jax.from_pretrained(model_dir, dtype="float32")
  prefixes, suffixes = ["def f(x):\n    return ", "x = ["], ["\n\nprint(f(1))\n", "]\n"]
  for mode in fim.MODES:
    infilled = phi_jax.generate(model, prefixes, suffix=suffixes, fim_mode=mode,
                                max_new_tokens=8, num_samples=2, temperature=0.7, seed=3,
                                chunk_size=8)
    prompts = [fim.infill_prompt(model.tokenizer, p, s, mode)
               for p, s in zip(prefixes, suffixes)]
    plain = phi_jax.generate(model, prompts, max_new_tokens=8, num_samples=2,
                             temperature=0.7, seed=3, chunk_size=8)
    assert [c.tokens for c in infilled] == [c.tokens for c in plain]
    assert [c.text for c in infilled] == [c.text for c in plain]
    assert infilled[0].prompt_tokens == len(prompts[0])
  # one suffix for every prompt
  shared = phi_jax.generate(model, prefixes, suffix="\n", max_new_tokens=8, chunk_size=8)
  assert shared[1].prompt_tokens == len(fim.infill_prompt(model.tokenizer, prefixes[1], "\n"))


def test_generate_with_suffix_errors(model_dir):
  model = phi_jax.from_pretrained(model_dir, dtype="float32")
  with pytest.raises(ValueError, match="2 prompts but 1 suffixes"):
    phi_jax.generate(model, ["a", "b"], suffix=["c"])
  with pytest.raises(TypeError, match="text prompts"):
    phi_jax.generate(model, [[1, 2]], suffix="c")
  with pytest.raises(ValueError, match="no fill-in-the-middle tokens"):
    phi_jax.generate(model, ["a"], suffix="c", tokenizer=byte_level())


def test_sentinels_round_trip_through_checkpoints_hf_export_and_transformers(model_dir,
                                                                              tmp_path):
  tokenizer = fim_byte_level()
  model = phi_jax.from_pretrained(model_dir, dtype="float32")
  assert model.tokenizer.encode(fim.FIM_MIDDLE) == [IDS.middle]  # read from the HF dir
  ckpt = str(tmp_path / "ckpt")
  checkpoint.save(ckpt, 0, params_of(model), model.config, tokenizer=model.tokenizer)
  assert fim.fim_ids(checkpoint.read_tokenizer(ckpt)) == IDS
  out = convert.orbax_to_hf(ckpt, str(tmp_path / "exported"))
  assert fim.fim_ids(phi_jax.Tokenizer.from_dir(out)) == IDS

  hf = transformers.AutoTokenizer.from_pretrained(out)
  assert hf.convert_tokens_to_ids(list(fim.FIM_TOKENS)) == [257, 258, 259]
  assert set(fim.FIM_TOKENS) <= set(hf.all_special_tokens)
  assert hf.eos_token_id == tokenizer.eos_id == 256
  text = f"{fim.FIM_PREFIX}def f():{fim.FIM_SUFFIX}\n    pass\n{fim.FIM_MIDDLE}"
  assert hf.encode(text, add_special_tokens=False) == tokenizer.encode(text)
  assert hf.decode(tokenizer.encode(text), skip_special_tokens=True) == "def f():\n    pass\n"
  # the exported model and tokenizer load together in transformers and accept the ids
  torch_model = transformers.AutoModelForCausalLM.from_pretrained(out)
  inputs = hf(text, return_tensors="pt", add_special_tokens=False)
  assert torch_model(**inputs).logits.shape == (1, len(tokenizer.encode(text)), 260)
  # and come back into phi_jax with the same ids
  again = phi_jax.from_pretrained(out, dtype="float32")
  assert fim.fim_ids(again.tokenizer) == IDS
  assert os.path.isfile(os.path.join(out, "tokenizer_config.json"))
