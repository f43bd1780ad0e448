"""Synthesis in batch mode, its plan estimate against the accounted cost, and the budget
stop through the runner (the fake teacher of tests/data_pipeline/synth/teacher.py)."""

import dataclasses
import hashlib
import os

import pytest

from configs import tiny
from data_pipeline.synth import ExerciseOptions, SynthConfig, sandbox_for, synthesize
from data_pipeline.synth import generate
from phi_jax.llm import LLMClient, LLMConfig, map_jsonl
from phi_jax.llm.budget import estimate_usd
from recipe import runner
from tests.data_pipeline.synth import teacher
from tests.data_pipeline.synth.test_generate import OUTPUTS, outputs
from tests.fake_batches import EXPIRED
from tests.fake_openai import FakeOpenAI, Reply, Status
from tests.fake_openai import TEST_KEY_ENV as KEY_ENV

pytestmark = pytest.mark.usefixtures("api_key")
PRICES = dict(price_prompt_per_1m=2.0, price_completion_per_1m=8.0,
              batch_price_prompt_per_1m=1.0, batch_price_completion_per_1m=4.0)


def client_for(url, cache_dir, **fields):
  values = dict(model="teacher", base_url=url, api_key_env=KEY_ENV, max_concurrency=4,
                max_retries=3, timeout_s=10.0, backoff_initial_s=0.01, backoff_max_s=0.1,
                temperature=0.7, cache_dir=str(cache_dir), batch_poll_s=0.001, **PRICES)
  values.update(fields)
  return LLMClient(LLMConfig(**values))


def _digit(text: str) -> int:
  return hashlib.sha256(text.encode()).digest()[0] % 5


def failing_some():
  """A batch failure rule: the first time a request is in a batch, a fifth of them get
  a 500 and a fifth expire."""
  seen = set()

  def fail(request):
    text = teacher.user_text(request.body["messages"])
    first = text not in seen
    seen.add(text)
    if first and _digit(text) == 0:
      return Status(500, "overloaded")
    if first and _digit(text) == 1:
      return EXPIRED
    return None

  return fail


@pytest.mark.slow  # sandboxed exercises twice; tests/phi_jax/llm/test_batch.py is the fast one
def test_batch_mode_writes_the_records_online_mode_writes(tmp_path):
  cfg = {"seed": 3, "textbooks": {"count": 10}, "exercises": {"count": 6, "timeout_s": 5.0}}
  sandbox = sandbox_for(ExerciseOptions(timeout_s=5.0))
  with FakeOpenAI(lambda r: teacher.respond(r, avoid=("infinite_loop",))) as server:
    online = synthesize(cfg, str(tmp_path / "online"), client_for(server.url, tmp_path / "c1"),
                        sandbox, progress=False)
    sent = server.count()
    server.batches.fail = failing_some()
    batch = synthesize(cfg, str(tmp_path / "batch"),
                       client_for(server.url, tmp_path / "c2", mode="batch",
                                  batch_max_requests=7), sandbox, progress=False)
    failed = sum(1 for line in server.batches.lines_submitted) - 16
    assert failed > 0 and server.count() - sent == 16 + failed  # only retries repeat
  assert outputs(tmp_path / "batch") == outputs(tmp_path / "online")
  for name in OUTPUTS:
    assert os.path.getsize(tmp_path / "online" / name) > 0 or name == "exercises.jsonl"
  # the same tokens, paid at the batch prices (half the online ones here)
  assert batch["tokens"] == online["tokens"]
  assert batch["cost_usd"] == pytest.approx(online["cost_usd"] / 2, rel=1e-6)


