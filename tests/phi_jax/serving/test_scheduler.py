"""Tests of phi_jax.serving.scheduler through the server and the official `openai` client:
rows join and leave the running batch, disconnects cancel, the queue is bounded.

Orderings are forced with a `Probe` on the scheduler thread, not with timing: it can
hold the thread after a decode chunk until the test has done something (sent a
request, closed a connection), and it records the order in which rows finish.
"""

import concurrent.futures
import http.client
import json
import random
import threading
import time

import openai
import pytest

import phi_jax
from phi_jax import sampling, serve
from tests.conftest import make_servable_phi

MODEL = "tiny-phi"
CHUNK = 4
PROMPTS = ["def f(x):", "hello world", "import os\n", "class A:", "x = [1, 2", "# sum\n"]
WAIT_S = 60  # generous bound on waits that only end early when something is broken


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return make_servable_phi(str(tmp_path_factory.mktemp("scheduler") / "hf"))


@pytest.fixture(scope="module")
def reference(model_dir):
  return phi_jax.from_pretrained(model_dir, dtype="float32")


@pytest.fixture
def start_server(model_dir):
  """start_server(**Server kwargs) -> a running server (closed after the test)."""
  servers = []

  def start(**kwargs):
    model = serve.load_model(model_dir, dtype="float32")
    servers.append(serve.Server(model, port=0, model_name=MODEL, chunk_size=CHUNK,
                                **kwargs).start())
    return servers[-1]

  yield start
  for server in servers:
    server.close(timeout=WAIT_S)


def _client(server):
  return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0,
                       timeout=WAIT_S)


def _alone(reference, prompt, max_tokens):
  """The greedy text of one request decoded by itself."""
  [out] = phi_jax.generate(reference, [prompt], max_new_tokens=max_tokens, chunk_size=CHUNK,
                           batch_size=1)
  return out


class Probe:
  """Watches a server's scheduler thread (every `sampling.Generator.step`).

  finished: the max_tokens of each row as it finishes, in order.
  hold(predicate): after each decode chunk the scheduler thread waits until
    predicate() is true (re-checked whenever a request is submitted or cancelled).
  """

  def __init__(self, monkeypatch, server):
    self.finished: list[int] = []
    self.steps = 0
    self.submits = 0
    self.cancels = 0
    self._predicate = None
    self._cond = threading.Condition()
    scheduler = server.scheduler

    def submit(items, _submit=scheduler.submit):
      _submit(items)
      self._notify("submits")

    def cancel(items, _cancel=scheduler.cancel):
      _cancel(items)
      self._notify("cancels")

    def step(generator, on_chunk=None, on_finish=None, _step=sampling.Generator.step):
      def finished(item, completion):
        self.finished.append(item.max_new_tokens)
        on_finish(item, completion)
      _step(generator, on_chunk=on_chunk, on_finish=finished)
      self._notify("steps")
      with self._cond:
        assert self._cond.wait_for(lambda: self._predicate is None or self._predicate(),
                                   timeout=WAIT_S), "the probe's hold never ended"

    monkeypatch.setattr(scheduler, "submit", submit)
    monkeypatch.setattr(scheduler, "cancel", cancel)
    monkeypatch.setattr(sampling.Generator, "step", step)

  def _notify(self, counter: str) -> None:
    with self._cond:
      setattr(self, counter, getattr(self, counter) + 1)
      self._cond.notify_all()

  def hold(self, predicate) -> None:
    with self._cond:
      self._predicate = predicate
      self._cond.notify_all()

  def wait(self, predicate) -> None:
    """Blocks the test until predicate() (checked after every event)."""
    with self._cond:
      assert self._cond.wait_for(predicate, timeout=WAIT_S), "waited in vain"


# ----------------------------------------------------------------------------- joining


