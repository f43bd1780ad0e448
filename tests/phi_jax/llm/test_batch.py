"""map_jsonl's batch mode against the fake Files and Batches endpoints (tests/fake_batches.py):
the same lines as online, failed requests retried, a SIGKILL at every stage, the budget."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from phi_jax.llm import map_jsonl
from phi_jax.llm.batch import journal_path
from phi_jax.llm.budget import BudgetReached
from phi_jax.llm.fanout import accounted_spent
from tests.fake_batches import EXPIRED
from tests.fake_openai import FakeOpenAI, Status
from tests.fake_openai import TEST_KEY_ENV as KEY_ENV
from tests.phi_jax.llm.helpers import REPO_ROOT, make_client, read_lines

pytestmark = pytest.mark.usefixtures("api_key")
N = 12


def respond(request):
  """Deterministic: a JSON verdict, except request 7, whose answer never parses."""
  n = int(request.user_text.split("=")[1])
  return "not json" if n == 7 else json.dumps({"n": n, "double": 2 * n})


def fail_in_batch(request):
  """Inside a batch only: request 3 fails with a 500 and request 5 expires, once each."""
  n = int(request.user_text.split("=")[1])
  if request.nth == 0 and n == 3:
    return Status(500, "overloaded")
  if request.nth == 0 and n == 5:
    return EXPIRED
  return None


def parse(text, request):
  del request
  value = json.loads(text)
  if not isinstance(value, dict):
    raise ValueError("not an object")
  return value


def requests(n=N):
  return [{"id": f"r{i}", "prompt": f"n={i}"} for i in range(n)]


def by_id(path, drop=("spent", "cached")):
  return {line["id"]: {k: v for k, v in line.items() if k not in drop}
          for line in read_lines(path)}


def run(server, out, **fields):
  client = make_client(server, None, batch_poll_s=0.001, parse_retries=1, **fields)
  return map_jsonl(client, requests(), str(out), parse=parse, progress=False,
                   record_exhausted=True)


@pytest.mark.parametrize("retry", ["batch", pytest.param("online", marks=pytest.mark.slow)])
def test_batch_mode_records_the_lines_online_mode_records(tmp_path, retry):
  with FakeOpenAI(respond) as server:
    run(server, tmp_path / "online.jsonl")
    online_sent = server.count()
    server.reset()
    server.batches.fail = fail_in_batch
    summary = run(server, tmp_path / "batch.jsonl", mode="batch", batch_max_requests=5,
                  batch_retry=retry)
    assert by_id(tmp_path / "batch.jsonl") == by_id(tmp_path / "online.jsonl")
    assert summary["done"] == N - 1 and summary["errors"] == 1  # request 7's answer
    assert "unusable answer after 2 attempt(s)" in by_id(tmp_path / "batch.jsonl")["r7"]["error"]
    # every request asked once, plus the retries of the failed ones (3, 5; 7 re-parsed)
    assert server.count() == online_sent + 2
    submitted = server.batches.lines_submitted
    if retry == "batch":
      assert sorted(submitted) == sorted([json.dumps(f"r{i}") for i in range(N)] +
                                         ['"r3"', '"r5"', '"r7"'])
    else:
      assert sorted(submitted) == sorted(json.dumps(f"r{i}") for i in range(N))
    lines = read_lines(tmp_path / "batch.jsonl")
    modes = {line["id"]: set(line["spent"]) for line in lines}
    assert modes["r0"] == {"batch"}
    assert modes["r3"] == ({"batch"} if retry == "batch" else {"online"})
    # a rerun sends nothing
    sent = server.count()
    again = run(server, tmp_path / "batch.jsonl", mode="batch", batch_retry=retry)
    assert server.count() == sent and again["resumed"] == N


_KILLED = textwrap.dedent("""
    import json, sys
    from phi_jax.llm import LLMClient, LLMConfig, map_jsonl
    url, out = sys.argv[1], sys.argv[2]
    client = LLMClient(LLMConfig(model="m", base_url=url, api_key_env="{key_env}",
                                 mode="batch", batch_poll_s=0.01, batch_max_requests=5))
    map_jsonl(client, [{{"id": f"r{{i}}", "prompt": f"n={{i}}"}} for i in range({n})], out,
              progress=False)
