"""phi_jax.llm against a fake OpenAI-compatible server on 127.0.0.1 (tests/fake_openai.py)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from phi_jax import llm
from phi_jax.llm import LLMClient, LLMConfig, LLMError, map_jsonl
from tests.fake_openai import (CHAT_PATH, COMPLETIONS_PATH, FakeOpenAI, Hang, RawBody, Reply,
                               Status)
from tests.fake_openai import TEST_KEY_ENV as KEY_ENV
from tests.fake_openai import TEST_SECRET as SECRET

pytestmark = pytest.mark.usefixtures("api_key")  # `server`: a FakeOpenAI (tests/fake_openai.py)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
USER = [{"role": "user", "content": "Say hi"}]


def make_client(server, tmp_path=None, **fields):
  values = dict(base_url=server.url, model="fake-model", api_key_env=KEY_ENV, max_retries=3,
                timeout_s=5.0, backoff_initial_s=0.01, backoff_max_s=0.05,
                cache_dir=str(tmp_path / "cache") if tmp_path is not None else None)
  values.update(fields)
  return LLMClient(LLMConfig(**values))


def all_text_under(path) -> str:
  chunks = []
  for root, _, files in os.walk(path):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        chunks.append(f.read().decode("utf-8", "replace"))
  return "\n".join(chunks)


def read_lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


# -- the client -------------------------------------------------------------------------


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


# -- the cache --------------------------------------------------------------------------


def test_cache_makes_a_repeated_call_free_across_clients_and_urls(server, tmp_path):
  first = make_client(server, tmp_path)
  assert not first.chat(USER).cached
  again = first.chat(USER)
  assert again.cached and again.text == "echo: Say hi" and server.count() == 1
  assert make_client(server, tmp_path).chat(USER).cached  # a new client, same cache_dir
  with FakeOpenAI() as elsewhere:  # the same model behind another URL: key is URL-free
    assert make_client(elsewhere, tmp_path).chat(USER).cached
    assert elsewhere.count() == 0
  assert server.count() == 1
  # What changes the answer changes the key; refresh skips the lookup.
  first.chat(USER, temperature=0.5)
  first.chat(USER, variant=1)
  first.complete("Say hi")
  make_client(server, tmp_path, model="another").chat(USER)
  assert server.count() == 5
  assert not first.chat(USER, refresh=True).cached
  assert server.count() == 6
  assert first.stats.cache_hits == 1


def test_cache_layout_one_json_file_per_key(server, tmp_path):
  client = make_client(server, tmp_path)
  client.chat(USER)
  files = [os.path.join(root, name) for root, _, names in os.walk(tmp_path / "cache")
           for name in names]
  assert len(files) == 1
  key = llm.request_key("chat", "fake-model", USER, {"temperature": 0.0, "max_tokens": 1024})
  assert files[0] == os.path.join(tmp_path, "cache", key[:2], key + ".json")
  with open(files[0]) as f:
    entry = json.load(f)
  assert entry["response"] == {"text": "echo: Say hi", "finish_reason": "stop",
                               "usage": client.chat(USER).usage}
  assert entry["request"]["inputs"] == USER and entry["model"] == "fake-model"


def test_cache_is_safe_for_concurrent_threads(server, tmp_path):
  client = make_client(server, tmp_path, max_concurrency=8)
  prompts = [[{"role": "user", "content": f"q{i % 10}"}] for i in range(60)]
  threads = [threading.Thread(target=client.chat, args=(p,)) for p in prompts]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  again = [client.chat(p) for p in prompts[:10]]
  assert all(r.cached and r.text == f"echo: q{i}" for i, r in enumerate(again))
  assert not [n for _, _, names in os.walk(tmp_path / "cache") for n in names if ".tmp-" in n]


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


# -- config and keys --------------------------------------------------------------------


def test_config_validation_names_the_field():
  with pytest.raises(ValueError, match="'model'"):
    LLMConfig()
  with pytest.raises(ValueError, match="'base_url'.*http"):
    LLMConfig(model="m", base_url="localhost:8000")
  with pytest.raises(ValueError, match="'max_concurrency'"):
    LLMConfig(model="m", max_concurrency=0)
  with pytest.raises(ValueError, match="'api_key_env'.*never put keys in configs"):
    LLMConfig(model="m", api_key_env=SECRET)
  with pytest.raises(ValueError, match=r"config.grade.llm: unknown field\(s\) \['modle'\]"):
    LLMConfig.from_mapping({"modle": "m"}, where="config.grade.llm")
  with pytest.raises(ValueError, match="config.grade.llm: field 'temperature'"):
    LLMConfig.from_mapping({"model": "m", "temperature": 3.0}, where="config.grade.llm")
  config = LLMConfig.from_mapping({"model": "m", "base_url": "", "cache_dir": "",
                                   "stop": ["\n"]})
  assert config.base_url is None and config.cache_dir is None and config.stop == ("\n",)
  assert SECRET not in repr(config)


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


# -- map_jsonl --------------------------------------------------------------------------


def numbered_requests(n):
  return [{"id": f"r{i}", "prompt": f"n={i}"} for i in range(n)]


def test_map_jsonl_writes_one_line_per_request_with_progress(server, tmp_path, capsys):
  client = make_client(server, tmp_path)
  out = tmp_path / "out.jsonl"
  requests = [{"id": i, "messages": [{"role": "user", "content": f"q{i}"}], "tag": i % 2}
              for i in range(10)]
  summary = map_jsonl(client, requests, str(out), keep=("tag",), desc="test")
  lines = read_lines(out)
  assert sorted(r["id"] for r in lines) == list(range(10))
  assert all(r["raw"] == f"echo: q{r['id']}" and r["tag"] == r["id"] % 2 for r in lines)
  assert summary["done"] == 10 and summary["errors"] == 0 and summary["resumed"] == 0
  err = capsys.readouterr().err
  assert "test: 10/10 (0 resumed)" in err and "cache hits 0, errors 0" in err
  # Everything done: a rerun sends nothing.
  again = map_jsonl(client, requests, str(out), progress=False)
  assert again["resumed"] == 10 and again["done"] == 0 and server.count() == 10


def test_map_jsonl_resumes_after_a_crash_and_a_truncated_line(server, tmp_path):
  client = make_client(server, max_concurrency=2)  # no cache: every call reaches the server
  out = str(tmp_path / "out.jsonl")
  requests = numbered_requests(20)

  def crashing_parse(text, request):
    if request["id"] == "r9":
      raise RuntimeError("simulated crash")
    return text.upper()

  with pytest.raises(RuntimeError, match="simulated crash"):
    map_jsonl(client, requests, out, parse=crashing_parse, progress=False)
  written = read_lines(out)
  assert 0 < len(written) < 20 and "r9" not in {r["id"] for r in written}
  with open(out, "a") as f:  # a kill in the middle of a write
    f.write('{"id": "r19", "result": "ECH')
  calls_before = server.count()
  summary = map_jsonl(client, requests, out, parse=lambda text, request: text.upper(),
                      progress=False)
  lines = read_lines(out)
  assert sorted(r["id"] for r in lines) == sorted(r["id"] for r in requests)
  assert summary["resumed"] == len(written) and summary["done"] == 20 - len(written)
  assert server.count() - calls_before == 20 - len(written)  # only the missing ids
  asked = {r.body["prompt"] for r in server.requests[calls_before:]}
  assert asked == {f"n={i}" for i in range(20)} - {f"n={r['id'][1:]}" for r in written}


_KILLED_RUN = textwrap.dedent("""
    import sys
    from phi_jax.llm import LLMClient, LLMConfig, map_jsonl
    url, out = sys.argv[1], sys.argv[2]
    client = LLMClient(LLMConfig(model="m", base_url=url, api_key_env="{key_env}",
                                 max_concurrency=2))
    map_jsonl(client, [{{"id": i, "prompt": str(i)}} for i in range(40)], out, progress=False)
