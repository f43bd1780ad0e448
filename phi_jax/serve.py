"""An OpenAI-compatible HTTP server for a phi_jax model (standard library only).

    python -m phi_jax.serve --checkpoint PATH --host 127.0.0.1 --port 8000 \\
        [--model_name NAME] [--max_batch 32] [--chunk_size 16] [--dtype bfloat16] \\
        [--max_queue 1024] [--batching continuous] [--api_key_env PHI_JAX_API_KEY] \
        [--warm_up_prompt_tokens 512 --warm_up_new_tokens 256] \
        [--compilation_cache_dir ~/.cache/phi_jax/jax]

PATH is an Orbax checkpoint (root or step) or a transformers directory; the model must
come with its tokenizer. Routes:

  GET  /health                 {"status": "ok", ...}
  GET  /metrics                Prometheus text: requests, queue, rows, tokens, latency
  GET  /v1/models              the served model (also GET /v1/models/NAME)
  POST /v1/completions         text or token-id prompts (phi_jax.serving.protocol)
  POST /v1/chat/completions    messages in the chat template (serving.chat_template)

Both POST routes stream with "stream": true as server-sent events over chunked
transfer encoding, delivering text after every decode chunk, ending with
`data: [DONE]`. Errors are OpenAI-style JSON: {"error": {"message", "type", "param",
"code"}} with a 4xx status for bad requests and 500 when generation fails.

Concurrent requests are batched continuously: handler threads queue one work item per
prompt x choice, and one scheduler thread owns the model, whose --max_batch rows take
queued items at every decode chunk and free the moment a row finishes
(serving/scheduler.py). A client that disconnects cancels its rows; a full queue
(--max_queue rows) answers 429 with Retry-After. With --api_key_env, every request
must carry `Authorization: Bearer <key>` (401 otherwise).

Each new shape (batch size, prompt length rounded up to 8 tokens, cached tokens
rounded up to 64) compiles once, on the request that first needs it. With
--warm_up_prompt_tokens the server compiles the common ones before it serves (the port
is bound first, so a taken port fails at once; connections wait until the warm-up
ends), and --compilation_cache_dir keeps every compiled program on disk for the next
start. From Python:

    with Server(model, port=0).start() as server:   # model.tokenizer must be set
      client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
"""

from __future__ import annotations

import hashlib
import hmac
import http.server
import ipaddress
import json
import os
import queue
import secrets
import select
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable

from absl import flags, logging

from phi_jax import cli, compilation_cache, hf_io, pretrained
from phi_jax.model import PhiForCausalLM
from phi_jax.serving import metrics, protocol
from phi_jax.serving.protocol import APIError
from phi_jax.serving.scheduler import BATCHING, QueueFull, Scheduler, WorkItem
from phi_jax.serving.text_stream import TextStream

MAX_BODY_BYTES = 64 * 2**20
IDLE_TIMEOUT_S = 300  # keep-alive connections idle this long are closed
DISCONNECT_POLL_S = 0.1  # how often a waiting handler checks that its client is still there
CLIENT_CLOSED = 499  # the status logged and counted for requests whose client went away


class _HeaderError(APIError):
  """An APIError answered with extra response headers (WWW-Authenticate, Retry-After)."""

  def __init__(self, status: int, message: str, headers: dict[str, str], **kwargs):
    super().__init__(status, message, **kwargs)
    self.headers = headers


def _digest(key: str) -> bytes:
  return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


class _ClientGone(ConnectionError):
  """The client closed its connection while its request was being generated."""


def exposure_warning(host: str, api_key: str | None) -> str | None:
  """A warning when `host` is reachable from other machines and no API key guards it."""
  if api_key:
    return None
  try:
    loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
  except ValueError:  # a host name
    loopback = host == "localhost"
  if loopback:
    return None
  return (f"serving on {host}, which other machines can reach, without an API key: anyone "
          "who can connect can use the model. Set --api_key_env (a variable holding a "
          "secret key that clients send as 'Authorization: Bearer <key>'), or bind 127.0.0.1")


