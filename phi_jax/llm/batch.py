"""map_jsonl through OpenAI's Batch API (LLMConfig.mode = 'batch').

The requests map_jsonl would send one by one are written as Batch API input lines

    {"custom_id": "<json of the request id>", "method": "POST",
     "url": "/v1/chat/completions", "body": {"model", "messages", <sampling params>}}

uploaded (POST /v1/files, purpose 'batch'), submitted (POST /v1/batches, with
metadata {"phi_jax_batch": <our id of the batch>}), polled (GET /v1/batches/<id>) every
`batch_poll_s`, and their output and error files downloaded (GET
/v1/files/<id>/content). Each output line {"custom_id", "response": {"status_code",
"body"}, "error"} becomes the same line of the map_jsonl output an online answer
would have become (and enters the response cache), so the records made from it do not
depend on the mode.

Resumable anywhere. Before a batch is uploaded, the journal `<out>.batches.jsonl`
records its id and its requests (`planned`), then its file (`uploaded`), its batch id
(`submitted`) and, once every answer of it is in the output, its failures
(`finished`); each line is flushed and fsynced before the next step. A restart reads
the journal: a batch planned but not known as submitted is first looked for in the
provider's list of batches (by its metadata), and adopted when found, so a kill between
submitting and recording never submits the same requests twice; an input file
uploaded but not known as uploaded is looked for in the provider's list of files (by
its name, `phi_jax-<our id>.jsonl`) and reused, and any second upload of it (an orphan)
deleted, so nothing is uploaded twice either (`Batcher._reconcile`); a submitted batch
is polled again, never resubmitted; a batch whose answers were being written is
downloaded again (answers already in the output are skipped, so none is paid twice).

Failed requests: an answer with HTTP 400/413/422 is that request's error line (as
online); 429, 5xx, an expired or cancelled batch's unanswered requests and malformed
bodies are asked again, in a new batch or online (`batch_retry`), up to `max_retries`
times, then recorded as errors (map_jsonl's record_exhausted) or raised; an answer its
parser rejects is asked again `parse_retries` times. A batch the provider refuses as a
whole (status 'failed': a bad model, a malformed file) raises LLMError naming its errors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import openai

from phi_jax import atomic, jsonl
from phi_jax.llm import budget
from phi_jax.llm.client import LLMClient, LLMError, MalformedResponse
from phi_jax.llm.client import completion_response

ENDPOINTS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
TERMINAL = ("completed", "failed", "expired", "cancelled")
METADATA_KEY = "phi_jax_batch"
COMPLETION_WINDOW = "24h"  # the only window the Batch API offers
# Batches created more than this long before a batch was planned cannot be it: the
# reconciling walk through the provider's list (newest first) stops there.
RECONCILE_SLACK_S = 3600


@dataclasses.dataclass
class Item:
  """One request of the fan-out, prepared for the Batch API."""
  request: Mapping[str, Any]
  record: dict  # {"id", <keep fields>}
  endpoint: str  # 'chat' or 'completions'
  inputs: Any
  key: str
  model: str
  params: dict
  variant: Any

  @property
  def cid(self) -> str:
    return json.dumps(self.record["id"])

  def line(self) -> dict:
    field = "messages" if self.endpoint == "chat" else "prompt"
    return {"custom_id": self.cid, "method": "POST", "url": ENDPOINTS[self.endpoint],
            "body": {"model": self.model, field: self.inputs, **self.params}}


class Journal:
  """The batches of one output: planned, uploaded, submitted, finished (module doc)."""

  def __init__(self, path: str):
    self.path = path
    self.batches: dict[str, dict] = {}
    self.failures: dict[str, list[dict]] = {}  # custom_id -> failed attempts, in order
    if os.path.exists(path):
      for _, event in jsonl.iter_appended(path, repair=True, bad_line="not a journal line"):
        self._apply(event)

  def _apply(self, event: Mapping[str, Any]) -> None:
    name = event["batch"]
    if event["event"] == "planned":
      self.batches[name] = {"name": name, "ids": list(event["ids"]),
                            "endpoint": event["endpoint"], "planned_at": event["at"],
                            "file_id": None, "batch_id": None, "finished": False}
    elif event["event"] == "uploaded":
      self.batches[name]["file_id"] = event["file_id"]
    elif event["event"] == "submitted":
      self.batches[name]["batch_id"] = event["batch_id"]
    elif event["event"] == "finished":
      self.batches[name]["finished"] = True
      for cid, failure in event["failed"].items():
        self.failures.setdefault(cid, []).append(failure)

  def append(self, event: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(event, ensure_ascii=False) + "\n")
      f.flush()
      os.fsync(f.fileno())
    self._apply(event)

  def open_batches(self) -> list[dict]:
    return [b for b in self.batches.values() if not b["finished"]]

  def spent(self) -> dict:
    """What the failed attempts were paid (answers a parser rejected)."""
    return budget.merge({"batch": f["usage"]} for fs in self.failures.values() for f in fs
                        if f.get("usage"))

  def attempts(self, cid: str, kind: str) -> int:
    return sum(1 for f in self.failures.get(cid, ()) if f["kind"] == kind)


def journal_path(out_path: str) -> str:
  return out_path + ".batches.jsonl"


def _filename(name: str) -> str:
  """The name a batch's input file is uploaded under (how a restart finds it)."""
  return f"phi_jax-{name}.jsonl"