@pytest.mark.parametrize("batching,first", [("continuous", 3), ("static", 40)])
def test_a_short_request_arriving_during_a_long_one_finishes_first(
    start_server, monkeypatch, reference, batching, first):
  """The long request decodes one chunk; then the short one is sent. Continuous batching
  admits it at the next chunk, so it finishes first; static batching makes it wait."""
  want_short, want_long = _alone(reference, PROMPTS[1], 3), _alone(reference, PROMPTS[0], 40)
  assert want_long.finish_reason == "length", "the greedy reference hit <|endoftext|>"
  server = start_server(max_batch=4, batching=batching)
  client = _client(server)
  probe = Probe(monkeypatch, server)
  probe.hold(lambda: probe.submits >= 2)  # after the first chunk: until the short is sent
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    long = pool.submit(client.completions.create, model=MODEL, prompt=PROMPTS[0],
                       max_tokens=40, temperature=0)
    probe.wait(lambda: probe.steps >= 1)
    short = pool.submit(client.completions.create, model=MODEL, prompt=PROMPTS[1],
                        max_tokens=3, temperature=0)
    short_text, long_text = short.result().choices[0].text, long.result().choices[0].text
  assert probe.finished == [first, 43 - first]
  assert (short_text, long_text) == (want_short.text, want_long.text)


# ----------------------------------------------------------------------------- cancelling


def _abandon_stream(server, probe):
  stream = _client(server).completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=200,
                                              temperature=0, stream=True)
  probe.wait(lambda: probe.steps >= 1)  # the row is decoding
  stream.close()


def _abandon_request(server, probe):
  connection = http.client.HTTPConnection(server.host, server.port, timeout=WAIT_S)
  connection.request("POST", "/v1/completions", body=json.dumps(
      {"model": MODEL, "prompt": PROMPTS[0], "max_tokens": 200, "temperature": 0}))
  probe.wait(lambda: probe.steps >= 1)
  connection.close()


@pytest.mark.parametrize("abandon", [_abandon_stream, _abandon_request])
def test_a_client_that_disconnects_frees_its_row(start_server, monkeypatch, reference, abandon):
  """One row only: the 200-token request decodes one chunk, its client goes away, and
  the next request gets the row at once (the abandoned row never decodes again)."""
  want = _alone(reference, PROMPTS[1], 3)
  server = start_server(max_batch=1)
  probe = Probe(monkeypatch, server)
  probe.hold(lambda: probe.cancels >= 1)  # after the first chunk: until the cancel
  stats = server.scheduler.stats
  abandon(server, probe)
  out = _client(server).completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=3,
                                           temperature=0)
  assert out.choices[0].text == want.text
  assert probe.finished == [3]  # the abandoned row never finished
  assert stats.rows_cancelled == 1
  assert stats.generated_tokens == CHUNK + out.usage.completion_tokens
  assert server.scheduler.active == 0 and server.scheduler.queued == 0


def test_32_concurrent_streams_with_cancellations(start_server, reference):
  """Mixed lengths, greedy and seeded sampling with stops, a quarter abandoned midway:
  every finished stream equals the request run alone, every abandoned one a prefix."""
  server = start_server(max_batch=8)
  client = _client(server)
  rng = random.Random(0)
  requests = []
  for i in range(32):
    kwargs = dict(model=MODEL, prompt=PROMPTS[i % len(PROMPTS)], max_tokens=rng.choice(
        [1, 3, 6, 13, 27]), temperature=0)
    if i % 8 == 5:  # sampled, seeded, with a stop string and top_p
      kwargs.update(temperature=0.9, top_p=0.8, seed=i, stop=["e"], max_tokens=20)
    requests.append((kwargs, rng.random() < 0.25))  # (request, abandon it)
  # The same requests decoded alone: greedy ones by generate, sampled ones by the server
  # one at a time (their seeds are derived by the server).
  alone_short = _alone(reference, PROMPTS[0], 3).text
  alone = []
  for kwargs, _ in requests:
    if kwargs["temperature"] == 0:
      alone.append(_alone(reference, kwargs["prompt"], kwargs["max_tokens"]).text)
    else:
      alone.append(client.completions.create(**kwargs).choices[0].text)
  barrier = threading.Barrier(len(requests))

  def run(i):
    kwargs, abandon = requests[i]
    barrier.wait()
    stream = client.completions.create(stream=True, **kwargs)
    text, reason = "", None
    for chunk in stream:
      text += chunk.choices[0].text
      reason = chunk.choices[0].finish_reason or reason
      if abandon and text:
        stream.close()
        return text, None
    return text, reason

  with concurrent.futures.ThreadPoolExecutor(len(requests)) as pool:
    got = list(pool.map(run, range(len(requests))))
  for (kwargs, abandon), want, (text, reason) in zip(requests, alone, got):
    if reason is None:
      assert abandon and want.startswith(text), (kwargs, want, text)
    else:
      assert text == want, (kwargs, want, text)
  # Every row ends: abandoned ones are cancelled (or had finished) once their handlers
  # notice; then a request runs alone again.
  stats = server.scheduler.stats
  assert client.completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=3,
                                   temperature=0).choices[0].text == alone_short
  for _ in range(WAIT_S * 10):
    if server.scheduler.active == 0 and stats.rows_finished + stats.rows_cancelled == (
        stats.rows_submitted):
      break
    time.sleep(0.1)
  assert server.scheduler.active == 0 and server.scheduler.queued == 0
  assert stats.rows_finished + stats.rows_cancelled == stats.rows_submitted
  assert stats.rows_cancelled >= 1


