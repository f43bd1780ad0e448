"""An HTTP proxy that injects faults between an OpenAI client and a teacher (tests).

    with FaultProxy(upstream_url, faults=FAULTS, slow_s=1.5) as proxy:
      client = LLMClient(LLMConfig(base_url=proxy.url, ...))
      proxy.count()        # requests that reached the proxy (every attempt)

The fault of a request is chosen by its body: attempt 0 of a body gets
faults[sha256(body) % len(faults)], later attempts pass through, so every request
eventually succeeds with client retries and a rerun sees the same schedule. Faults:

  pass        forward unchanged
  429         HTTP 429 with Retry-After (seconds)
  500         HTTP 500
  drop        close the connection without an answer
  slow        wait `slow_s` (longer than the client's timeout), then forward
  malformed   HTTP 200 whose body is not JSON
  no_code     forward, but replace the answer's text with prose holding no code (final:
              a 200 answer is not retried; it must end as a rejected record)
"""

from __future__ import annotations

import collections
import hashlib
import http.client
import http.server
import json
import socket
import threading
import time
import urllib.parse

from tests.fake_openai import LoopbackServer

FAULTS = ("pass", "429", "500", "drop", "slow", "malformed", "no_code")
NO_CODE_TEXT = "I would rather explain this in words: loop over the items and add them up."


class FaultProxy(LoopbackServer):
  """The proxy; a context manager serving on 127.0.0.1 (a free port)."""

  def __init__(self, upstream: str, faults=FAULTS, slow_s: float = 1.5,
               retry_after_s: float = 0.05):
    parsed = urllib.parse.urlsplit(upstream)
    self.upstream_host, self.upstream_port = parsed.hostname, parsed.port
    self.faults, self.slow_s, self.retry_after_s = tuple(faults), slow_s, retry_after_s
    self.paths: list[str] = []
    self.injected: collections.Counter = collections.Counter()
    self._attempts: collections.Counter = collections.Counter()
    self._lock = threading.Lock()
    self._serve(self._handler())

  def count(self) -> int:
    with self._lock:
      return len(self.paths)

  def fault_for(self, body: bytes) -> str:
    with self._lock:
      attempt = self._attempts[body]
      self._attempts[body] += 1
    if attempt:
      return "pass"
    digest = int.from_bytes(hashlib.sha256(body).digest()[:8], "big")
    return self.faults[digest % len(self.faults)]

  def _forward(self, method: str, path: str, body: bytes, headers) -> tuple[int, bytes, dict]:
    connection = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
    forwarded = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
    connection.request(method, path, body=body, headers=forwarded)
    response = connection.getresponse()
    data = response.read()
    result = response.status, data, {"Content-Type": response.getheader("Content-Type", "")}
    connection.close()
    return result

  def _handler(self):
    proxy = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"

      def log_message(self, *args):
        pass

      def do_POST(self):  # pylint: disable=invalid-name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fault = proxy.fault_for(body)
        with proxy._lock:
          proxy.paths.append(self.path)
          proxy.injected[fault] += 1
        try:
          self._serve(fault, body)
        except (BrokenPipeError, ConnectionResetError):
          pass  # the client timed out first

      def _serve(self, fault: str, body: bytes) -> None:
        if fault == "drop":
          self.connection.shutdown(socket.SHUT_RDWR)
          self.close_connection = True
          return
        if fault in ("429", "500"):
          error = json.dumps({"error": {"message": f"injected {fault}"}}).encode()
          headers = {"Retry-After": str(proxy.retry_after_s)} if fault == "429" else {}
          return self._send(int(fault), error, headers)
        if fault == "malformed":
          return self._send(200, b'{"id": "x", "choices": [{"mess', {})
        if fault == "slow":
          time.sleep(proxy.slow_s)
        status, data, _ = proxy._forward("POST", self.path, body, dict(self.headers))
        if fault == "no_code" and status == 200:
          answer = json.loads(data)
          answer["choices"][0]["message"]["content"] = NO_CODE_TEXT
          answer["choices"][0]["finish_reason"] = "stop"
          data = json.dumps(answer).encode()
        self._send(status, data, {})

      def _send(self, status: int, data: bytes, headers: dict) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
          self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    return Handler