""")


def _kill_at(stage, tmp_path):
  """Runs a batch-mode map_jsonl in a subprocess, SIGKILLs it when it reaches `stage`,
  restarts it in this process; returns what the provider saw and the outputs of the
  killed-and-restarted run and of an uninterrupted one."""
  with FakeOpenAI() as server:
    reference = tmp_path / "reference.jsonl"
    map_jsonl(make_client(server, None, mode="batch", batch_poll_s=0.001,
                          batch_max_requests=5), requests(), str(reference), progress=False)
    server.reset()
    server.batches.lines_submitted.clear()
    uploads = server.batches.uploads
    out = str(tmp_path / "killed.jsonl")
    reached = server.batches.hold(stage)
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED.format(key_env=KEY_ENV, n=N),
                             server.url, out], env=env, cwd=REPO_ROOT,
                            stderr=subprocess.PIPE)
    try:
      assert reached.wait(60), proc.stderr.read().decode()[-2000:] if proc.poll() else stage
      proc.send_signal(signal.SIGKILL)
    finally:
      proc.wait()
      server.batches.release(stage)
    assert not os.path.exists(out) or len(read_lines(out)) < N
    map_jsonl(make_client(server, None, mode="batch", batch_poll_s=0.001,
                          batch_max_requests=5), requests(), out, progress=False)
    return {"submitted": list(server.batches.lines_submitted),
            "answered": server.count(),  # requests the provider answered (in batches)
            "uploads": server.batches.uploads - uploads,
            "deleted": list(server.batches.deleted),
            "lines": by_id(out, drop=()), "reference": by_id(str(reference), drop=()),
            "spent": accounted_spent(out), "reference_spent": accounted_spent(str(reference))}


def _assert_as_if_uninterrupted(seen):
  """Every request submitted and answered once, every batch uploaded once, the same
  lines and the same accounted spend as the uninterrupted run."""
  assert sorted(seen["submitted"]) == sorted(json.dumps(f"r{i}") for i in range(N))
  assert seen["answered"] == N
  assert seen["uploads"] == -(-N // 5)  # one upload per batch of 5
  assert seen["lines"] == seen["reference"]
  assert seen["spent"] == seen["reference_spent"] and seen["spent"]


def test_a_kill_after_submitting_never_submits_a_request_twice(tmp_path):
  # the batch exists at the provider, but the killed process never heard its id: the
  # restart finds it by its metadata instead of submitting it again
  seen = _kill_at("submitted", tmp_path)
  _assert_as_if_uninterrupted(seen)
  events = [json.loads(l) for l in open(journal_path(str(tmp_path / "killed.jsonl")))]
  assert sum(e["event"] == "submitted" for e in events) == 3


def test_a_kill_after_uploading_reuses_the_upload(tmp_path):
  # the provider holds the input file, but the killed process never heard its id: the
  # restart finds it by its name and submits it instead of uploading it again
  seen = _kill_at("uploaded", tmp_path)
  _assert_as_if_uninterrupted(seen)
  assert seen["deleted"] == []


@pytest.mark.parametrize("stage", [
    pytest.param("upload", marks=pytest.mark.slow),
    "poll",  # between the batch's creation (recorded) and its completion
    pytest.param("download", marks=pytest.mark.slow)])
def test_a_kill_at_each_stage_never_submits_a_request_twice(tmp_path, stage):
  _assert_as_if_uninterrupted(_kill_at(stage, tmp_path))


def _crash_after_upload(append):
  """A Journal.append that records everything up to an upload, then stops the run as a
  kill would (before the upload is recorded)."""

  def crash_after_upload(journal, event):
    if event["event"] == "uploaded":
      raise KeyboardInterrupt("killed after uploading")
    append(journal, event)

  return crash_after_upload


def test_a_restart_deletes_a_second_upload_of_an_input(tmp_path, monkeypatch):
  # two runs were killed after uploading the first batch's input, before recording it
  # (simulated: the journal refuses that record), and the second did not see the first's
  # upload (a provider's list that lags: simulated by no reconciling): the restart
  # submits one of the two uploads, deletes the other, and ends as an uninterrupted run
  from phi_jax.llm import batch as batch_module  # pylint: disable=g-import-not-at-top
  crash_after_upload = _crash_after_upload(batch_module.Journal.append)

  with FakeOpenAI() as server:
    reference = str(tmp_path / "reference.jsonl")
    map_jsonl(make_client(server, None, mode="batch", batch_poll_s=0.001,
                          batch_max_requests=5), requests(), reference, progress=False)
    server.reset()
    server.batches.lines_submitted.clear()
    uploads, created = server.batches.uploads, server.batches.created
    out = str(tmp_path / "out.jsonl")
    monkeypatch.setattr(batch_module.Journal, "append", crash_after_upload)
    monkeypatch.setattr(batch_module.Batcher, "_reconcile", lambda self, batches: None)
    for _ in range(2):
      with pytest.raises(KeyboardInterrupt):
        map_jsonl(make_client(server, None, mode="batch", batch_poll_s=0.001,
                              batch_max_requests=5), requests(), out, progress=False)
    monkeypatch.undo()
    assert server.batches.uploads - uploads == 2 and server.batches.created == created
    map_jsonl(make_client(server, None, mode="batch", batch_poll_s=0.001,
                          batch_max_requests=5), requests(), out, progress=False)
    assert len(server.batches.deleted) == 1
    assert server.batches.uploads - uploads == 2 + 2  # the two other batches, once each
    assert sorted(server.batches.lines_submitted) == sorted(json.dumps(f"r{i}")
                                                            for i in range(N))
    assert by_id(out, drop=()) == by_id(reference, drop=())
    assert accounted_spent(out) == accounted_spent(reference)


def test_a_provider_that_lists_no_files_gets_the_input_again(tmp_path, monkeypatch,
                                                             capsys):
  # killed (simulated) after uploading the first batch's input, before recording it;
  # the provider answers 404 to GET /v1/files: the restart says so and uploads again,
  # but submits every request once
  from phi_jax.llm import batch as batch_module  # pylint: disable=g-import-not-at-top
  crash_after_upload = _crash_after_upload(batch_module.Journal.append)

  with FakeOpenAI() as server:
    get = server.batches.get
    monkeypatch.setattr(server.batches, "get", lambda path: (
        (404, {"error": {"message": "no route", "type": "not_found"}})
        if path.partition("?")[0] == "/v1/files" else get(path)))
    out = str(tmp_path / "out.jsonl")
    with monkeypatch.context() as crash:
      crash.setattr(batch_module.Journal, "append", crash_after_upload)
      with pytest.raises(KeyboardInterrupt):
        map_jsonl(make_client(server, None, mode="batch", batch_poll_s=0.001,
                              batch_max_requests=5), requests(), out, progress=False)
    summary = map_jsonl(make_client(server, None, mode="batch", batch_poll_s=0.001,
                                    batch_max_requests=5), requests(), out, progress=False)
    assert "lists no files" in capsys.readouterr().err
    assert summary["done"] == N and server.batches.uploads == 4  # one input twice
    assert sorted(server.batches.lines_submitted) == sorted(json.dumps(f"r{i}")
                                                            for i in range(N))


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_the_budget_stops_sending_and_a_higher_budget_resumes(tmp_path, mode):
  prices = dict(price_prompt_per_1m=1e6, price_completion_per_1m=1e6,
                batch_price_prompt_per_1m=5e5, batch_price_completion_per_1m=5e5)
  out = str(tmp_path / "out.jsonl")
  with FakeOpenAI(respond) as server:
    # the fake counts characters: a prompt 'n=3' is 5 tokens (its JSON), an answer about
    # 22: $27 online, $13.5 in a batch. The most a request can cost is reserved: online
    # 3 attempts (parse_retries=2) x (5 + max_tokens 25) = $90, in a batch (whose parse
    # retries are new batches) 1 x 30 x $0.5 = $15. A budget of $150 online / $50 in a
    # batch pays 3 answers: the 4th could cost more than what is left ($69 / $9.5).
    budget = 150.0 if mode == "online" else 50.0
    client = make_client(server, None, mode=mode, max_concurrency=1, batch_poll_s=0.001,
                         batch_max_requests=50, budget_usd=budget, max_tokens=25,
                         parse_retries=2, **prices)
    with pytest.raises(BudgetReached, match=r"budget reached: .* request\(s\) were not sent"
                       ) as stop:
      map_jsonl(client, requests(), out, parse=parse, progress=False)
    recorded = read_lines(out)
    assert len(recorded) == 3 and stop.value.unsent == N - 3
    assert stop.value.spent_usd <= budget
    assert stop.value.spent_usd == pytest.approx(
        sum(r["usage"]["total_tokens"] for r in recorded) * (1 if mode == "online" else 0.5))
    assert server.count() == 3  # nothing sent that was not recorded
    client = make_client(server, None, mode=mode, max_concurrency=1, batch_poll_s=0.001,
                         budget_usd=10_000.0, max_tokens=25, parse_retries=1, **prices)
    summary = map_jsonl(client, requests(), out, parse=parse, progress=False)
    assert len(read_lines(out)) == N and summary["resumed"] == 3
    assert summary["spent_usd"] <= 10_000.0


def test_online_retries_of_a_batch_are_sent_only_within_the_budget(tmp_path):
  # all 12 fit in one batch ($15 most each: 30 tokens x $0.5); it pays $128 of $185
  # (the fake counts characters), leaving $57. r7's answer never parses: its last
  # attempt, online, could cost $30 and is sent. r3 and r5 failed inside the batch:
  # asked online, each could cost $60 (2 attempts x 30 tokens x $1): they are not sent
  prices = dict(price_prompt_per_1m=1e6, price_completion_per_1m=1e6,
                batch_price_prompt_per_1m=5e5, batch_price_completion_per_1m=5e5)
  out = str(tmp_path / "out.jsonl")
  with FakeOpenAI(respond) as server:
    server.batches.fail = fail_in_batch
    client = make_client(server, None, mode="batch", batch_poll_s=0.001, max_tokens=25,
                         batch_retry="online", parse_retries=1, budget_usd=185.0, **prices)
    with pytest.raises(BudgetReached) as stop:
      map_jsonl(client, requests(), out, parse=parse, progress=False)
    assert stop.value.spent_usd == pytest.approx(128 + 13)  # r7 online: 13 tokens
    lines = by_id(out)
    assert sorted(lines) == sorted(f"r{i}" for i in range(N) if i not in (3, 5))
    assert "unusable answer after 2 attempt(s)" in lines["r7"]["error"]
    assert stop.value.unsent == 2 and server.count() == N + 1  # r7 asked online once
    client = make_client(server, None, mode="batch", batch_poll_s=0.001, max_tokens=25,
                         batch_retry="online", parse_retries=1, budget_usd=1000.0, **prices)
    map_jsonl(client, requests(), out, parse=parse, progress=False, record_exhausted=True)
    assert sorted(by_id(out)) == sorted(f"r{i}" for i in range(N))


def test_a_restart_counts_the_batches_in_flight_against_the_budget(tmp_path, monkeypatch):
  # $15 most per request in a batch (30 tokens x $0.5), about $13.5 paid: a budget of
  # $100 sends 6 at first (batches of 5 and 1). The run is killed (simulated) before
  # any answer is recorded; the restart finds both batches in flight and reserves them,
  # so it plans nothing more until they end, and stops within the budget
  from phi_jax.llm import batch as batch_module  # pylint: disable=g-import-not-at-top
  prices = dict(price_prompt_per_1m=1e6, price_completion_per_1m=1e6,
                batch_price_prompt_per_1m=5e5, batch_price_completion_per_1m=5e5)
  out = str(tmp_path / "out.jsonl")

  def killed(self, batch, status, by_cid):
    raise KeyboardInterrupt("killed while polling")

  with FakeOpenAI(respond) as server:
    client = make_client(server, None, mode="batch", batch_poll_s=0.001, max_tokens=25,
                         batch_max_requests=5, budget_usd=100.0, **prices)
    monkeypatch.setattr(batch_module.Batcher, "_finish", killed)
    with pytest.raises(KeyboardInterrupt):
      map_jsonl(client, requests(), out, parse=parse, progress=False)
    monkeypatch.undo()
    assert len(server.batches.lines_submitted) == 6 and not os.path.getsize(out)
    with pytest.raises(BudgetReached) as stop:
      map_jsonl(client, requests(), out, parse=parse, progress=False)
    assert stop.value.spent_usd <= 100.0
    assert len(read_lines(out)) == 7 and stop.value.unsent == N - 7
    assert len(server.batches.lines_submitted) == 7  # each request submitted once


def test_a_batch_the_provider_refuses_raises_and_a_rerun_plans_it_afresh(tmp_path):
  with FakeOpenAI() as server:
    original = server.batches._process

    def refuse(batch):
      with server.batches._lock:
        batch["status"] = "failed"
        batch["errors"] = {"object": "list", "data": [
            {"code": "model_not_found", "message": "no model m"}]}

    server.batches._process = refuse
    client = make_client(server, None, mode="batch", batch_poll_s=0.001)
    out = str(tmp_path / "out.jsonl")
    with pytest.raises(Exception, match="refused by the provider: model_not_found: no model m"):
      map_jsonl(client, requests(3), out, progress=False)
    server.batches._process = original
    summary = map_jsonl(client, requests(3), out, progress=False)
    assert summary["done"] == 3 and server.batches.created == 2
