"""data_pipeline.synth.proximity: a teacher's near-copy of a HumanEval problem is
rejected as benchmark_proximity when it is generated (the decontamination's n-gram and
AST indexes, with the synth thresholds), other samples pass, and the report shows
proximity by topic."""

import json
import os

import pytest

from data_pipeline.decontaminate import DecontConfig
from data_pipeline.synth import ExerciseOptions, SynthConfig, prompts, proximity, sandbox_for
from data_pipeline.synth import synthesize, topics
from data_pipeline.synth.generate import sample_id
from phi_jax.llm import LLMClient, LLMConfig
from tests.data_pipeline.synth.teacher import asked_name, user_text
from tests.fake_openai import FakeOpenAI, Reply
from tests.fake_openai import TEST_KEY_ENV as KEY_ENV

pytestmark = pytest.mark.usefixtures("api_key")

# HumanEval/0 (has_close_elements), renamed to the asked name: its docstring and code
NEAR_COPY = '''def {name}(numbers: list[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than
    given threshold.
    >>> {name}([1.0, 2.0, 3.0], 0.5)
    False
    >>> {name}([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)
    True
    """
    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2:
                distance = abs(elem - elem2)
                if distance < threshold:
                    return True
    return False

assert {name}([1.0, 1.05], 0.1)
assert not {name}([], 1.0)
'''
# the same code under other names and other words: only the AST check sees it
DISGUISED = '''def {name}(readings: list[float], gap: float) -> bool:
    """Tell whether two sensor readings at different positions lie within `gap`.

    >>> {name}([10.0, 12.5], 3.0)
    True
    >>> {name}([1.0], 0.5)
    False
    """
    for i, a in enumerate(readings):
        for j, b in enumerate(readings):
            if i != j:
                d = abs(a - b)
                if d < gap:
                    return True
    return False

assert {name}([4.0, 4.2, 9.0], 0.5)
assert not {name}([4.0, 9.0], 0.5)
'''
ORIGINAL = '''def {name}(values: list[int], limit: int) -> int:
    """Add up the positive entries of a ledger, capped at a spending limit.

    >>> {name}([1, -2, 3], 10)
    4
    >>> {name}([8, 9], 10)
    10
    """
    total = 0
    for v in values:
        if v > 0:
            total += v
    return min(total, limit)

assert {name}([], 5) == 0
assert {name}([3, 3], 5) == 5
'''
KINDS = (NEAR_COPY, DISGUISED, ORIGINAL)


def kind(messages) -> int:
  return sum(map(ord, user_text(messages))) % len(KINDS)


def respond(request):
  messages = request.body["messages"]
  text = KINDS[kind(messages)].format(name=asked_name(messages))
  return Reply(f"```python\n{text}```\n")


COUNT = 6


def run(tmp_path, index, checks):
  cfg = {"seed": 3, "exercises": {"count": COUNT, "timeout_s": 3.0},
         "proximity": {"checks": checks, "ast_tau": 0.9}}
  planted = {}
  for i in range(COUNT):
    messages = prompts.messages("exercises", topics.draw("exercises", 3, i))
    planted[sample_id("exercises", 3, i)] = kind(messages)
  index = proximity.load(DecontConfig(benchmarks=("humaneval",), checks=("ngram", "ast")),
                         SynthConfig.from_mapping(cfg).proximity) if index is None else index
  with FakeOpenAI(respond) as server:
    client = LLMClient(LLMConfig(model="teacher", base_url=server.url, api_key_env=KEY_ENV,
                                 cache_dir=str(tmp_path / "cache")))
    out = str(tmp_path / "-".join(checks))
    synthesize(cfg, out, client, sandbox_for(ExerciseOptions(timeout_s=3.0)),
               benchmarks=index, progress=False)
  rows = {}
  for name in ("exercises.jsonl", "rejected.jsonl"):
    for line in open(os.path.join(out, name)):
      row = json.loads(line)
      rows[row["id"]] = row
  return planted, rows, out


def test_a_planted_near_copy_of_a_humaneval_problem_is_rejected_when_generated(tmp_path):
  planted, rows, out = run(tmp_path, None, ("ngram", "ast"))
  assert set(planted.values()) == {0, 1, 2}  # the seed plants every kind
  for sample, k in planted.items():
    row = rows[sample]
    if KINDS[k] is ORIGINAL:
      assert "gate" not in row, row.get("reason")
      assert row["meta"]["proximity"]["ngram"]["matches"] == 0
    else:
      assert row["gate"] == "benchmark_proximity", row.get("reason")
      assert "HumanEval/0" in row["reason"]
      if KINDS[k] is NEAR_COPY:
        assert "13-gram(s) shared with humaneval HumanEval/0" in row["reason"]
      assert row["meta"]["proximity"]["ast"] == {"tau": 1.0, "task_id": "HumanEval/0"}
  report = json.load(open(os.path.join(out, "diversity.json")))["generators"]["exercises"]
  near = report["benchmark_proximity"]
  assert near["rejected"] == sum(KINDS[k] is not ORIGINAL for k in planted.values())
  by_difficulty = {r["value"]: r for r in near["by_topic"]["difficulty"]}
  for value, r in by_difficulty.items():  # recounted from the records
    mine = [s for s in planted if rows[s]["meta"]["topic"]["difficulty"] == value]
    assert r["checked"] == len(mine)
    assert r["rejected"] == sum(rows[s].get("gate") == "benchmark_proximity" for s in mine)
  assert "Benchmark proximity:" in open(os.path.join(out, "diversity.md")).read()


def test_only_the_configured_checks_reject(tmp_path):
  cfg = SynthConfig.from_mapping({"proximity": {"checks": ("ngram",)}}).proximity
  index = proximity.load(DecontConfig(benchmarks=("humaneval",), checks=("ngram", "ast")), cfg)
  planted, rows, _ = run(tmp_path, index, ("ngram",))
  for sample, k in planted.items():
    assert (rows[sample].get("gate") == "benchmark_proximity") == (KINDS[k] is NEAR_COPY)
  with pytest.raises(ValueError, match="proximity.checks"):
    SynthConfig.from_mapping({"proximity": {"checks": ("embedding",)}})
  with pytest.raises(ValueError, match="needs the benchmark indexes"):
    synthesize({"proximity": {"checks": ("ast",)}}, str(tmp_path / "x"), None)
