"""Tests of phi_jax.serve: the OpenAI-compatible server, through the official client.

One server runs in-process on port 0 for the module, serving a random tiny
transformers Phi over the byte-level vocabulary (257) whose directory holds a
tokenizer.json. Every answer is checked against `phi_jax.generate` on a separate load
of the same model, with the server's chunk size, so both share compiled programs.
"""

import concurrent.futures
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import openai
import pytest

import phi_jax
from phi_jax import sampling, serve
from phi_jax.serving import chat_template
from tests.conftest import REPO_ROOT, make_servable_phi

MODEL = "tiny-phi"
NEW = 24  # max_tokens of most requests
CHUNK = 8  # the server's decode chunk: NEW tokens arrive in three chunks
CONTEXT = 256  # max_position_embeddings of the conftest model
PROMPTS = ["def f(x):", "hello world", "import os\n", "class A:", "x = [1, 2", "# sum\n"]
MESSAGES = [{"role": "system", "content": "You write Python."},
            {"role": "user", "content": "Reverse a string."}]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A random byte-vocabulary Phi saved by transformers, with tokenizer.json beside it."""
  return make_servable_phi(str(tmp_path_factory.mktemp("serve") / "hf"))


@pytest.fixture(scope="module")
def server(model_dir):
  model = serve.load_model(model_dir, dtype="float32")
  with serve.Server(model, port=0, model_name=MODEL, max_batch=8, chunk_size=CHUNK).start() as s:
    yield s


@pytest.fixture(scope="module")
def reference(model_dir):
  """A second load of the model, for phi_jax.generate (the server owns its own)."""
  return phi_jax.from_pretrained(model_dir, dtype="float32")


@pytest.fixture(scope="module")
def client(server):
  return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                       timeout=120)


def _greedy(reference, prompt, max_new_tokens=NEW, stop=None):
  [out] = phi_jax.generate(reference, [prompt], max_new_tokens=max_new_tokens, stop=stop,
                           chunk_size=CHUNK)
  return out


def _chat_prompt(messages):
  return chat_template.render([(m["role"], m["content"]) for m in messages])


def _raw(server, method, path, body=None, headers=None):
  """(status, parsed JSON body, headers) of one request over a new connection."""
  connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
  data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
  connection.request(method, path, body=data, headers=headers or {})
  response = connection.getresponse()
  payload = response.read()
  connection.close()
  return response.status, json.loads(payload), response.headers


# ----------------------------------------------------------------------------- basics


def test_models_and_health(server, client):
  assert [m.id for m in client.models.list()] == [MODEL]
  assert client.models.retrieve(MODEL).id == MODEL
  with pytest.raises(openai.NotFoundError):
    client.models.retrieve("other")
  status, body, _ = _raw(server, "GET", "/health")
  assert status == 200 and body["status"] == "ok" and body["model"] == MODEL


def test_greedy_completion_equals_generate(client, reference):
  want = _greedy(reference, PROMPTS[0])
  assert want.finish_reason == "length", "the greedy reference hit <|endoftext|>"
  out = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=NEW,
                                  temperature=0)
  assert out.object == "text_completion" and out.model == MODEL and out.id.startswith("cmpl-")
  [choice] = out.choices
  assert (choice.index, choice.text, choice.finish_reason) == (0, want.text, "length")
  assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (
      len(PROMPTS[0]), NEW, len(PROMPTS[0]) + NEW)


def test_max_tokens_cuts_with_length(client, reference):
  want = _greedy(reference, PROMPTS[1])
  out = client.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=5, temperature=0)
  assert out.choices[0].finish_reason == "length"
  assert out.usage.completion_tokens == 5
  assert out.choices[0].text == reference.tokenizer.decode(want.tokens[:5])


def test_prompt_lists_and_token_prompts(client, reference):
  tokenizer = reference.tokenizer
  want = [_greedy(reference, p) for p in PROMPTS[:2]]
  by_text = client.completions.create(model=MODEL, prompt=PROMPTS[:2], max_tokens=NEW,
                                      temperature=0)
  by_ids = client.completions.create(model=MODEL, prompt=[tokenizer.encode(p) for p in PROMPTS[:2]],
                                     max_tokens=NEW, temperature=0)
  one_id_list = client.completions.create(model=MODEL, prompt=tokenizer.encode(PROMPTS[1]),
                                          max_tokens=NEW, temperature=0)
  for out in (by_text, by_ids):
    assert [c.index for c in out.choices] == [0, 1]
    assert [c.text for c in out.choices] == [w.text for w in want]
    assert out.usage.prompt_tokens == len(PROMPTS[0]) + len(PROMPTS[1])
  assert one_id_list.choices[0].text == want[1].text


def test_n_samples_with_temperature_and_seed(client):
  kwargs = dict(model=MODEL, prompt=PROMPTS[0], max_tokens=NEW, temperature=1.0, n=4)
  out = client.completions.create(seed=7, **kwargs)
  texts = [c.text for c in out.choices]
  assert [c.index for c in out.choices] == [0, 1, 2, 3]
  assert len(set(texts)) == 4
  assert out.usage.prompt_tokens == len(PROMPTS[0])  # the prompt is counted once
  assert 4 <= out.usage.completion_tokens <= 4 * NEW
  again = client.completions.create(seed=7, **kwargs)
  assert [c.text for c in again.choices] == texts  # seeded: reproducible
  other = client.completions.create(seed=8, **kwargs)
  assert [c.text for c in other.choices] != texts


def test_stop_sequences(client, reference):
  want = _greedy(reference, PROMPTS[0])
  # Two substrings of the greedy text, each first occurring at its index.
  firsts = [(j, want.text[j:j + 2]) for j in range(2, len(want.text) - 1)
            if want.text.find(want.text[j:j + 2]) == j and want.text[j:j + 2].isprintable()]
  assert len(firsts) >= 2, f"greedy text too uniform: {want.text!r}"
  (early_at, early), (late_at, late) = firsts[0], firsts[-1]
  out = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=NEW,
                                  temperature=0, stop=late)
  assert (out.choices[0].text, out.choices[0].finish_reason) == (want.text[:late_at], "stop")
  out = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=NEW,
                                  temperature=0, stop=[late, early])
  assert (out.choices[0].text, out.choices[0].finish_reason) == (want.text[:early_at], "stop")


def test_chat_completion_uses_the_template(client, reference):
  want = _greedy(reference, _chat_prompt(MESSAGES), stop=list(chat_template.STOP))
  out = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=NEW,
                                       temperature=0)
  assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
  [choice] = out.choices
  assert choice.message.role == "assistant"
  assert (choice.message.content, choice.finish_reason) == (want.text, want.finish_reason)
  assert out.usage.prompt_tokens == len(reference.tokenizer.encode(_chat_prompt(MESSAGES)))


# ----------------------------------------------------------------------------- streaming


def test_streamed_completion_equals_the_non_streamed_one(client):
  kwargs = dict(model=MODEL, prompt=PROMPTS[0], max_tokens=NEW, temperature=0)
  whole = client.completions.create(**kwargs).choices[0]
  chunks = list(client.completions.create(stream=True, **kwargs))
  texts = [c.choices[0].text for c in chunks]
  assert sum(1 for t in texts if t) > 1, "the text arrived in one piece"
  assert "".join(texts) == whole.text
  assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["length"]


def test_stream_delivers_text_while_generation_runs(client, monkeypatch):
  """The scheduler pauses after its second decode chunk until the client holds text."""
  received = threading.Event()
  waited = []
  step = sampling.Generator.step

  def gated(self, on_chunk=None, on_finish=None):
    def chunk_then_wait(row, tokens):
      on_chunk(row, tokens)
      waited.append(None)
      if len(waited) == 2:
        waited.append(received.wait(timeout=30))
    return step(self, on_chunk=chunk_then_wait, on_finish=on_finish)

  monkeypatch.setattr(sampling.Generator, "step", gated)
  for chunk in client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=NEW,
                                         temperature=0, stream=True):
    if chunk.choices[0].text:
      received.set()
  assert waited[2] is True, "no text reached the client before generation ended"


def test_streamed_chat_equals_the_non_streamed_one(client):
  kwargs = dict(model=MODEL, messages=MESSAGES, max_tokens=NEW, temperature=0)
  whole = client.chat.completions.create(**kwargs).choices[0]
  chunks = list(client.chat.completions.create(
      stream=True, stream_options={"include_usage": True}, **kwargs))
  *chunks, usage_chunk = chunks
  assert chunks[0].object == "chat.completion.chunk"
  assert chunks[0].choices[0].delta.role == "assistant"
  deltas = [c.choices[0].delta.content or "" for c in chunks]
  assert sum(1 for d in deltas if d) > 1, "the text arrived in one piece"
  assert "".join(deltas) == whole.message.content
  assert chunks[-1].choices[0].finish_reason == whole.finish_reason
  assert usage_chunk.choices == [] and usage_chunk.usage.completion_tokens > 0


def test_streamed_n_samples_with_stops_equal_the_non_streamed_ones(client):
  kwargs = dict(model=MODEL, prompt=PROMPTS[0], max_tokens=NEW, temperature=1.0, n=3, seed=3)
  unstopped = [c.text for c in client.completions.create(**kwargs).choices]
  # A printable two-character stop string from the middle of each (seeded) sample.
  stops = [next(t[j:j + 2] for j in range(4, len(t) - 1) if t[j:j + 2].isascii()
                and t[j:j + 2].isprintable()) for t in unstopped]
  whole = client.completions.create(stop=stops, **kwargs)
  assert [c.finish_reason for c in whole.choices] == ["stop"] * 3
  assert all(len(c.text) < len(t) for c, t in zip(whole.choices, unstopped))
  texts, reasons = [""] * 3, [None] * 3
  for chunk in client.completions.create(stream=True, stop=stops, **kwargs):
    [choice] = chunk.choices
    texts[choice.index] += choice.text
    reasons[choice.index] = reasons[choice.index] or choice.finish_reason
  assert texts == [c.text for c in whole.choices]
  assert reasons == ["stop"] * 3


def test_more_choices_than_max_batch_run_over_several_batches(server, client, reference):
  want = _greedy(reference, PROMPTS[2]).text
  before = server.batches_run
  out = client.completions.create(model=MODEL, prompt=PROMPTS[2], max_tokens=NEW,
                                  temperature=0, n=10)  # max_batch is 8
  assert [c.text for c in out.choices] == [want] * 10
  assert server.batches_run - before == 2


# ----------------------------------------------------------------------------- batching


def test_concurrent_requests_are_batched_and_independent(server, client, reference):
  want = [_greedy(reference, p).text for p in PROMPTS]
  barrier = threading.Barrier(len(PROMPTS))

  def ask(i):
    barrier.wait()
    if i % 2:  # half of them streamed
      return "".join(c.choices[0].text for c in client.completions.create(
          model=MODEL, prompt=PROMPTS[i], max_tokens=NEW, temperature=0, stream=True))
    return client.completions.create(model=MODEL, prompt=PROMPTS[i], max_tokens=NEW,
                                     temperature=0).choices[0].text

  stats = server.scheduler.stats
  steps, rows = stats.steps, stats.rows_decoded
  with concurrent.futures.ThreadPoolExecutor(len(PROMPTS)) as pool:
    got = list(pool.map(ask, range(len(PROMPTS))))
  assert got == want
  assert stats.rows_decoded - rows > stats.steps - steps  # some chunks decoded several rows


# ----------------------------------------------------------------------------- errors

BAD_COMPLETIONS = [
    ({}, 400, "prompt", "prompt"),
    ({"prompt": 3}, 400, "prompt", "prompt"),
    ({"prompt": []}, 400, "prompt", "prompt"),
    ({"prompt": ["a", 1]}, 400, "prompt", "prompt"),
    ({"prompt": [[1, 2], []]}, 400, "prompt", "empty"),
    ({"prompt": [1, 300]}, 400, "prompt", "outside"),
    ({"prompt": "x", "n": 0}, 400, "n", "n must be"),
    ({"prompt": "x", "n": 1000}, 400, "n", "n must be"),
    ({"prompt": "x", "n": "2"}, 400, "n", "integer"),
    ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens", "at least 1"),
    ({"prompt": "x", "max_tokens": CONTEXT}, 400, "max_tokens", "maximum context length"),
    ({"prompt": "x" * CONTEXT}, 400, "prompt", "maximum context length"),
    ({"prompt": "x", "max_tokens": 2.5}, 400, "max_tokens", "integer"),
    ({"prompt": "x", "temperature": -0.5}, 400, "temperature", ">= 0"),
    ({"prompt": "x", "temperature": "hot"}, 400, "temperature", "number"),
    ({"prompt": "x", "top_p": 0}, 400, "top_p", "(0, 1]"),
    ({"prompt": "x", "top_p": 1.5}, 400, "top_p", "(0, 1]"),
    ({"prompt": "x", "stop": ["ok", ""]}, 400, "stop", "non-empty"),
    ({"prompt": "x", "stop": 5}, 400, "stop", "stop"),
    ({"prompt": "x", "stream": "yes"}, 400, "stream", "boolean"),
    ({"prompt": "x", "seed": 1.5}, 400, "seed", "integer"),
    ({"prompt": "x", "echo": "yes"}, 400, "echo", "boolean"),
    ({"prompt": "x", "logprobs": 99}, 400, "logprobs", "between 0 and 20"),
    ({"prompt": "x", "best_of": 3}, 400, "best_of", "not supported"),
    ({"prompt": "x", "frequency_penalty": 0.5}, 400, "frequency_penalty", "not supported"),
    ({"prompt": "x", "max_tokenz": 3}, 400, "max_tokenz", "Unrecognized"),
    ({"prompt": "x", "model": "gpt-4"}, 404, "model", "does not exist"),
]

BAD_CHATS = [
    ({}, 400, "messages", "messages"),
    ({"messages": []}, 400, "messages", "non-empty"),
    ({"messages": "hi"}, 400, "messages", "non-empty list"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role", "role"),
    ({"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content", "string"),
    ({"messages": [{"role": "user", "content": "hi"}], "logprobs": "yes"}, 400, "logprobs",
     "boolean"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [{}]}, 400, "tools",
     "not supported"),
    ({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": CONTEXT}, 400,
     "max_completion_tokens", "maximum context length"),
]


@pytest.mark.parametrize("path,cases", [("/v1/completions", BAD_COMPLETIONS),
                                        ("/v1/chat/completions", BAD_CHATS)])
def test_bad_requests_get_openai_errors(server, path, cases):
  batches = server.batches_run
  for body, status, param, message in cases:
    got_status, got, _ = _raw(server, "POST", path, {"model": MODEL, **body})
    assert got_status == status, (body, got)
    error = got["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, (body, error)
    assert message in error["message"], (body, error)
  assert server.batches_run == batches  # nothing was generated


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_malformed_json_is_400(server, body):
  status, got, _ = _raw(server, "POST", "/v1/completions", body,
                        {"Content-Type": "application/json"})
  assert status == 400
  assert "JSON" in got["error"]["message"]


def test_unknown_route_404_and_wrong_method_405(server):
  status, got, _ = _raw(server, "GET", "/v1/nothing")
  assert status == 404 and "Unknown request URL" in got["error"]["message"]
  status, got, headers = _raw(server, "GET", "/v1/completions")
  assert status == 405 and headers["Allow"] == "POST"
  status, _, _ = _raw(server, "DELETE", "/v1/models")
  assert status == 405


@pytest.mark.parametrize("header,value,status", [("Content-Length", str(10**9), 413),
                                                  ("Content-Length", "-3", 400),
                                                  ("Transfer-Encoding", "chunked", 411)])
def test_bodies_the_server_will_not_read(server, header, value, status):
  connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
  connection.putrequest("POST", "/v1/completions")
  connection.putheader(header, value)
  connection.endheaders()
  response = connection.getresponse()
  assert response.status == status
  assert json.loads(response.read())["error"]["message"]
  assert response.getheader("Connection") == "close"
  connection.close()


def test_errors_through_the_openai_client(client):
  with pytest.raises(openai.BadRequestError, match="temperature"):
    client.completions.create(model=MODEL, prompt="x", temperature=-1)
  with pytest.raises(openai.BadRequestError, match="top_p"):
    client.chat.completions.create(model=MODEL, messages=MESSAGES, top_p=2)
  with pytest.raises(openai.NotFoundError, match="does not exist"):
    client.completions.create(model="gpt-4", prompt="x")


def test_generation_failure_is_500_and_the_server_keeps_running(client, monkeypatch):
  def fail(*args, **kwargs):
    raise RuntimeError("device on fire")

  with monkeypatch.context() as patch:
    patch.setattr(sampling.Generator, "step", fail)
    with pytest.raises(openai.InternalServerError, match="device on fire"):
      client.completions.create(model=MODEL, prompt="x", max_tokens=NEW)
    with pytest.raises(openai.APIError, match="device on fire"):
      list(client.completions.create(model=MODEL, prompt="x", max_tokens=NEW, stream=True))
  out = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=NEW)
  assert out.choices[0].finish_reason in ("stop", "length")


def test_keep_alive_connection_serves_several_requests(server):
  connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
  for body in ({"prompt": "x", "n": 0}, {"prompt": PROMPTS[0], "max_tokens": NEW,
                                         "temperature": 0}, b"{oops"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection.request("POST", "/v1/completions", body=data)
    response = connection.getresponse()
    response.read()
    assert response.status in (200, 400)
    assert response.getheader("Connection") != "close"
  connection.close()


# ----------------------------------------------------------------------------- API key

KEY = "sk-test-" + "0123456789abcdef" * 2


@pytest.fixture(scope="module")
def keyed_server(model_dir):
  model = serve.load_model(model_dir, dtype="float32")
  with serve.Server(model, port=0, model_name=MODEL, max_batch=8, chunk_size=CHUNK,
                    api_key=KEY).start() as s:
    yield s


@pytest.mark.parametrize("api_key", ["unused", KEY[:-1], KEY + "0", KEY.upper()])
def test_a_wrong_or_missing_key_is_401(keyed_server, api_key):
  client = openai.OpenAI(base_url=keyed_server.url + "/v1", api_key=api_key, max_retries=0)
  with pytest.raises(openai.AuthenticationError, match="API key"):
    client.completions.create(model=MODEL, prompt="x", max_tokens=2)
  for path in ("/health", "/metrics", "/v1/models"):
    status, body, headers = _raw(keyed_server, "GET", path)  # no Authorization header
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert headers["WWW-Authenticate"] == "Bearer"
  assert keyed_server.scheduler.stats.rows_submitted == 0


def test_the_right_key_is_served(keyed_server, reference):
  client = openai.OpenAI(base_url=keyed_server.url + "/v1", api_key=KEY, max_retries=0)
  out = client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=NEW,
                                  temperature=0)
  assert out.choices[0].text == _greedy(reference, PROMPTS[0]).text
  status, body, _ = _raw(keyed_server, "GET", "/health", headers={"Authorization":
                                                                   f"bearer {KEY}"})
  assert status == 200 and body["status"] == "ok"


@pytest.mark.parametrize("host,api_key,warns", [
    ("127.0.0.1", None, False), ("127.0.0.2", None, False), ("::1", None, False),
    ("[::1]", None, False), ("localhost", None, False), ("0.0.0.0", None, True),
    ("::", None, True), ("192.168.1.20", None, True), ("example.org", None, True),
    ("0.0.0.0", KEY, False)])
def test_exposure_warning(host, api_key, warns):
  warning = serve.exposure_warning(host, api_key)
  assert (warning is not None) == warns
  if warns:
    assert host in warning and "--api_key_env" in warning


# ----------------------------------------------------------------------------- lifecycle


def test_model_without_tokenizer_is_refused(model_dir, reference, tmp_path):
  bare = str(tmp_path / "bare")
  shutil.copytree(model_dir, bare)
  os.remove(os.path.join(bare, "tokenizer.json"))
  with pytest.raises(ValueError, match="no tokenizer"):
    serve.load_model(bare)
  model = phi_jax.from_pretrained(bare, dtype="float32")
  with pytest.raises(ValueError, match="no tokenizer"):
    serve.Server(model)


def test_close_finishes_in_flight_requests_then_refuses(model_dir):
  model = phi_jax.from_pretrained(model_dir, dtype="float32")
  server = serve.Server(model, port=0, model_name=MODEL, chunk_size=CHUNK).start()
  client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    pending = pool.submit(client.completions.create, model=MODEL, prompt=PROMPTS[0],
                          max_tokens=NEW, temperature=0)
    while server.scheduler.rows_submitted == 0:
      threading.Event().wait(0.01)
    server.close()
    assert pending.result().choices[0].finish_reason == "length"
  with pytest.raises(openai.APIConnectionError):
    client.completions.create(model=MODEL, prompt="x", max_tokens=2)


# ----------------------------------------------------------------------------- CLI


def _run_cli(*args):
  return subprocess.run([sys.executable, "-m", "phi_jax.serve", *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.parametrize("flag, message", [
    ("--port=65536", "--port must be an integer in [0, 65535]"),
    ("--port=-1", "--port must be an integer in [0, 65535]"),
    ("--max_batch=0", "--max_batch must be an integer >= 1"),
    ("--max_queue=0", "--max_queue must be an integer >= 1"),
    ("--batching=dynamic", "flag --batching=dynamic"),
    ("--api_key_env=PHI_JAX_TEST_UNSET_KEY", "the environment variable PHI_JAX_TEST_UNSET_KEY "
     "is not set or empty"),
    ("--checkpoint=MISSING", "--checkpoint MISSING does not exist"),
    ("--dtype=int8", "flag --dtype=int8"),
    ("--warm_up_new_tokens=0", "--warm_up_new_tokens >= 1, got 0 and 0"),
    ("--warm_up_prompt_tokens=-3", "--warm_up_prompt_tokens must be >= 0"),
    ("--warm_up_prompt_tokens=4000", "exceeds the model's context of"),
])
def test_cli_refuses_bad_flags_in_one_line(model_dir, tmp_path, flag, message):
  missing = str(tmp_path / "missing")
  result = _run_cli(f"--checkpoint={model_dir}", flag.replace("MISSING", missing))
  assert result.returncode == 2, result.stderr
  assert message.replace("MISSING", missing) in result.stderr.splitlines()[0]
  assert len(result.stderr.strip().splitlines()) == 2


def test_cli_names_a_taken_port(model_dir):
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    result = _run_cli(f"--checkpoint={model_dir}", f"--port={port}", "--dtype=float32")
  assert result.returncode == 1, result.stderr
  lines = result.stderr.strip().splitlines()
  assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in lines[-2], lines
  assert "PHI_JAX_TRACEBACK=1" in lines[-1]