def _files_dir(out_path: str) -> str:
  return out_path + ".batches"


class Batcher:
  """Sends `items` through the Batch API; writes each one's output line with `write`.

  Args:
    client: the LLMClient (its `openai` client, cache, clock and config).
    out_path: the map_jsonl output (the journal and the batch files sit beside it).
    write: records one output line (map_jsonl's writer; it also feeds the budget).
    parse, parse_retries, record_exhausted: as map_jsonl's.
    online: (request, answers rejected so far) -> its output line, asked online (the
      `batch_retry = 'online'` path).
    allowance: (items, reserved USD) -> how many of them the budget lets be sent now,
      beside the batches in flight (their most cost `reserved`), and their most cost.
    most_cost: items -> their most cost (reserved for the batches a restart finds in
      flight).
    online_fits: (item, its answers rejected so far, reserved USD) -> whether the budget
      lets it be asked online (the `batch_retry = 'online'` path) at its most cost.
    paid: counts what a failed attempt was paid (a `spent` dict) towards the budget.
  """

  def __init__(self, client: LLMClient, out_path: str, write: Callable[[dict], None], *,
               parse: Callable[[str, Mapping[str, Any]], Any] | None, parse_retries: int,
               record_exhausted: bool, online: Callable[[Mapping[str, Any], int], dict],
               allowance: Callable[[Sequence[Item], float], tuple[int, float]],
               most_cost: Callable[[Sequence[Item]], float],
               online_fits: Callable[[Item, int, float], bool],
               paid: Callable[[dict], None]):
    self.client, self.config = client, client.config
    self.out_path, self.write = out_path, write
    self.parse, self.parse_retries, self.record_exhausted = parse, parse_retries, record_exhausted
    self.online, self.allowance, self.most_cost = online, allowance, most_cost
    self.online_fits, self.paid = online_fits, paid
    self.journal = Journal(journal_path(out_path))
    self.api = client.openai
    self.reserved: dict[str, float] = {}  # the most cost of the batches in flight

  # -- the loop -------------------------------------------------------------------------

  def run(self, items: Sequence[Item]) -> list[Item]:
    """Sends every item (resuming the journal's open batches); returns the items the
    budget left unsent."""
    by_cid = {item.cid: item for item in items}
    open_batches = {b["name"]: b for b in self.journal.open_batches()}
    self._reconcile([b for b in open_batches.values() if b["batch_id"] is None])
    for name, batch in open_batches.items():  # in flight before a restart
      self.reserved[name] = self.most_cost([by_cid[c] for c in batch["ids"] if c in by_cid])
    claimed = {cid for b in open_batches.values() for cid in b["ids"]}
    todo = [item for item in items if item.cid not in claimed]
    unsent: list[Item] = []  # online retries the budget did not let be sent
    while True:
      retry_online: list[Item] = []
      while todo:
        chunk = todo[:self.config.batch_max_requests]
        allowed, cost = self.allowance(chunk, sum(self.reserved.values()))
        if allowed <= 0:
          break
        batch = self._plan(chunk[:allowed])
        self.reserved[batch["name"]] = cost
        todo = todo[allowed:]
        open_batches[batch["name"]] = batch
      for batch in open_batches.values():
        if batch["batch_id"] is None:
          self._submit(batch)
      for name, batch in list(open_batches.items()):
        status = self.api.batches.retrieve(batch["batch_id"])
        if status.status not in TERMINAL:
          continue
        retries = self._finish(batch, status, by_cid)
        del open_batches[name]
        self.reserved.pop(name, None)
        for item in retries:
          (retry_online if self.config.batch_retry == "online" else todo).append(item)
      for item in retry_online:
        used = self.journal.attempts(item.cid, "parse")
        if self.online_fits(item, used, sum(self.reserved.values())):
          self.write(self.online(item.request, used))
        else:
          unsent.append(item)
      if not open_batches:
        if not todo:
          return unsent
        if self.allowance(todo[:1], 0.0)[0] <= 0:
          return todo + unsent
        continue
      self.client.clock.sleep(self.config.batch_poll_s)

  # -- planning and submitting ----------------------------------------------------------

  def _plan(self, chunk: Sequence[Item]) -> dict:
    """Writes the input file and journals the batch (before anything is uploaded)."""
    endpoints = {item.endpoint for item in chunk}
    if len(endpoints) != 1:
      raise ValueError("map_jsonl (batch mode): one batch holds one endpoint's requests; "
                       "build() gave both chat and completions calls")
    name = uuid.uuid4().hex
    atomic.write_text(self._input_path(name), "".join(
        json.dumps(item.line(), ensure_ascii=False) + "\n" for item in chunk))
    self.journal.append({"event": "planned", "batch": name, "at": time.time(),
                         "endpoint": endpoints.pop(), "ids": [item.cid for item in chunk]})
    return self.journal.batches[name]

  def _input_path(self, name: str) -> str:
    return os.path.join(_files_dir(self.out_path), f"{name}.input.jsonl")

  def _submit(self, batch: dict) -> None:
    """Uploads (unless the journal knows its file) and submits a planned batch."""
    if batch["file_id"] is None:
      with open(self._input_path(batch["name"]), "rb") as f:
        uploaded = self.api.files.create(file=(_filename(batch["name"]), f.read()),
                                         purpose="batch")
      self.journal.append({"event": "uploaded", "batch": batch["name"],
                           "file_id": uploaded.id})
    created = self.api.batches.create(
        input_file_id=batch["file_id"], endpoint=ENDPOINTS[batch["endpoint"]],
        completion_window=COMPLETION_WINDOW, metadata={METADATA_KEY: batch["name"]})
    self.journal.append({"event": "submitted", "batch": batch["name"], "batch_id": created.id})

  def _reconcile(self, batches: Sequence[dict]) -> None:
    """Matches the journal's batches not known as submitted (a run was killed between
    planning and recording the batch's id) with what the provider holds.

    A batch the provider lists with this batch's metadata was submitted: it is adopted
    (with its input file), never submitted again. An input file the provider lists under
    this batch's file name (`phi_jax-<batch>.jsonl`, purpose 'batch') and size was
    uploaded: it is reused, never uploaded again. Any other upload of a batch's input
    (an orphan: a second upload of the same file) is deleted. Both lists are walked
    newest first, down to RECONCILE_SLACK_S before the oldest of these batches."""
    if not batches:
      return
    by_name = {b["name"]: b for b in batches}
    oldest = min(b["planned_at"] for b in batches) - RECONCILE_SLACK_S
    for listed in self.api.batches.list(limit=100):
      batch = by_name.get((listed.metadata or {}).get(METADATA_KEY))
      if batch is not None and batch["batch_id"] is None:
        if batch["file_id"] is None:
          self.journal.append({"event": "uploaded", "batch": batch["name"],
                               "file_id": listed.input_file_id})
        self.journal.append({"event": "submitted", "batch": batch["name"],
                             "batch_id": listed.id})
      if listed.created_at < oldest:
        break
    by_file = {_filename(b["name"]): b for b in batches}
    try:
      for listed in self.api.files.list(purpose="batch", order="desc", limit=100):
        batch = by_file.get(listed.filename)
        if batch is not None:
          if (batch["file_id"] is None and
              listed.bytes == os.path.getsize(self._input_path(batch["name"]))):
            self.journal.append({"event": "uploaded", "batch": batch["name"],
                                 "file_id": listed.id})
          elif listed.id != batch["file_id"]:
            self.api.files.delete(listed.id)
        if listed.created_at < oldest:
          break
    except openai.NotFoundError:  # a provider that lists no files: upload again
      print(f"map_jsonl (batch mode): {self.client.base_url} lists no files; an input "
            f"uploaded before the restart cannot be found and is uploaded again (it costs "
            f"storage, never a request)", file=sys.stderr)

  # -- results --------------------------------------------------------------------------

  def _download(self, file_id: str | None, name: str, kind: str) -> dict[str, dict]:
    """{custom_id: line} of a batch's output or error file (downloaded whole first)."""
    if not file_id:
      return {}
    path = os.path.join(_files_dir(self.out_path), f"{name}.{kind}.jsonl")
    content = self.api.files.content(file_id)
    with atomic.writing(path, "wb") as f:
      for chunk in content.iter_bytes():
        f.write(chunk)
    lines = {}
    for number, line in jsonl.read_jsonl(path):
      if not isinstance(line.get("custom_id"), str):
        raise LLMError(f"batch {name}: {kind} file {file_id} line {number} has no custom_id")
      lines[line["custom_id"]] = line
    return lines

  def _finish(self, batch: dict, status: Any, by_cid: Mapping[str, Item]) -> list[Item]:
    """Records the answers of a finished batch; returns the items to ask again."""
    if status.status == "failed":
      errors = "; ".join(f"{e.code}: {e.message}" for e in
                         (getattr(status.errors, "data", None) or []))
      # closed in the journal: a rerun (with the cause fixed) plans its requests afresh
      self.journal.append({"event": "finished", "batch": batch["name"], "status": "failed",
                           "failed": {}})
      raise LLMError(f"batch {status.id} ({ENDPOINTS[batch['endpoint']]}, model "
                     f"{self.config.model!r}) was refused by the provider: {errors or 'no reason'}")
    lines = self._download(status.output_file_id, batch["name"], "output")
    lines.update(self._download(status.error_file_id, batch["name"], "error"))
    failed: dict[str, dict] = {}
    for cid in batch["ids"]:
      item = by_cid.get(cid)
      if item is None:  # answered already (recorded before a kill)
        continue
      failure = self._answer(item, lines.get(cid), status.status)
      if failure is not None:
        failed[cid] = failure
    self.journal.append({"event": "finished", "batch": batch["name"], "status": status.status,
                         "failed": failed})
    for failure in failed.values():  # answers a parser rejected were paid all the same
      if failure.get("usage"):
        self.paid({"batch": failure["usage"]})
    retries = []
    for cid, failure in failed.items():
      item = by_cid[cid]
      attempts = len(self.journal.failures[cid])
      if failure["kind"] == "parse":
        used = self.journal.attempts(cid, "parse")
        if used <= self.parse_retries:
          retries.append(item)
        else:
          self.write({**item.record, "error": f"unusable answer after {used} attempt(s): "
                      f"{failure['reason']}", "raw": failure.get("raw"), "attempts": used,
                      "spent": {}})  # the failed attempts' cost is in the journal
      elif self.journal.attempts(cid, "transient") <= self.config.max_retries:
        retries.append(item)
      elif self.record_exhausted:
        self.write({**item.record, "error": f"batch: gave up after {attempts} attempt(s); "
                    f"last error: {failure['reason']}", "raw": None, "attempts": attempts,
                    "spent": {}})
      else:
        raise LLMError(f"batch request {cid}: gave up after {attempts} attempt(s) "
                       f"(LLMConfig.max_retries={self.config.max_retries}); last error: "
                       f"{failure['reason']}", retryable=True)
    return retries

  def _answer(self, item: Item, line: Mapping[str, Any] | None, batch_status: str
              ) -> dict | None:
    """Writes one request's output line; or returns its failure (to retry)."""
    if line is None:
      return {"kind": "transient", "reason": f"no answer (batch {batch_status})"}
    response = line.get("response") or {}
    code = response.get("status_code")
    body = response.get("body")
    if code != 200:
      error = line.get("error") or (body or {}).get("error") or {}
      message = error.get("message") if isinstance(error, Mapping) else str(error)
      reason = f"HTTP {code}: {message}" if code else f"{error.get('code')}: {message}"
      if code in (400, 413, 422):
        self.write({**item.record, "error": f"batch request: {reason}", "raw": None,
                    "attempts": 1 + len(self.journal.failures.get(item.cid, ())),
                    "spent": {}})
        return None
      if code is not None and code != 429 and code < 500:
        raise LLMError(f"batch request {item.cid}: {reason}", status=code)
      return {"kind": "transient", "reason": reason}
    try:
      answer = completion_response(item.endpoint, body or {})
    except MalformedResponse as e:
      return {"kind": "transient", "reason": f"malformed response: {e}"}
    self.client.count_batch_answer(answer.usage)
    self.client.remember(item.key, item.endpoint, item.model, item.inputs, item.params,
                         item.variant, answer)
    attempts = 1 + self.journal.attempts(item.cid, "parse")
    meta = {"finish_reason": answer.finish_reason, "usage": answer.usage, "cached": False,
            "attempts": attempts, "spent": budget.add_spent({}, "batch", answer.usage)}
    if self.parse is None:
      self.write({**item.record, "raw": answer.text, **meta})
      return None
    try:
      result = self.parse(answer.text, item.request)
    except ValueError as e:
      return {"kind": "parse", "reason": f"{type(e).__name__}: {e}", "raw": answer.text,
              "usage": answer.usage}
    self.write({**item.record, "result": result, "raw": answer.text, **meta})
    return None


__all__ = ["Batcher", "ENDPOINTS", "Item", "Journal", "METADATA_KEY", "journal_path"]