""")


def test_map_jsonl_resumes_after_the_process_is_killed(tmp_path):
  out = str(tmp_path / "out.jsonl")
  with FakeOpenAI(delay_s=0.05) as server:
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN.format(key_env=KEY_ENV),
                             server.url, out], env=env, cwd=REPO_ROOT)
    try:
      deadline = time.monotonic() + 30
      while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(out) and len(read_lines(out)) >= 6:
          break
        time.sleep(0.02)
      proc.send_signal(signal.SIGKILL)
    finally:
      proc.wait()
    kept = read_lines(out)
    assert 6 <= len(kept) < 40, "the subprocess was not killed mid-run"
    with open(out, "a") as f:
      f.write('{"id": 39, "raw": "half a li')
    calls_before = server.count()
    client = make_client(server, max_concurrency=4)
    summary = map_jsonl(client, [{"id": i, "prompt": str(i)} for i in range(40)], out,
                        progress=False)
    assert sorted(r["id"] for r in read_lines(out)) == list(range(40))
    assert summary["done"] == 40 - len(kept)
    assert server.count() - calls_before == 40 - len(kept)


def test_map_jsonl_retries_malformed_answers_bypassing_the_cache(server, tmp_path):
  client = make_client(server, tmp_path, parse_retries=2)

  def responder(request):
    if request.user_text == "never":
      return "not a number"
    if request.user_text == "flaky" and request.nth == 0:
      return "also not a number"
    return "42"

  server.responder = responder

  def parse(text, request):
    return int(text)  # ValueError on a malformed answer

  requests = [{"id": name, "messages": [{"role": "user", "content": name}]}
              for name in ("good", "flaky", "never")]
  out = tmp_path / "out.jsonl"
  summary = map_jsonl(client, requests, str(out), parse=parse, progress=False)
  records = {r["id"]: r for r in read_lines(out)}
  assert records["good"]["result"] == 42 and records["good"]["attempts"] == 1
  assert records["flaky"]["result"] == 42 and records["flaky"]["attempts"] == 2
  never = records["never"]
  assert "result" not in never and never["raw"] == "not a number" and never["attempts"] == 3
  assert "unusable answer after 3 attempt(s)" in never["error"] and "ValueError" in never["error"]
  assert summary["errors"] == 1 and server.count() == 1 + 2 + 3
  # The retried answer replaced the malformed one in the cache: a fresh run is free
  # except for the always-malformed request, whose retries bypass the cache again.
  map_jsonl(client, requests, str(tmp_path / "again.jsonl"), parse=parse, progress=False)
  assert server.count() == 6 + 2
  # Error records are final unless retry_errors is asked for.
  map_jsonl(client, requests, str(out), parse=parse, progress=False)
  assert server.count() == 8
  server.responder = lambda request: "7"
  summary = map_jsonl(client, requests, str(out), parse=parse, retry_errors=True,
                      progress=False)
  assert summary["resumed"] == 2 and summary["done"] == 1
  assert {r["id"]: r.get("result") for r in read_lines(out)}["never"] == 7


def test_map_jsonl_records_request_errors_and_stops_on_fatal_ones(server, tmp_path):
  client = make_client(server, max_concurrency=1)
  server.responder = lambda r: Status(400, "too long") if r.user_text == "n=1" else "fine"
  out = str(tmp_path / "out.jsonl")
  summary = map_jsonl(client, numbered_requests(3), out, progress=False)
  records = {r["id"]: r for r in read_lines(out)}
  assert "HTTP 400: too long" in records["r1"]["error"] and records["r0"]["raw"] == "fine"
  assert summary["errors"] == 1 and summary["done"] == 2
  server.responder = lambda r: Status(401, "bad key")
  with pytest.raises(LLMError, match="HTTP 401: bad key"):
    map_jsonl(client, numbered_requests(6), out, progress=False)
  assert len(read_lines(out)) == 3


def test_map_jsonl_rejects_bad_requests_and_corrupt_outputs(server, tmp_path):
  client = make_client(server)
  out = str(tmp_path / "out.jsonl")
  with pytest.raises(ValueError, match="duplicate request id 'a'"):
    map_jsonl(client, [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}], out,
              progress=False)
  with pytest.raises(ValueError, match="request #0 has no 'id'"):
    map_jsonl(client, [{"prompt": "x"}], out, progress=False)
  with pytest.raises(ValueError, match="exactly one of 'messages'"):
    map_jsonl(client, [{"id": "b", "text": "x"}], out, progress=False)
  with open(out, "w") as f:
    f.write('{"id": "a", "raw": "x"}\nGARBAGE\n{"id": "c", "raw": "y"}\n')
  with pytest.raises(ValueError, match=r"out.jsonl:2: not a JSON line"):
    map_jsonl(client, [{"id": "z", "prompt": "x"}], out, progress=False)


def test_map_jsonl_refuses_a_second_writer(server, tmp_path):
  import fcntl  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "out.jsonl")
  with open(out + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with pytest.raises(RuntimeError, match="another process is writing .*out.jsonl"):
      map_jsonl(make_client(server), numbered_requests(2), out, progress=False)
  assert server.count() == 0


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
