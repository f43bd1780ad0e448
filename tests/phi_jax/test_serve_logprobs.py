"""Log-probabilities through the server (`echo`, `logprobs`, `top_logprobs`), through the
official `openai` client, checked against transformers' (torch) log-softmax of the same
random tiny Phi in fp32, and against `sampling.score_tokens` (phi_jax's direct
computation)."""

import http.client
import json

import numpy as np
import openai
import pytest

from phi_jax import sampling, serve
from phi_jax.serving import chat_template
from tests.conftest import make_servable_phi

MODEL = "tiny-phi"
CHUNK = 8
CONTEXT = 256  # max_position_embeddings of the conftest model
TOL = 1e-4
PROMPT = "def add(a, b):\n    return a + b  # é\n"  # a 2-byte character: two tokens


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return make_servable_phi(str(tmp_path_factory.mktemp("serve_logprobs") / "hf"))


@pytest.fixture(scope="module")
def torch_model(model_dir):
  import torch
  from transformers import PhiForCausalLM
  return PhiForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def server(model_dir):
  model = serve.load_model(model_dir, dtype="float32")
  with serve.Server(model, port=0, model_name=MODEL, max_batch=4, chunk_size=CHUNK).start() as s:
    yield s


@pytest.fixture(scope="module")
def client(server):
  return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                       timeout=120)


@pytest.fixture(scope="module")
def tokenizer(server):
  return server.info.tokenizer


def torch_logprobs(torch_model, tokens):
  """log-softmax [T, V] of transformers' fp32 logits at every position of `tokens`."""
  import torch
  with torch.no_grad():
    logits = torch_model(torch.as_tensor([tokens])).logits[0].float()
  return torch.log_softmax(logits, dim=-1).numpy()


def _of_tokens(logp, tokens):
  """logp of each token given the ones before it (tokens[1:])."""
  return np.asarray([logp[i - 1, tokens[i]] for i in range(1, len(tokens))])


def test_echo_with_max_tokens_0_returns_the_prompts_logprobs(client, tokenizer, torch_model):
  tokens = tokenizer.encode(PROMPT)
  out = client.completions.create(model=MODEL, prompt=PROMPT, echo=True, logprobs=5,
                                  max_tokens=0, temperature=0)
  [choice] = out.choices
  assert choice.text == PROMPT and choice.finish_reason == "length"
  lp = choice.logprobs
  assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(tokens)
  assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
  logp = torch_logprobs(torch_model, tokens)
  np.testing.assert_allclose(lp.token_logprobs[1:], _of_tokens(logp, tokens), atol=TOL)
  # the top 5 alternatives are transformers' top 5 (plus the token itself when not among them)
  for i in range(1, len(tokens)):
    top_ids = np.argsort(-logp[i - 1])[:5]
    want = {serve.protocol.token_text(tokenizer, t): logp[i - 1, t] for t in top_ids}
    got = lp.top_logprobs[i]
    assert set(want) <= set(got) and len(got) <= 6
    for text, value in want.items():
      assert abs(got[text] - value) < TOL
    assert got[lp.tokens[i]] == lp.token_logprobs[i]
  # the split character: shown by its bytes; offsets are characters of the text
  assert lp.tokens[-3:] == ["bytes:\\xc3", "bytes:\\xa9", "\n"]
  assert lp.text_offset[:3] == [0, 1, 2] and lp.text_offset[-1] == len(PROMPT) - 1
  assert out.usage.prompt_tokens == len(tokens) and out.usage.completion_tokens == 0
  # echo alone: the prompt's text, no logprobs
  plain = client.completions.create(model=MODEL, prompt=[PROMPT, "x"], echo=True,
                                    max_tokens=0)
  assert [c.text for c in plain.choices] == [PROMPT, "x"]
  assert all(c.logprobs is None for c in plain.choices)


def test_direct_computation_equals_transformers(tokenizer, torch_model, model_dir):
  import phi_jax
  model = phi_jax.from_pretrained(model_dir, dtype="float32")
  tokens = tokenizer.encode(PROMPT * 3)
  got = sampling.score_tokens(model, tokens, k=3)
  logp = torch_logprobs(torch_model, tokens)
  np.testing.assert_allclose(got.logprobs[1:], _of_tokens(logp, tokens), atol=TOL)
  for i in range(1, len(tokens)):
    assert [t for t, _ in got.top[i]] == list(np.argsort(-logp[i - 1])[:3])


def test_lm_eval_style_request_scores_the_prompt_and_one_token(client, tokenizer, torch_model):
  """What lm-evaluation-harness's local-completions sends: token ids, echo, logprobs=1,
  max_tokens=1 (it reads token_logprobs[ctxlen:-1] and whether each is the top one)."""
  prompts = [tokenizer.encode(PROMPT), tokenizer.encode("x = [1, 2")]
  out = client.completions.create(model=MODEL, prompt=prompts, echo=True, logprobs=1,
                                  max_tokens=1, temperature=0)
  for choice, tokens in zip(out.choices, prompts):
    lp = choice.logprobs
    assert len(lp.token_logprobs) == len(tokens) + 1
    logp = torch_logprobs(torch_model, tokens)
    generated = int(np.argmax(logp[-1]))  # greedy
    assert choice.text == tokenizer.decode(tokens + [generated])
    np.testing.assert_allclose(lp.token_logprobs[1:],
                               _of_tokens(logp, tokens + [generated]), atol=TOL)
    for i, (value, top) in enumerate(zip(lp.token_logprobs, lp.top_logprobs)):
      if i == 0:
        continue
      is_greedy = int(np.argmax(logp[i - 1])) == (tokens + [generated])[i]
      assert (value == max(top.values())) == is_greedy, i
  # a prompt plus the one token must fit the context
  status, body = _post(client, {"model": MODEL, "prompt": [1] * CONTEXT, "echo": True,
                                "logprobs": 1, "max_tokens": 1})
  assert status == 400 and body["error"]["code"] == "context_length_exceeded"
  assert body["error"]["param"] == "prompt" and "256" in body["error"]["message"]
  # ... while the prompt alone (max_tokens 0) may fill it
  out = client.completions.create(model=MODEL, prompt=[1] * CONTEXT, echo=True, logprobs=0,
                                  max_tokens=0)
  assert len(out.choices[0].logprobs.token_logprobs) == CONTEXT


