"""The Files and Batches endpoints of the fake OpenAI server (tests/fake_openai.py).

    with FakeOpenAI(responder) as server:
      server.batches.fail = lambda request: Status(500) if ... else None
      ...  # a client in batch mode uploads, submits, polls and downloads

A batch's requests are answered by the server's own responder, as online requests are
(each is recorded in `server.requests` under its url, with the same `nth` count), so a
deterministic responder answers a request the same in both modes. `fail(request)` may
return a `Status` (that line becomes an error-file line with that HTTP status) or
`EXPIRED` (an error-file line with code batch_expired) for a request inside a batch.
A batch is 'validating' when created, 'in_progress' at its first look, and is processed
and 'completed' at its `polls`-th look (default 2).

`hold(stage)` makes the next request of a stage wait, after `reached[stage]` is set,
until `release(stage)`: stages 'upload' (POST /v1/files), 'uploaded' (POST /v1/files,
after the file was stored), 'submitted' (POST /v1/batches, after the batch was created),
'poll' (GET /v1/batches/<id>) and 'download' (GET /v1/files/<id>/content), so a test can
kill a client at that point.

Files are listed (GET /v1/files, newest first unless order=asc; purpose, limit, after)
and deleted (DELETE /v1/files/<id>) as OpenAI does; `uploads` counts POST /v1/files and
`deleted` names the files deleted.
"""

from __future__ import annotations

import dataclasses
import email.parser
import email.policy
import itertools
import json
import threading
import time
from typing import Any

EXPIRED = "expired"
STAGES = ("upload", "uploaded", "submitted", "poll", "download")


@dataclasses.dataclass
class _Hold:
  reached: threading.Event = dataclasses.field(default_factory=threading.Event)
  go: threading.Event = dataclasses.field(default_factory=threading.Event)