def near_max_teacher(request):
  """Answers as the scripted teacher, but reports usage counted its own way: prompt
  tokens are 1.3 per word (not characters / 4), and the completion fills 85-100% of
  max_tokens, as long textbook sections do (the estimate counts completions at their
  maxima)."""
  reply = teacher.respond(request)
  words = sum(len(m["content"].split()) for m in request.body["messages"])
  share = 0.85 + 0.15 * _digit(teacher.user_text(request.body["messages"])) / 4
  usage = {"prompt_tokens": round(1.3 * words),
           "completion_tokens": int(share * request.body["max_tokens"])}
  usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
  return Reply(reply.text, reply.finish_reason, usage=usage)


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_the_plan_estimate_is_within_20_percent_of_the_accounted_cost(tmp_path, mode):
  cfg = SynthConfig.from_mapping({"seed": 5, "textbooks": {"count": 12, "max_tokens": 400},
                                  "exercises": {"count": 0}})
  with FakeOpenAI(near_max_teacher) as server:
    client = client_for(server.url, tmp_path / "cache", mode=mode)
    cfg = dataclasses.replace(cfg, teacher=client.config)
    (left, prompt, completion), = [v for v in generate.estimate(cfg).values() if v[0]]
    estimated = estimate_usd(client.config, prompt, completion)
    summary = synthesize(cfg, str(tmp_path / "out"), client, progress=False)
  assert left == 12 and summary["cost_usd"] > 0
  assert abs(estimated - summary["cost_usd"]) <= 0.2 * summary["cost_usd"], (
      estimated, summary["cost_usd"])
  # what the plan prints
  assert generate.estimate(cfg, str(tmp_path / "out"))["textbooks"] == (0, 0, 0)


def test_the_budget_stop_leaves_the_node_incomplete_and_a_higher_budget_resumes(
    tmp_path, capsys):
  requests = [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(8)]
  workdir = str(tmp_path / "work")
  with FakeOpenAI() as server:

    def ask(ctx, reads):
      client = client_for(server.url, tmp_path / "cache", max_concurrency=1, max_tokens=30,
                          budget_usd=ctx.settings.llm.budget_usd)
      return map_jsonl(client, requests, os.path.join(ctx.node_dir("ask"), "answers.jsonl"),
                       progress=False)

    nodes = [runner.Node(name="ask", run=ask), runner.Node(name="after", after=("ask",),
                                                           run=lambda ctx, reads: {})]
    config = tiny.get_config()
    config.llm.update(dict(price_prompt_per_1m=2.0, price_completion_per_1m=8.0))
    # an answer costs ~$0.00015 (the fake counts characters as tokens), at most
    # $0.00026 (prompt + max_tokens 30), reserved before it is sent: 2 are paid
    config.llm.budget_usd = 0.0005

    def execute():
      ctx = runner.Context(config, workdir, runner.Graph(nodes))
      return runner.execute(ctx, runner.make_plan(ctx, ["ask", "after"]))

    with pytest.raises(runner.StageError, match="ask.* is incomplete: its LLM budget"):
      execute()
    out = capsys.readouterr().out
    assert "[ask] stopped by its budget, not marked complete" in out
    assert "request(s) were not sent" in out and "[after]" not in out
    ctx = runner.Context(config, workdir, runner.Graph(nodes))
    assert ctx.marker("ask") is None and ctx.marker("after") is None
    sent = server.count()
    assert 2 <= sent < 8
    config.llm.budget_usd = 1.0
    execute()
    assert ctx.marker("ask") is not None and ctx.marker("after") is not None
    assert server.count() == 8  # the rest only


def test_the_plan_shows_what_synthesize_and_annotate_would_send(tmp_path):
  from recipe import graph as graph_lib  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.synth.local_teacher = ""
  config.synth.teacher.update(dict(model="gpt-x", mode="batch", **PRICES))
  config.synth.textbooks.update(dict(count=1000, max_tokens=2000))
  config.llm.update(dict(model="gpt-y", max_tokens=100))
  config.data.quality.annotator = "llm"
  ctx = runner.Context(config, str(tmp_path), graph_lib.build())
  plan = runner.make_plan(ctx, ["curate", "annotate", "synthesize"])
  text = runner.format_plan(plan, ctx.workdir, ctx)
  cfg = SynthConfig.from_mapping(config.synth)
  left, prompt, completion = generate.estimate(cfg)["textbooks"]
  assert (left, completion) == (1000, 2_000_000)
  usd = prompt * 1.0 / 1e6 + completion * 4.0 / 1e6  # the batch prices
  assert (f"synthesize: textbooks: ~{prompt:,} prompt + up to 2,000,000 completion tokens "
          f"in 1,000 request(s) (batch), ~${usd:,.2f}") in text
  annotate_count = config.data.quality.annotate
  assert (f"annotate: educational value: ~" in text and
          f"up to {100 * annotate_count:,} completion tokens in {annotate_count:,} "
          f"request(s) (online) (prices unset: no cost)" in text)