# ----------------------------------------------------------------------------- queue bound


def test_a_full_queue_answers_429_with_retry_after(start_server, monkeypatch, reference):
  want = [_alone(reference, PROMPTS[0], 6).text] + [_alone(reference, p, 3).text
                                                     for p in PROMPTS[1:3]]
  server = start_server(max_batch=1, max_queue=2)
  client = _client(server)
  probe = Probe(monkeypatch, server)
  release = threading.Event()
  probe.hold(release.is_set)
  with concurrent.futures.ThreadPoolExecutor(3) as pool:
    running = pool.submit(client.completions.create, model=MODEL, prompt=PROMPTS[0],
                          max_tokens=6, temperature=0)
    probe.wait(lambda: probe.steps >= 1)  # decoding, held
    queued = [pool.submit(client.completions.create, model=MODEL, prompt=p, max_tokens=3,
                          temperature=0) for p in PROMPTS[1:3]]
    probe.wait(lambda: server.scheduler.queued == 2)
    with pytest.raises(openai.RateLimitError, match="queue is full") as refused:
      client.completions.create(model=MODEL, prompt=PROMPTS[3], max_tokens=3)
    assert int(refused.value.response.headers["Retry-After"]) >= 1
    with pytest.raises(openai.BadRequestError, match="at most 2"):
      client.completions.create(model=MODEL, prompt=PROMPTS[3], max_tokens=3, n=3)
    release.set()
    probe.hold(None)
    assert [r.result().choices[0].text for r in [running, *queued]] == want
  # Room again: served.
  assert client.completions.create(model=MODEL, prompt=PROMPTS[3], max_tokens=3).choices


def test_warm_up_compiles_every_batch_size_before_serving(model_dir, reference):
  """Server.warm_up runs a full batch of every size the load can ask for (powers of
  two, then max_batch), leaves one row, and refuses what does not fit the model or
  comes after start; requests after it generate what they generate alone."""
  model = serve.load_model(model_dir, dtype="float32")
  server = serve.Server(model, port=0, model_name=MODEL, chunk_size=CHUNK, max_batch=3)
  try:
    assert server.scheduler.batch_sizes() == [1, 2, 3]
    with pytest.raises(ValueError, match="exceeds the model's context"):
      server.warm_up(model.config.max_seq_len, 1)
    assert server.warm_up(6, 2 * CHUNK) == [1, 2, 3]
    assert server.scheduler._generator.rows == 1 and server.scheduler._generator.idle
    server.start()
    with pytest.raises(RuntimeError, match="before start"):
      server.warm_up(6, CHUNK)
    got = _client(server).completions.create(model=MODEL, prompt=PROMPTS[0], max_tokens=8,
                                             temperature=0)
    assert got.choices[0].text == _alone(reference, PROMPTS[0], 8).text
  finally:
    server.close(timeout=WAIT_S)
