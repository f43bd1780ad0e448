"""A scriptable fake OpenAI-compatible server for tests (stdlib http.server, loopback).

    with FakeOpenAI() as server:
      client = LLMClient(LLMConfig(base_url=server.url, model="m", ...))
      server.script(Status(429), Status(500), "hello")   # the next three answers, in order
      server.responder = lambda req: f"echo {req.user_text}"   # everything after that
      server.count("/v1/chat/completions")                # requests seen on that path

It serves POST /v1/chat/completions and /v1/completions with the response shapes the
official `openai` client parses, and the Files and Batches endpoints of the Batch API
(`server.batches`, tests/fake_batches.py), answered by the same responder. An answer is one of:

  - a str: a 200 response whose text is that string (finish_reason 'stop');
  - `Reply(text, finish_reason)`;
  - `Status(code, message, headers)`: an OpenAI-style error body with that HTTP status;
  - `Hang(seconds)`: sleep before answering (longer than the client timeout = a timeout);
  - `RawBody(data, status)`: arbitrary bytes (malformed HTTP payloads).

Scripted answers (`script`) are consumed first, in arrival order; then `responder(req)`
decides, called with a `FakeRequest` (path, parsed body, headers, and `nth`: how many
identical bodies arrived before, so a responder can fail the first try of a prompt and
answer the second). Every request is recorded in `requests` (thread-safe), and
`max_inflight` is the most requests the server was handling at one time.
"""

from __future__ import annotations

import collections
import dataclasses
import http.server
import json
import threading
import time

import pytest
from collections.abc import Callable
from typing import Any

from tests.fake_batches import FakeBatches

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"


@dataclasses.dataclass
class Reply:
  text: str
  finish_reason: str = "stop"
  headers: dict[str, str] = dataclasses.field(default_factory=dict)
  usage: dict[str, int] | None = None  # default: characters of the request and the text


@dataclasses.dataclass
class Status:
  code: int
  message: str = "scripted error"
  headers: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Hang:
  seconds: float
  then: Any = "late answer"


@dataclasses.dataclass
class RawBody:
  data: bytes
  status: int = 200


@dataclasses.dataclass
class FakeRequest:
  path: str
  body: dict
  headers: dict[str, str]  # names lower-cased
  nth: int  # identical bodies (same path) received before this one

  @property
  def user_text(self) -> str:
    """The last user message (chat) or the prompt (completions)."""
    if "messages" in self.body:
      users = [m["content"] for m in self.body["messages"] if m.get("role") == "user"]
      return users[-1] if users else ""
    return str(self.body.get("prompt", ""))


def default_responder(request: FakeRequest) -> str:
  return f"echo: {request.user_text}"


class LoopbackServer:
  """An HTTP server thread on 127.0.0.1 (a free port): a context manager that starts it
  and stops it. Subclasses call `_serve(handler_class)` in their __init__."""

  def _serve(self, handler_class) -> None:
    self._closed = False
    self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    self._server.daemon_threads = True
    self._server.block_on_close = False
    self._thread = threading.Thread(target=self._server.serve_forever,
                                    kwargs={"poll_interval": 0.02}, daemon=True)

  @property
  def url(self) -> str:
    """The base URL to give a client (ends with /v1)."""
    host, port = self._server.server_address[:2]
    return f"http://{host}:{port}/v1"

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def close(self) -> None:
    if self._closed:
      return
    self._closed = True
    if self._thread.is_alive():
      self._server.shutdown()
    self._server.server_close()


