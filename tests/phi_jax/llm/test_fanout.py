"""phi_jax.llm.fanout.map_jsonl: one line per request, resumable, retries malformed answers."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from phi_jax.llm import BudgetReached, LLMError, map_jsonl
from tests.fake_openai import FakeOpenAI, Status
from tests.fake_openai import TEST_KEY_ENV as KEY_ENV
from tests.phi_jax.llm.helpers import REPO_ROOT, make_client, numbered_requests, read_lines

pytestmark = pytest.mark.usefixtures("api_key")  # `server`: a FakeOpenAI (tests/fake_openai.py)


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
  assert "test: 10/10 requests" in err and "resumed 0, cache hits 0, errors 0" in err
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


def test_map_jsonl_can_record_exhausted_retries_and_retry_them_on_request(server, tmp_path):
  client = make_client(server, max_retries=1)
  server.responder = lambda r: Status(503, "overloaded") if r.user_text == "n=1" else "fine"
  out = str(tmp_path / "out.jsonl")
  summary = map_jsonl(client, numbered_requests(3), out, record_exhausted=True, progress=False)
  records = {r["id"]: r for r in read_lines(out)}
  assert "gave up after 2 attempt(s)" in records["r1"]["error"]
  assert "HTTP 503: overloaded" in records["r1"]["error"] and records["r2"]["raw"] == "fine"
  assert summary["errors"] == 1 and server.count() == 2 + 2
  map_jsonl(client, numbered_requests(3), out, record_exhausted=True, progress=False)
  assert server.count() == 4  # recorded errors are final ...
  server.responder = lambda r: "fine"
  map_jsonl(client, numbered_requests(3), out, retry_errors=True, progress=False)
  assert server.count() == 5 and all("raw" in r and "error" not in r for r in read_lines(out))
  with pytest.raises(LLMError, match="HTTP 503"):  # ... and without the option, fatal
    server.responder = lambda r: Status(503, "overloaded")
    map_jsonl(client, numbered_requests(4), out, progress=False)


def test_the_budget_is_never_exceeded_by_the_requests_in_flight(tmp_path):
  # $1 per token; the fake counts the characters of the messages' JSON (36-38 here) and
  # of the answer: max_tokens 40, or a quarter of it for two requests in three. Each
  # request's most cost ($76-78) is reserved before it is sent, with 32 in flight.
  def respond(request):
    n = int(request.user_text.split("=")[1])
    limit = request.body["max_tokens"]
    return "x" * (limit if n % 3 == 0 else limit // 4)

  budget_usd = 2500.0
  with FakeOpenAI(respond, delay_s=0.1) as server:
    client = make_client(server, None, max_concurrency=32, max_tokens=40,
                         budget_usd=budget_usd, price_prompt_per_1m=1e6,
                         price_completion_per_1m=1e6)
    requests = [{"id": i, "messages": [{"role": "user", "content": f"n={i}"}]}
                for i in range(300)]
    with pytest.raises(BudgetReached) as stop:
      map_jsonl(client, requests, str(tmp_path / "out.jsonl"), progress=False)
    lines = read_lines(tmp_path / "out.jsonl")
    paid = sum(line["usage"]["total_tokens"] for line in lines)  # the fake's own count
    assert stop.value.spent_usd == pytest.approx(paid) and paid <= budget_usd
    assert server.count() == len(lines) and stop.value.unsent == 300 - len(lines)
    assert server.max_inflight >= 8  # the requests did run concurrently
    # it stopped only when the next request's most cost no longer fitted what was left
    assert budget_usd - paid < 38 + 40


def test_a_budget_refuses_a_request_without_max_tokens_before_sending(server, tmp_path):
  client = make_client(server, None, max_tokens=None, budget_usd=1.0,
                       price_prompt_per_1m=1.0, price_completion_per_1m=1.0)
  with pytest.raises(ValueError, match="budget_usd: a request without max_tokens"):
    map_jsonl(client, numbered_requests(3), str(tmp_path / "out.jsonl"), progress=False)
  assert server.count() == 0
