"""phi_jax.llm.client against a fake OpenAI-compatible server (tests/fake_openai.py)."""

import threading
import time

import pytest

from phi_jax import llm
from phi_jax.llm import LLMClient, LLMConfig, LLMError, map_jsonl
from tests.fake_openai import (CHAT_PATH, COMPLETIONS_PATH, FakeOpenAI, Hang, RawBody, Reply,
                               Status)
from tests.fake_openai import TEST_KEY_ENV as KEY_ENV
from tests.fake_openai import TEST_SECRET as SECRET
from tests.phi_jax.llm.helpers import USER, all_text_under, make_client, numbered_requests

pytestmark = pytest.mark.usefixtures("api_key")  # `server`: a FakeOpenAI (tests/fake_openai.py)


def test_chat_goes_through_the_openai_client_to_chat_completions(server):
  client = make_client(server, max_tokens=32)
  response = client.chat(USER)
  assert response == llm.LLMResponse("echo: Say hi", "stop", response.usage, cached=False)
  assert response.usage["prompt_tokens"] > 0 and response.usage["completion_tokens"] == 12
  (request,) = server.requests
  assert request.path == CHAT_PATH
  assert request.headers["authorization"] == f"Bearer {SECRET}"
  assert "openai/python" in request.headers["user-agent"].lower()  # the official client
  assert request.body == {"model": "fake-model", "messages": USER, "temperature": 0.0,
                          "max_tokens": 32}


def test_complete_goes_to_legacy_completions_with_overrides(server):
  client = make_client(server, stop=("\ndef ",))
  server.script(Reply("    return 1\n", finish_reason="length"))
  response = client.complete("def f():\n", max_tokens=5, temperature=0.7, seed=3,
                             extra_body={"top_k": 4}, model="other-model")
  assert (response.text, response.finish_reason) == ("    return 1\n", "length")
  (request,) = server.requests
  assert request.path == COMPLETIONS_PATH
  assert request.body == {"model": "other-model", "prompt": "def f():\n", "max_tokens": 5,
                          "temperature": 0.7, "seed": 3, "stop": ["\ndef "], "top_k": 4}


def test_unknown_call_option_is_named(server):
  with pytest.raises(ValueError, match="unknown option.*'temprature'"):
    make_client(server).chat(USER, temprature=0.5)


def test_429_and_5xx_are_retried_then_succeed(server):
  client = make_client(server)
  server.script(Status(429), Status(500), Status(503), "finally")
  assert client.chat(USER).text == "finally"
  assert server.count() == 4
  assert client.stats.retries == 3 and client.stats.requests == 4


def test_retries_stop_at_max_retries_with_a_clear_error(server):
  client = make_client(server, max_retries=2)
  server.script(*[Status(429, "slow down")] * 5)
  with pytest.raises(LLMError) as info:
    client.chat(USER)
  assert server.count() == 3
  message = str(info.value)
  assert "gave up after 3 attempt(s)" in message and "max_retries=2" in message
  assert "HTTP 429: slow down" in message and server.url in message
  assert info.value.status == 429 and info.value.retryable
  assert SECRET not in message


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_4xx_fail_at_once(server, status):
  client = make_client(server)
  server.script(Status(status, "the prompt is too long"), "never reached")
  with pytest.raises(LLMError, match=f"HTTP {status}: the prompt is too long") as info:
    client.chat(USER)
  assert server.count() == 1
  assert info.value.status == status and not info.value.retryable


def test_timeouts_and_malformed_bodies_are_retried(server):
  client = make_client(server, timeout_s=0.3)
  server.script(Hang(1.0), RawBody(b"<html>bad gateway</html>"), RawBody(b'{"choices": []}'),
                "ok")
  assert client.chat(USER).text == "ok"
  assert server.count() == 4


def test_connection_errors_are_retried_then_reported(server):
  url = server.url
  server.close()  # nothing listens there any more
  client = LLMClient(LLMConfig(base_url=url, model="m", api_key_env=KEY_ENV, max_retries=2,
                               backoff_initial_s=0.01, timeout_s=2))
  with pytest.raises(LLMError, match="gave up after 3 attempt.*connection error"):
    client.chat(USER)
  assert client.stats.requests == 3


def test_retry_after_header_is_honoured(server):
  client = make_client(server, backoff_max_s=2.0)
  server.script(Status(429, headers={"retry-after": "0.4"}), "ok")
  start = time.monotonic()
  assert client.chat(USER).text == "ok"
  assert time.monotonic() - start >= 0.35


def test_backoff_grows_exponentially_with_jitter_and_a_cap(server):
  client = make_client(server, backoff_initial_s=1.0, backoff_max_s=8.0)
  backoff = client._backoff_s  # pylint: disable=protected-access
  for attempt, (low, high) in enumerate([(0.5, 1), (1, 2), (2, 4), (4, 8), (4, 8)]):
    delays = {backoff(attempt, None) for _ in range(20)}
    assert all(low <= d <= high for d in delays) and len(delays) > 1


def test_concurrency_is_bounded(tmp_path):
  with FakeOpenAI(delay_s=0.1) as server:
    client = make_client(server, max_concurrency=2)
    threads = [threading.Thread(target=client.chat, args=([{"role": "user", "content": str(i)}],))
               for i in range(6)]  # more threads than slots: the client caps them
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    assert server.count() == 6 and server.max_inflight == 2
    server.reset()
    client = make_client(server, max_concurrency=3)
    map_jsonl(client, numbered_requests(9), str(tmp_path / "out.jsonl"), progress=False)
    assert server.count() == 9 and server.max_inflight == 3


def test_missing_key_is_an_error_for_openai_and_a_placeholder_for_local_servers(
    server, monkeypatch):
  monkeypatch.delenv(KEY_ENV)
  with pytest.raises(LLMError, match=f"set the environment variable {KEY_ENV}"):
    LLMClient(LLMConfig(model="m", api_key_env=KEY_ENV))
  make_client(server).chat(USER)
  assert server.requests[0].headers["authorization"] == "Bearer EMPTY"
  monkeypatch.setenv("OPENAI_BASE_URL", server.url)  # base URL from the environment
  LLMClient(LLMConfig(model="m", api_key_env=KEY_ENV)).chat(USER)
  assert server.count() == 2


def test_the_api_key_is_never_written(server, tmp_path):
  client = make_client(server, tmp_path)
  client.chat(USER)
  map_jsonl(client, numbered_requests(5), str(tmp_path / "out" / "map.jsonl"),
            parse=lambda text, request: {"text": text}, progress=False)
  server.script(Status(400))
  with pytest.raises(LLMError) as info:
    client.chat(USER, variant="x")
  assert SECRET not in str(info.value) and SECRET not in repr(client)
  text = all_text_under(tmp_path)
  assert "echo: Say hi" in text and "n=4" in text  # the files are there ...
  assert SECRET not in text and KEY_ENV not in text  # ... and hold no key