class Server:
  """An OpenAI-compatible server of one model, on a background or the calling thread.

  The scheduler thread is the only user of `model` while the server runs; use a
  separate model object for anything else concurrently.
  """

  def __init__(self, model: PhiForCausalLM, *, host: str = "127.0.0.1", port: int = 0,
               model_name: str = "phi_jax", max_batch: int = 32, chunk_size: int = 16,
               max_queue: int = 1024, batching: str = "continuous",
               api_key: str | None = None):
    """See the module doc; api_key: when set, every request must carry
    `Authorization: Bearer <api_key>`; batching: 'continuous' or 'static' (scheduler.py)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
      raise ValueError(
          "the model has no tokenizer, and the server needs one to encode prompts and "
          "decode completions: serve a checkpoint saved with its tokenizer (an Orbax "
          "checkpoint's tokenizer/tokenizer.json, or tokenizer.json / vocab.json + "
          "merges.txt in a transformers directory), or set model.tokenizer")
    self.info = protocol.ModelInfo(name=model_name, tokenizer=tokenizer,
                                   max_seq_len=model.config.max_seq_len,
                                   vocab_size=model.config.vocab_size)
    self.eos_token_ids = () if tokenizer.eos_id is None else (tokenizer.eos_id,)
    self.scheduler = Scheduler(model, tokenizer, max_batch=max_batch, chunk_size=chunk_size,
                               eos_token_ids=self.eos_token_ids, max_queue=max_queue,
                               batching=batching)
    if api_key is not None and not api_key:
      raise ValueError("api_key is empty: pass None to serve without one")
    self._api_key_digest = _digest(api_key) if api_key else None
    self.requests = metrics.LabelledCounter(
        "phi_jax_requests_total", "HTTP requests answered, by route and status (499: the "
        "client disconnected).", ("route", "status"))
    self.latency = metrics.Histogram(
        "phi_jax_request_duration_seconds", "Time from a request's arrival to the end of "
        "its response, by route.", ("route",))
    self.created = int(time.time())
    self._httpd = _HTTPServer((host, port), _Handler)
    if (warning := exposure_warning(host, api_key)) is not None:
      logging.warning("%s", warning)
    self._httpd.app = self
    self._thread: threading.Thread | None = None
    self._serving = False
    self._closing = False
    self._active = 0
    self._idle = threading.Condition()

  # ----------------------------------------------------------------------------- control
  @property
  def host(self) -> str:
    return self._httpd.server_address[0]

  @property
  def port(self) -> int:
    return self._httpd.server_address[1]

  @property
  def url(self) -> str:
    """The base URL, e.g. http://127.0.0.1:8000 (the OpenAI base_url is url + '/v1')."""
    return f"http://{self.host}:{self.port}"

  @property
  def batches_run(self) -> int:
    """How many generation batches the scheduler has started."""
    return self.scheduler.batches_run

  @property
  def closing(self) -> bool:
    return self._closing

  def warm_up(self, prompt_tokens: int, new_tokens: int) -> list[int]:
    """Compiles, before `start`, the generation steps of every batch size on prompts of
    `prompt_tokens` tokens generating `new_tokens` (`Scheduler.warm_up`); returns the
    batch sizes. ValueError when the two do not fit the model's context."""
    if prompt_tokens < 1 or new_tokens < 1:
      raise ValueError(f"warm-up prompt and new tokens must be >= 1, got {prompt_tokens}, "
                       f"{new_tokens}")
    if prompt_tokens + new_tokens > self.info.max_seq_len:
      raise ValueError(f"warm-up of {prompt_tokens} prompt + {new_tokens} new tokens exceeds "
                       f"the model's context of {self.info.max_seq_len} tokens")
    return self.scheduler.warm_up(prompt_tokens, new_tokens)

  def start(self) -> Server:
    """Serves on a background thread; returns self (usable as a context manager)."""
    if self._thread is None:
      self.scheduler.start()
      self._serving = True
      self._thread = threading.Thread(target=self._httpd.serve_forever,
                                      name="phi_jax-http", daemon=True)
      self._thread.start()
    return self

  def serve_forever(self) -> None:
    """Serves on the calling thread until `close()` is called from another thread."""
    self.scheduler.start()
    self._serving = True
    self._httpd.serve_forever()

  def close(self, timeout: float = 30.0) -> None:
    """Stops accepting requests, finishes the queued ones (up to `timeout` s), stops."""
    if self._closing:
      return
    self._closing = True
    if self._serving:
      self._httpd.shutdown()
    self.scheduler.close(timeout)
    deadline = time.monotonic() + timeout
    with self._idle:
      while self._active and time.monotonic() < deadline:
        self._idle.wait(deadline - time.monotonic())
    self._httpd.server_close()
    self._httpd.close_connections()
    if self._thread is not None:
      self._thread.join(timeout)

  def __enter__(self) -> Server:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _request_started(self) -> None:
    with self._idle:
      self._active += 1

  def _request_ended(self) -> None:
    with self._idle:
      self._active -= 1
      self._idle.notify_all()

  # ----------------------------------------------------------------------------- routes
  def route(self, method: str, path: str) -> Callable[[_Handler, bytes], None]:
    """The handler of (method, path); APIError 404 / 405 when there is none."""
    if path.startswith("/v1/models/"):
      methods = {"GET": _Handler.get_model}
    else:
      methods = _ROUTES.get(path)
    if methods is None:
      raise APIError(404, f"Unknown request URL: {method} {path}", code="unknown_url")
    if method not in methods:
      raise APIError(405, f"Method {method} is not allowed for {path}; allowed: "
                     f"{', '.join(sorted(methods))}", code="method_not_allowed")
    return methods[method]

  def authorized(self, header: str | None) -> bool:
    """Whether an Authorization header carries the API key (always, without one)."""
    if self._api_key_digest is None:
      return True
    scheme, _, token = (header or "").strip().partition(" ")
    # Digests of equal length, compared in constant time: the time to refuse a key
    # reveals neither how much of it was right nor the key's length.
    return scheme.lower() == "bearer" and hmac.compare_digest(_digest(token.strip()),
                                                              self._api_key_digest)

  def render_metrics(self) -> str:
    """Every metric in the Prometheus text format."""
    stats = self.scheduler.stats
    scheduler_counters = [
        ("phi_jax_prompt_tokens_total", "Prompt tokens prefilled (once per row: prompt x n).",
         stats.prompt_tokens),
        ("phi_jax_generation_tokens_total", "Tokens generated, those of cancelled rows "
         "included.", stats.generated_tokens),
        ("phi_jax_rows_submitted_total", "Rows (prompt x choice) queued.", stats.rows_submitted),
        ("phi_jax_rows_finished_total", "Rows that finished with a completion.",
         stats.rows_finished),
        ("phi_jax_rows_cancelled_total", "Rows dropped because their client disconnected.",
         stats.rows_cancelled),
        ("phi_jax_rows_failed_total", "Rows that ended with a generation error.",
         stats.rows_failed),
        ("phi_jax_decode_steps_total", "Decode chunks run.", stats.steps),
        ("phi_jax_decode_rows_total", "Rows decoded, summed over decode chunks (divided by "
         "phi_jax_decode_steps_total: the mean batch occupancy).", stats.rows_decoded),
    ]
    gauges = [
        ("phi_jax_queue_depth", "Rows waiting for a free batch row.", self.scheduler.queued),
        ("phi_jax_active_rows", "Rows decoding now.", self.scheduler.active),
        ("phi_jax_max_batch", "Rows the batch holds (--max_batch).", self.scheduler.max_batch),
        ("phi_jax_max_queue", "Rows the queue holds (--max_queue).", self.scheduler.max_queue),
    ]
    parts = [self.requests.render(), self.latency.render()]
    parts += [metrics.family(name, "counter", text, [("", {}, value)])
              for name, text, value in scheduler_counters]
    parts += [metrics.family(name, "gauge", text, [("", {}, value)])
              for name, text, value in gauges]
    return "".join(parts)

  def row_seed(self, seed: int | None, choice: int) -> int:
    """The sampling seed of one choice: derived from the request seed, else random."""
    if seed is None:
      return secrets.randbits(32)
    digest = hashlib.blake2b(f"{seed}/{choice}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class _HTTPServer(http.server.ThreadingHTTPServer):
  """Threads per connection; remembers open connections so `close` can end idle ones."""
  daemon_threads = True
  request_queue_size = 1024  # the listen backlog: bursts of clients connect at once
  app: Server

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._connections: set[socket.socket] = set()
    self._connections_lock = threading.Lock()

  def process_request(self, request, client_address) -> None:
    with self._connections_lock:
      self._connections.add(request)
    super().process_request(request, client_address)

  def shutdown_request(self, request) -> None:
    with self._connections_lock:
      self._connections.discard(request)
    super().shutdown_request(request)

  def close_connections(self) -> None:
    """Ends every open connection (idle keep-alive ones wake up and finish)."""
    with self._connections_lock:
      connections = list(self._connections)
    for connection in connections:
      try:
        connection.shutdown(socket.SHUT_RDWR)
      except OSError:
        pass

  def handle_error(self, request, client_address) -> None:
    error = sys.exc_info()[1]
    if isinstance(error, (ConnectionError, TimeoutError)):  # the client (or close) hung up
      logging.debug("connection from %s ended: %r", client_address, error)
    else:
      logging.exception("error while handling a request from %s", client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
  """One connection (HTTP/1.1 keep-alive): parses requests and writes responses."""

  protocol_version = "HTTP/1.1"
  server_version = "phi_jax"
  timeout = IDLE_TIMEOUT_S
  server: _HTTPServer

  def do_GET(self):  # pylint: disable=invalid-name
    self._handle("GET")

  def do_POST(self):  # pylint: disable=invalid-name
    self._handle("POST")

  def do_PUT(self):  # pylint: disable=invalid-name
    self._handle("PUT")

  def do_DELETE(self):  # pylint: disable=invalid-name
    self._handle("DELETE")

  def do_PATCH(self):  # pylint: disable=invalid-name
    self._handle("PATCH")

  # ----------------------------------------------------------------------------- plumbing
  def _handle(self, method: str) -> None:
    start = time.perf_counter()
    self._status = 0
    self._headers_sent = False
    self._usage = (0, 0)
    path = urllib.parse.urlsplit(self.path).path.rstrip("/") or "/"
    app_ = self.server.app
    app_._request_started()  # pylint: disable=protected-access
    try:
      if not app_.authorized(self.headers.get("Authorization")):
        self.close_connection = True  # the body stays unread
        raise _HeaderError(401, "Incorrect or missing API key: send the header "
                           "'Authorization: Bearer <key>' with the server's key",
                           {"WWW-Authenticate": "Bearer"}, code="invalid_api_key")
      body = self._read_body()
      if app_.closing:
        self.close_connection = True
        raise APIError(503, "the server is shutting down", type="server_error")
      app_.route(method, path)(self, body)
    except APIError as e:
      self._send_error(e)
    except ConnectionError:
      self.close_connection = True
      self._status = CLIENT_CLOSED
      logging.info("%s %s: the client disconnected", method, path)
    except Exception as e:  # pylint: disable=broad-except
      logging.exception("%s %s failed", method, path)
      self._send_error(APIError(500, f"internal server error: {type(e).__name__}: {e}",
                                type="server_error"))
    finally:
      app_._request_ended()  # pylint: disable=protected-access
      route = path if path in _ROUTES else "/v1/models/{id}" if path.startswith(
          "/v1/models/") else "other"  # bounded label values, whatever URLs arrive
      app_.requests.inc(route, str(self._status))
      app_.latency.observe(time.perf_counter() - start, route)
      logging.info("%s %s %d %.1f ms prompt_tokens=%d completion_tokens=%d", method,
                   self.path, self._status, 1000 * (time.perf_counter() - start),
                   *self._usage)

  def _read_body(self) -> bytes:
    if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
      self.close_connection = True
      raise APIError(411, "chunked request bodies are not supported: send Content-Length")
    length = self.headers.get("Content-Length")
    if length is None:
      return b""
    try:
      n = int(length)
      if n < 0:
        raise ValueError(length)
    except ValueError:
      self.close_connection = True
      raise APIError(400, f"invalid Content-Length {length!r}") from None
    if n > MAX_BODY_BYTES:
      self.close_connection = True
      raise APIError(413, f"the request body is {n} bytes; at most {MAX_BODY_BYTES}")
    return self.rfile.read(n)

  def send_response(self, code: int, message: str | None = None) -> None:
    self._status = code
    super().send_response(code, message)

  def log_message(self, format: str, *args) -> None:  # pylint: disable=redefined-builtin
    logging.debug("%s - %s", self.address_string(), format % args)

  def _send_json(self, status: int, obj: dict, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(obj).encode()
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
      self.send_header(key, value)
    if self.close_connection:
      self.send_header("Connection", "close")
    self.end_headers()
    self._headers_sent = True
    self.wfile.write(data)

  def _send_error(self, error: APIError) -> None:
    try:
      if self._headers_sent:  # mid-stream: an error event, which the openai client raises
        self._send_event(error.body())
        self._end_stream()
        return
      headers = dict(getattr(error, "headers", {}))
      if error.status == 405:
        headers["Allow"] = error.message.rsplit("allowed: ", 1)[-1]
      self._send_json(error.status, error.body(), headers)
    except OSError:  # the client is gone
      self.close_connection = True

  def _json(self, body: bytes):
    try:
      return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise APIError(400, f"We could not parse the JSON body of your request ({e}); the "
                     "body must be a JSON object") from None

  # ----------------------------------------------------------------------------- SSE
  def _start_stream(self) -> None:
    self.send_response(200)
    self.send_header("Content-Type", "text/event-stream")
    self.send_header("Cache-Control", "no-cache")
    self.send_header("Transfer-Encoding", "chunked")
    self.end_headers()
    self._headers_sent = True

  def _send_event(self, obj: dict) -> None:
    self._write_chunk(b"data: " + json.dumps(obj).encode() + b"\n\n")

  def _write_chunk(self, data: bytes) -> None:
    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    self.wfile.flush()

  def _end_stream(self) -> None:
    self._write_chunk(b"data: [DONE]\n\n")
    self.wfile.write(b"0\r\n\r\n")
    self.wfile.flush()

  # ----------------------------------------------------------------------------- endpoints
  def health(self, body: bytes) -> None:
    del body
    app_ = self.server.app
    self._send_json(200, {"status": "ok", "model": app_.info.name,
                          "batching": app_.scheduler.batching,
                          "batches_run": app_.batches_run,
                          "active_rows": app_.scheduler.active,
                          "queued_rows": app_.scheduler.queued})

  def metrics(self, body: bytes) -> None:
    del body
    data = self.server.app.render_metrics().encode()
    self.send_response(200)
    self.send_header("Content-Type", metrics.CONTENT_TYPE)
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    self._headers_sent = True
    self.wfile.write(data)

  def list_models(self, body: bytes) -> None:
    del body
    app_ = self.server.app
    self._send_json(200, {"object": "list",
                          "data": [protocol.model_body(app_.info.name, app_.created)]})

  def get_model(self, body: bytes) -> None:
    del body
    app_ = self.server.app
    name = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path[len("/v1/models/"):])
    if name.rstrip("/") != app_.info.name:
      raise APIError(404, f"The model '{name}' does not exist; this server serves "
                     f"'{app_.info.name}'", param="model", code="model_not_found")
    self._send_json(200, protocol.model_body(app_.info.name, app_.created))

  def completions(self, body: bytes) -> None:
    self._generate(protocol.parse_completion(self._json(body), self.server.app.info))

  def chat_completions(self, body: bytes) -> None:
    self._generate(protocol.parse_chat(self._json(body), self.server.app.info))

  def _generate(self, request: protocol.GenerationRequest) -> None:
    app_ = self.server.app
    events: queue.Queue = queue.Queue()
    items = [WorkItem(prompt=request.prompts[request.prompt_of(i)], params=request.params,
                      max_new_tokens=request.max_tokens[request.prompt_of(i)],
                      stop=request.stop, seed=app_.row_seed(request.seed, i), index=i,
                      events=events, stream=request.stream, logprobs=request.logprobs,
                      score_prompt=request.echo and request.logprobs is not None)
             for i in range(request.num_choices)]
    try:
      app_.scheduler.submit(items)
    except ValueError as e:
      raise APIError(400, str(e), param="n") from None
    except QueueFull as e:
      raise _HeaderError(429, str(e), {"Retry-After": str(e.retry_after_s)},
                         type="server_error", code="queue_full") from None
    except RuntimeError as e:
      raise APIError(503, str(e), type="server_error") from None
    completed = False
    try:
      if request.stream:
        self._stream(request, events)
      else:
        self._respond(request, events)
      completed = True
    finally:
      if not completed:  # the client left, or a row failed: free the rows still running
        app_.scheduler.cancel(items)

  def _client_gone(self) -> bool:
    """Whether the client closed the connection (a read would see end-of-file)."""
    try:
      poller = select.poll()  # not select.select: no limit on the descriptor's number
      poller.register(self.connection, select.POLLIN)
      if not poller.poll(0):
        return False
      return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:  # readable, but nothing to peek after all
      return False
    except OSError:  # reset by the peer
      return True

  def _next_event(self, events: queue.Queue) -> tuple:
    """The next scheduler event; raises _ClientGone when the client disconnects first."""
    while True:
      try:
        return events.get(timeout=DISCONNECT_POLL_S)
      except queue.Empty:
        if self._client_gone():
          raise _ClientGone("the client disconnected") from None

  def _respond(self, request: protocol.GenerationRequest, events: queue.Queue) -> None:
    app_ = self.server.app
    completions: list = [None] * request.num_choices
    errors = []
    for _ in range(request.num_choices):
      kind, index, payload = self._next_event(events)
      if kind == "done":
        completions[index] = payload
      elif kind == "error":
        errors.append(payload)
    if errors:
      raise APIError(500, errors[0], type="server_error")
    body = protocol.completion_body(request, completions, app_.info.tokenizer)
    self._usage = (body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"])
    self._send_json(200, body)

  def _stream(self, request: protocol.GenerationRequest, events: queue.Queue) -> None:
    app_ = self.server.app
    streams = [TextStream(app_.info.tokenizer, request.stop, app_.eos_token_ids)
               for _ in range(request.num_choices)]
    completions: list = [None] * request.num_choices
    self._start_stream()
    if request.chat:
      for i in range(request.num_choices):
        self._send_event(protocol.chunk(request, i, None, role=True))
    remaining = request.num_choices
    while remaining:
      kind, index, payload = self._next_event(events)
      if kind == "tokens":
        text = streams[index].push(payload)
        if text:
          self._send_event(protocol.chunk(request, index, text))
      elif kind == "done":
        remaining -= 1
        completions[index] = payload
        self._send_event(protocol.chunk(request, index, streams[index].finish(payload.text),
                                        payload.finish_reason))
      else:
        raise APIError(500, payload, type="server_error")
    usage = protocol.usage(request, completions)
    self._usage = (usage["prompt_tokens"], usage["completion_tokens"])
    if request.include_usage:
      self._send_event(protocol.usage_chunk(request, completions))
    self._end_stream()


_ROUTES: dict[str, dict[str, Callable[[_Handler, bytes], None]]] = {
    "/health": {"GET": _Handler.health},
    "/metrics": {"GET": _Handler.metrics},
    "/v1/models": {"GET": _Handler.list_models},
    "/v1/completions": {"POST": _Handler.completions},
    "/v1/chat/completions": {"POST": _Handler.chat_completions},
}


# ----------------------------------------------------------------------------- CLI


def load_model(checkpoint: str, dtype: str | None = None) -> PhiForCausalLM:
  """The model to serve, with its tokenizer (ValueError when it has none)."""
  model = pretrained.from_pretrained(checkpoint, **({"dtype": dtype} if dtype else {}))
  if model.tokenizer is None:
    raise ValueError(
        f"{checkpoint} has no tokenizer, and the server needs one: save it with the model "
        "(an Orbax checkpoint's tokenizer/tokenizer.json, or tokenizer.json / vocab.json + "
        "merges.txt in a transformers directory)")
  return model


def _define_flags() -> None:
  flags.DEFINE_string("checkpoint", None, "Orbax checkpoint (root or step) or transformers "
                      "directory to serve; it must include the tokenizer.", required=True)
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on.")
  flags.DEFINE_integer("port", 8000, "Port to listen on (0: any free port).")
  flags.DEFINE_string("model_name", None, "The model id clients pass as `model` "
                      "(default: --checkpoint as given).")
  flags.DEFINE_integer("max_batch", 32, "Most rows (prompts x n) generated in one batch.")
  flags.DEFINE_integer("chunk_size", 16, "Decode steps between stop checks and stream "
                       "updates.")
  flags.DEFINE_enum("dtype", None, ["float32", "bfloat16", "float16"],
                    "Compute dtype (default: the checkpoint's).")
  flags.DEFINE_integer("max_queue", 1024, "Most rows (prompts x n) waiting for a batch row; "
                       "beyond it requests get 429 with Retry-After.")
  flags.DEFINE_enum("batching", "continuous", list(BATCHING),
                    "continuous: queued rows join the running batch at every decode chunk; "
                    "static: a batch runs until its longest row finishes (a baseline).")
  flags.DEFINE_string("api_key_env", None, "Name of an environment variable holding the API "
                      "key; when set, every request must send 'Authorization: Bearer <key>'.")
  flags.DEFINE_integer("warm_up_prompt_tokens", 0, "Before listening, compile the generation "
                       "of every batch size on prompts of this many tokens (0: no warm-up; "
                       "the first requests of each shape then wait for its compilation).")
  flags.DEFINE_integer("warm_up_new_tokens", 256, "With --warm_up_prompt_tokens: the tokens "
                       "each warm-up row generates (decode is compiled up to prompt + this "
                       "many cached tokens).")
  flags.DEFINE_string("compilation_cache_dir", None, "Keep compiled programs in this directory "
                      "and reuse them at the next start (JAX's persistent compilation cache; "
                      "default: off).")


def api_key_from_env(name: str, what: str = "--api_key_env") -> str:
  """The API key held by environment variable `name`; UsageError when unset or empty."""
  api_key = os.environ.get(name, "")
  if not api_key.strip():
    raise cli.UsageError(f"{what}={name}: the environment variable {name} is not set or "
                         f"empty; export the key in it")
  return api_key


def warm_up(server: Server, prompt_tokens: int, new_tokens: int) -> None:
  """`server.warm_up`, with one line saying what it compiled and how long it took."""
  start = time.perf_counter()
  print(f"warming up: batches of {prompt_tokens}-token prompts generating {new_tokens} "
        f"tokens ...", flush=True)
  sizes = server.warm_up(prompt_tokens, new_tokens)
  print(f"warmed up batch sizes {', '.join(map(str, sizes))} in "
        f"{time.perf_counter() - start:.1f} s", flush=True)


def main(argv) -> None:
  f = flags.FLAGS
  if len(argv) > 1:
    raise cli.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not 0 <= f.port <= 65535:
    raise cli.UsageError(f"--port must be an integer in [0, 65535] (0 = any free port), got "
                         f"{f.port}")
  if f.max_batch < 1:
    raise cli.UsageError(f"--max_batch must be an integer >= 1, got {f.max_batch}")
  if f.chunk_size < 1:
    raise cli.UsageError(f"--chunk_size must be an integer >= 1, got {f.chunk_size}")
  if f.max_queue < 1:
    raise cli.UsageError(f"--max_queue must be an integer >= 1, got {f.max_queue}")
  if not f.host.strip():
    raise cli.UsageError("--host must not be empty")
  if f.warm_up_prompt_tokens < 0 or f.warm_up_new_tokens < 1:
    raise cli.UsageError(f"--warm_up_prompt_tokens must be >= 0 and --warm_up_new_tokens "
                         f">= 1, got {f.warm_up_prompt_tokens} and {f.warm_up_new_tokens}")
  api_key = None if f.api_key_env is None else api_key_from_env(f.api_key_env)
  if os.path.exists(f.checkpoint) or not hf_io.looks_like_repo_id(f.checkpoint):
    cli.check_dir(f.checkpoint, "--checkpoint")
  if f.compilation_cache_dir:
    compilation_cache.enable(f.compilation_cache_dir)
  model = load_model(f.checkpoint, f.dtype)
  try:
    server = Server(model, host=f.host, port=f.port, model_name=f.model_name or f.checkpoint,
                    max_batch=f.max_batch, chunk_size=f.chunk_size, max_queue=f.max_queue,
                    batching=f.batching, api_key=api_key)
  except OSError as e:  # the port is taken, the host is not an address of this machine
    raise OSError(e.errno, f"cannot listen on {f.host}:{f.port}: {e.strerror or e}") from e
  if f.warm_up_prompt_tokens:
    try:
      warm_up(server, f.warm_up_prompt_tokens, f.warm_up_new_tokens)
    except ValueError as e:
      raise cli.UsageError(f"--warm_up_prompt_tokens/--warm_up_new_tokens: {e}") from None
  serve_until_signalled(server)


def serve_until_signalled(server: Server) -> None:
  """Starts the server and serves until SIGINT/SIGTERM, then finishes queued requests."""
  stop = threading.Event()
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, lambda signum, frame: stop.set())
  server.start()
  logging.info("serving %r at %s/v1", server.info.name, server.url)
  print(f"serving {server.info.name!r} at {server.url}/v1 (Ctrl-C stops)", flush=True)
  while not stop.wait(0.5):
    pass
  logging.info("shutting down: finishing queued requests")
  server.close()
  logging.info("stopped")


def entry(prog: str = "phi-jax-serve") -> None:
  """The `phi-jax-serve` console script (and `python -m phi_jax.serve`)."""
  _define_flags()
  cli.run(main, prog=prog)


if __name__ == "__main__":
  entry("python -m phi_jax.serve")
