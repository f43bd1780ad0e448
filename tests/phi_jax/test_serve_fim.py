"""`suffix` (fill-in-the-middle) on the server's /v1/completions, through the official
`openai` client: answers equal `phi_jax.generate(..., suffix=...)` on a separate load of
the same random tiny Phi, whose tokenizer has the sentinels; a model without them
answers 400."""

import openai
import pytest

import phi_jax
from phi_jax import fim, serve
from phi_jax.tokenizer import byte_level
from tests.conftest import make_hf_phi
from tests.phi_jax.test_fim import fim_byte_level

MODEL = "tiny-fim"
CHUNK = 8


def _model_dir(root, tokenizer):
  directory = str(root / "hf")
  make_hf_phi(directory, vocab_size=260, initializer_range=0.1)
  tokenizer.save(directory)
  return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return _model_dir(tmp_path_factory.mktemp("serve_fim"), fim_byte_level())


def _client(server):
  return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                       timeout=120)


def test_suffix_infills_like_generate(model_dir):
  reference = phi_jax.from_pretrained(model_dir, dtype="float32")
  prefixes = ["def add(a, b):\n    return ", "xs = ["]
  suffix = "\n\nprint(add(1, 2))\n"
  want = phi_jax.generate(reference, prefixes, suffix=suffix, max_new_tokens=16,
                          chunk_size=CHUNK)
  model = serve.load_model(model_dir, dtype="float32")
  with serve.Server(model, port=0, model_name=MODEL, max_batch=4, chunk_size=CHUNK).start() as s:
    client = _client(s)
    out = client.completions.create(model=MODEL, prompt=prefixes, suffix=suffix,
                                    max_tokens=16, temperature=0)
    assert [c.text for c in out.choices] == [w.text for w in want]
    assert [c.finish_reason for c in out.choices] == [w.finish_reason for w in want]
    prompt_tokens = [len(fim.infill_prompt(reference.tokenizer, p, suffix)) for p in prefixes]
    assert out.usage.prompt_tokens == sum(prompt_tokens)
    # streamed: the same middle
    stream = client.completions.create(model=MODEL, prompt=prefixes[0], suffix=suffix,
                                       max_tokens=16, temperature=0, stream=True)
    assert "".join(chunk.choices[0].text for chunk in stream) == want[0].text


def test_a_model_without_sentinels_answers_400(tmp_path):
  model = serve.load_model(_model_dir(tmp_path, byte_level()), dtype="float32")
  with serve.Server(model, port=0, model_name=MODEL, max_batch=2, chunk_size=CHUNK).start() as s:
    with pytest.raises(openai.BadRequestError, match="no fill-in-the-middle tokens"):
      _client(s).completions.create(model=MODEL, prompt="def f(", suffix="):\n", max_tokens=4)