def test_generated_tokens_carry_their_logprobs(client, tokenizer, torch_model):
  """Sampled at temperature 1.5 and top_p 0.9: the logprobs are still the model's own."""
  out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=20, logprobs=2,
                                  temperature=1.5, top_p=0.9, seed=3, n=2)
  prompt = tokenizer.encode(PROMPT)
  for choice in out.choices:
    lp = choice.logprobs
    ids = _ids_of(tokenizer, lp.tokens)
    assert tokenizer.decode(ids).startswith(choice.text)
    full = prompt + ids
    logp = torch_logprobs(torch_model, full)
    np.testing.assert_allclose(lp.token_logprobs, _of_tokens(logp, full)[len(prompt) - 1:],
                               atol=TOL)
    assert lp.text_offset[0] == 0
  assert sum(len(c.logprobs.tokens) for c in out.choices) == out.usage.completion_tokens
  # echo + logprobs while generating: the prompt's, then the completion's
  echoed = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, logprobs=0,
                                     echo=True, temperature=0)
  lp = echoed.choices[0].logprobs
  ids = _ids_of(tokenizer, lp.tokens)
  assert ids[:len(prompt)] == prompt and echoed.choices[0].text.startswith(PROMPT)
  logp = torch_logprobs(torch_model, ids)
  np.testing.assert_allclose(lp.token_logprobs[1:], _of_tokens(logp, ids), atol=TOL)


def test_chat_logprobs_and_top_logprobs(client, tokenizer, torch_model):
  messages = [{"role": "user", "content": "Reverse a string."}]
  out = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10,
                                       temperature=0, logprobs=True, top_logprobs=3)
  content = out.choices[0].logprobs.content
  assert len(content) == out.usage.completion_tokens
  prompt = tokenizer.encode(chat_template.render([("user", "Reverse a string.")]))
  ids = [_id_of(tokenizer, bytes(c.bytes)) for c in content]
  logp = torch_logprobs(torch_model, prompt + ids)
  for i, entry in enumerate(content):
    row = logp[len(prompt) - 1 + i]
    assert abs(entry.logprob - row[ids[i]]) < TOL
    assert [_id_of(tokenizer, bytes(t.bytes)) for t in entry.top_logprobs] == list(
        np.argsort(-row)[:3])
    assert entry.top_logprobs[0].logprob == entry.logprob  # greedy: the top one
  plain = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4,
                                         temperature=0, logprobs=True)
  assert all(c.top_logprobs == [] for c in plain.choices[0].logprobs.content)
  none = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4,
                                        temperature=0)
  assert none.choices[0].logprobs is None


BAD = [
    ("/v1/completions", {"prompt": "x", "logprobs": 21}, "logprobs", "between 0 and 20"),
    ("/v1/completions", {"prompt": "x", "logprobs": True}, "logprobs", "integer"),
    ("/v1/completions", {"prompt": "x", "logprobs": 1, "stream": True}, "logprobs", "stream"),
    ("/v1/completions", {"prompt": "x", "echo": True, "stream": True}, "echo", "stream"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens", "only with echo"),
    ("/v1/completions", {"prompt": "x", "echo": True, "suffix": "y"}, "echo", "suffix"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                              "top_logprobs": 2}, "top_logprobs", "logprobs: true"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                              "logprobs": True, "top_logprobs": 30}, "top_logprobs", "20"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                              "logprobs": True, "stream": True}, "logprobs", "stream"),
]


@pytest.mark.parametrize("path,body,param,message", BAD)
def test_bad_logprobs_requests_are_400(client, path, body, param, message):
  status, got = _post(client, {"model": MODEL, **body}, path)
  assert status == 400, got
  assert got["error"]["param"] == param and message in got["error"]["message"], got


def _ids_of(tokenizer, texts):
  return [_id_of(tokenizer, _bytes_of(t)) for t in texts]


def _bytes_of(text):
  if text.startswith("bytes:"):
    return bytes(int(h, 16) for h in text[len("bytes:"):].split("\\x")[1:])
  return text.encode()


def _id_of(tokenizer, data):
  """The byte-level vocabulary's id of one token's bytes."""
  if data == b"<|endoftext|>":
    return tokenizer.eos_id
  assert len(data) == 1, data
  return data[0]


def _post(client, body, path="/v1/completions"):
  host, port = client.base_url.host, client.base_url.port
  connection = http.client.HTTPConnection(host, port, timeout=60)
  connection.request("POST", path, body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
  response = connection.getresponse()
  payload = json.loads(response.read())
  connection.close()
  return response.status, payload