class FakeOpenAI(LoopbackServer):
  """The server; a context manager that starts it on 127.0.0.1 (a free port) and stops it."""

  def __init__(self, responder: Callable[[FakeRequest], Any] = default_responder,
               delay_s: float = 0.0):
    self.responder = responder
    self.delay_s = delay_s  # every answer waits this long (to observe concurrency)
    self.requests: list[FakeRequest] = []
    self.max_inflight = 0
    self._inflight = 0
    self._script: collections.deque = collections.deque()
    self._seen: collections.Counter = collections.Counter()
    self._lock = threading.Lock()
    self.batches = FakeBatches(self)  # the Files and Batches endpoints (fake_batches.py)
    self._serve(self._handler_class())

  def script(self, *answers) -> None:
    """Queues answers for the next requests, in arrival order."""
    with self._lock:
      self._script.extend(answers)

  def count(self, path: str | None = None) -> int:
    """Requests received (on `path`, when given)."""
    with self._lock:
      return sum(1 for r in self.requests if path is None or r.path == path)

  def reset(self) -> None:
    with self._lock:
      self.requests.clear()
      self._script.clear()
      self._seen.clear()
      self.max_inflight = 0

  # -- request handling ---------------------------------------------------------------

  def _answer_for(self, request: FakeRequest):
    with self._lock:
      if self._script:
        return self._script.popleft()
    return self.responder(request)

  def _record(self, path: str, body: dict, headers: dict[str, str]) -> FakeRequest:
    key = path + json.dumps(body, sort_keys=True)
    with self._lock:
      request = FakeRequest(path, body, headers, self._seen[key])
      self._seen[key] += 1
      self.requests.append(request)
      self._inflight += 1
      self.max_inflight = max(self.max_inflight, self._inflight)
    return request

  def _done(self) -> None:
    with self._lock:
      self._inflight -= 1

  def _handler_class(self):
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"
      disable_nagle_algorithm = True  # headers and body leave at once (no 40 ms stall)

      def log_message(self, *args):  # quiet
        pass

      def do_POST(self):  # pylint: disable=invalid-name
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
          body = json.loads(raw or b"{}")
        except ValueError:
          body = {"_unparsed": raw.decode("utf-8", "replace")}
        headers = {name.lower(): value for name, value in self.headers.items()}
        if FakeBatches.handles(self.path):
          self._send_batch_api(*server.batches.post(self.path, raw, headers))
          return
        request = server._record(self.path, body, headers)
        try:
          if self.path not in (CHAT_PATH, COMPLETIONS_PATH):
            self._send_json(404, {"error": {"message": f"no route {self.path}",
                                            "type": "not_found"}})
            return
          if server.delay_s:
            time.sleep(server.delay_s)
          self._send_answer(request, server._answer_for(request))
        except (BrokenPipeError, ConnectionResetError):
          pass  # the client gave up (timeout)
        finally:
          server._done()

      def do_GET(self):  # pylint: disable=invalid-name
        self._send_batch_api(*server.batches.get(self.path))

      def do_DELETE(self):  # pylint: disable=invalid-name
        self._send_batch_api(*server.batches.delete(self.path))

      def _send_batch_api(self, status: int, answer) -> None:
        try:
          if isinstance(answer, bytes):
            self._send_bytes(status, answer, "application/octet-stream")
          else:
            self._send_json(status, answer)
        except (BrokenPipeError, ConnectionResetError):
          pass

      def _send_answer(self, request: FakeRequest, answer) -> None:
        if isinstance(answer, Hang):
          time.sleep(answer.seconds)
          answer = answer.then
        if isinstance(answer, str):
          answer = Reply(answer)
        if isinstance(answer, Status):
          self._send_json(answer.code, {"error": {"message": answer.message, "type": "scripted",
                                                  "code": answer.code}}, answer.headers)
        elif isinstance(answer, RawBody):
          self._send_bytes(answer.status, answer.data, "application/json")
        elif isinstance(answer, Reply):
          self._send_json(200, _completion_body(request, answer), answer.headers)
        else:
          raise TypeError(f"fake server: unknown answer {answer!r}")

      def _send_json(self, status: int, obj: dict, headers: dict | None = None) -> None:
        self._send_bytes(status, json.dumps(obj).encode(), "application/json", headers)

      def _send_bytes(self, status: int, data: bytes, content_type: str,
                      headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
          self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    return Handler


def _completion_body(request: FakeRequest, reply: Reply) -> dict:
  model = request.body.get("model", "fake-model")
  prompt_tokens = len(json.dumps(request.body.get("messages", request.body.get("prompt", ""))))
  usage = reply.usage or {"prompt_tokens": prompt_tokens, "completion_tokens": len(reply.text),
                          "total_tokens": prompt_tokens + len(reply.text)}
  if request.path == CHAT_PATH:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": reply.finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": reply.text}}],
            "usage": usage}
  return {"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": model,
          "choices": [{"index": 0, "text": reply.text, "finish_reason": reply.finish_reason,
                       "logprobs": None}],
          "usage": usage}


# Fixtures (tests/conftest.py loads this module as a pytest plugin).
TEST_KEY_ENV = "PHI_JAX_TEST_LLM_KEY"
TEST_SECRET = "sk-test-SECRET-5f0c1e9a7b"


@pytest.fixture
def server():
  """A running FakeOpenAI on 127.0.0.1."""
  with FakeOpenAI() as fake:
    yield fake


@pytest.fixture
def api_key(monkeypatch):
  """The test key in TEST_KEY_ENV; no OPENAI_BASE_URL from the environment."""
  monkeypatch.setenv(TEST_KEY_ENV, TEST_SECRET)
  monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