class FakeBatches:
  """The state of the fake's files and batches."""

  def __init__(self, server):
    self.server = server
    self.files: dict[str, dict] = {}
    self.batches: dict[str, dict] = {}
    self.order: list[str] = []  # batch ids, oldest first
    self.fail = lambda request: None
    self.polls = 2
    self.created = 0  # batches created
    self.uploads = 0  # files uploaded (POST /v1/files)
    self.deleted: list[str] = []  # ids of the files deleted
    self.lines_submitted: list[str] = []  # custom_ids of every batch created, in order
    self._holds: dict[str, _Hold] = {}
    self._ids = itertools.count(1)
    self._lock = threading.Lock()

  # -- test controls --------------------------------------------------------------------

  def hold(self, stage: str) -> threading.Event:
    assert stage in STAGES, stage
    self._holds[stage] = _Hold()
    return self._holds[stage].reached

  def release(self, stage: str) -> None:
    hold = self._holds.pop(stage, None)
    if hold is not None:
      hold.go.set()

  def _wait(self, stage: str) -> None:
    hold = self._holds.get(stage)
    if hold is not None:
      hold.reached.set()
      hold.go.wait(120)

  # -- routes ---------------------------------------------------------------------------

  @staticmethod
  def handles(path: str) -> bool:
    return path.startswith(("/v1/files", "/v1/batches"))

  def post(self, path: str, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    if path == "/v1/files":
      self._wait("upload")
      fields = _multipart(raw, headers.get("content-type", ""))
      data, filename = fields["file"]
      file_id = self._add_file(filename, data, fields["purpose"][0].decode())
      with self._lock:
        self.uploads += 1
      self._wait("uploaded")
      return 200, self.files[file_id]["object"]
    if path == "/v1/batches":
      body = json.loads(raw)
      with self._lock:
        batch_id = f"batch_{next(self._ids)}"
        batch = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"],
                 "input_file_id": body["input_file_id"],
                 "completion_window": body["completion_window"], "status": "validating",
                 "created_at": int(time.time()), "metadata": body.get("metadata"),
                 "output_file_id": None, "error_file_id": None,
                 "request_counts": {"total": 0, "completed": 0, "failed": 0}, "looks": 0}
        self.batches[batch_id] = batch
        self.order.append(batch_id)
        self.created += 1
        for line in self.files[body["input_file_id"]]["data"].decode().splitlines():
          self.lines_submitted.append(json.loads(line)["custom_id"])
      self._wait("submitted")
      return 200, _public(batch)
    return 404, {"error": {"message": f"no route POST {path}", "type": "not_found"}}

  def get(self, path: str) -> tuple[int, Any]:
    route, _, query = path.partition("?")
    parts = route.strip("/").split("/")
    if parts[:2] == ["v1", "files"] and len(parts) == 4 and parts[3] == "content":
      self._wait("download")
      return 200, self.files[parts[2]]["data"]
    if parts == ["v1", "files"]:
      params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
      with self._lock:
        listed = [f["object"] for f in self.files.values()
                  if params.get("purpose") in (None, f["object"]["purpose"])]
      if params.get("order", "desc") == "desc":
        listed.reverse()  # ids are made in upload order
      if "after" in params:
        listed = listed[[f["id"] for f in listed].index(params["after"]) + 1:]
      limit = int(params.get("limit", 10_000))
      return 200, {"object": "list", "data": listed[:limit], "has_more": len(listed) > limit,
                   "first_id": listed[0]["id"] if listed else None,
                   "last_id": listed[:limit][-1]["id"] if listed else None}
    if parts[:2] == ["v1", "batches"] and len(parts) == 3:
      self._wait("poll")
      return 200, _public(self._look(parts[2]))
    if parts == ["v1", "batches"]:
      params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
      newest = list(reversed(self.order))
      if "after" in params:
        newest = newest[newest.index(params["after"]) + 1:]
      limit = int(params.get("limit", 20))
      page = [_public(self.batches[b]) for b in newest[:limit]]
      return 200, {"object": "list", "data": page, "has_more": len(newest) > limit,
                   "first_id": page[0]["id"] if page else None,
                   "last_id": page[-1]["id"] if page else None}
    return 404, {"error": {"message": f"no route GET {path}", "type": "not_found"}}

  def delete(self, path: str) -> tuple[int, Any]:
    parts = path.partition("?")[0].strip("/").split("/")
    if parts[:2] == ["v1", "files"] and len(parts) == 3:
      with self._lock:
        if self.files.pop(parts[2], None) is None:
          return 404, {"error": {"message": f"no file {parts[2]}", "type": "not_found"}}
        self.deleted.append(parts[2])
      return 200, {"id": parts[2], "object": "file", "deleted": True}
    return 404, {"error": {"message": f"no route DELETE {path}", "type": "not_found"}}

  # -- processing -----------------------------------------------------------------------

  def _add_file(self, filename: str, data: bytes, purpose: str) -> str:
    with self._lock:
      file_id = f"file-{next(self._ids)}"
      self.files[file_id] = {"data": data, "object": {
          "id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
          "filename": filename, "purpose": purpose, "status": "processed"}}
    return file_id

  def _look(self, batch_id: str) -> dict:
    with self._lock:
      batch = self.batches[batch_id]
      if batch["status"] in ("completed", "failed", "expired", "cancelled"):
        return batch
      batch["looks"] += 1
      if batch["looks"] < self.polls:
        batch["status"] = "in_progress"
        return batch
    self._process(batch)
    return batch

  def _process(self, batch: dict) -> None:
    from tests.fake_openai import Reply, Status, _completion_body  # pylint: disable=g-import-not-at-top
    outputs, errors = [], []
    for number, text in enumerate(self.files[batch["input_file_id"]]["data"].decode()
                                  .splitlines()):
      line = json.loads(text)
      request = self.server._record(line["url"], line["body"], {})
      try:
        failure = self.fail(request)
        entry = {"id": f"batch_req_{batch['id']}_{number}", "custom_id": line["custom_id"]}
        if failure == EXPIRED:
          errors.append({**entry, "response": None, "error": {
              "code": "batch_expired", "message": "This request could not be executed "
              "before the completion window expired."}})
          continue
        if isinstance(failure, Status):
          errors.append({**entry, "error": None, "response": {
              "status_code": failure.code, "request_id": entry["id"],
              "body": {"error": {"message": failure.message, "type": "scripted"}}}})
          continue
        answer = self.server._answer_for(request)
        if isinstance(answer, str):
          answer = Reply(answer)
        outputs.append({**entry, "error": None, "response": {
            "status_code": 200, "request_id": entry["id"],
            "body": _completion_body(request, answer)}})
      finally:
        self.server._done()
    with self._lock:
      if outputs:
        batch["output_file_id"] = self._add_file_locked(outputs)
      if errors:
        batch["error_file_id"] = self._add_file_locked(errors)
      batch["request_counts"] = {"total": len(outputs) + len(errors),
                                 "completed": len(outputs), "failed": len(errors)}
      batch["status"] = "completed"

  def _add_file_locked(self, lines: list[dict]) -> str:
    file_id = f"file-{next(self._ids)}"
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    self.files[file_id] = {"data": data, "object": {
        "id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
        "filename": "batch_output.jsonl", "purpose": "batch_output", "status": "processed"}}
    return file_id


def _public(batch: dict) -> dict:
  return {k: v for k, v in batch.items() if k != "looks"}


def _multipart(raw: bytes, content_type: str) -> dict[str, tuple[bytes, str | None]]:
  """{field name: (data, filename)} of a multipart/form-data body."""
  message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
      f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
  fields = {}
  for part in message.iter_parts():
    name = part.get_param("name", header="content-disposition")
    fields[name] = (part.get_payload(decode=True), part.get_filename())
  return fields
