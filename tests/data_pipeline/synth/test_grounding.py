"""Grounded textbooks: each request's seed extract of the filtered code is drawn
deterministically (checked against the corpus by brute force), reaches the teacher in
the request, and is recorded with the record it ends as."""

import json
import os

import pytest

from data_pipeline.synth import grounding, synthesize
from data_pipeline.synth.generate import request_seed
from phi_jax.llm import LLMClient, LLMConfig
from tests.data_pipeline.synth import teacher
from tests.fake_openai import FakeOpenAI
from tests.fake_openai import TEST_KEY_ENV as KEY_ENV

pytestmark = pytest.mark.usefixtures("api_key")


def write_corpus(path):
  rows = [{"id": f"code-{i}", "text": "".join(f"def f{i}_{j}(x):\n    return x + {j}\n"
                                               for j in range(3 + 7 * i))}
          for i in range(5)]
  rows.insert(2, {"id": "empty", "text": "   "})  # never drawn
  with open(path, "w") as f:
    f.write("\n".join(json.dumps(row) for row in rows) + "\n")
  return {row["id"]: row["text"] for row in rows if row["text"].strip()}


def test_extracts_are_seeded_windows_starting_at_a_line_of_a_record(tmp_path):
  texts = write_corpus(tmp_path / "filtered.jsonl")
  corpus = grounding.SeedCorpus([str(tmp_path / "filtered.jsonl")])
  assert len(corpus) == 5
  sources = set()
  for index in range(40):
    seed = corpus.extract(7, index, 120)
    assert seed == corpus.extract(7, index, 120)  # a function of (seed, index) alone
    text = texts[seed["source"]]
    sources.add(seed["source"])
    assert text[seed["start"]:seed["start"] + len(seed["text"])] == seed["text"]
    assert seed["start"] == 0 or text[seed["start"] - 1] == "\n"
    assert text[:seed["start"]].count("\n") == seed["line"] - 1
    if len(text) <= 120:
      assert seed["text"] == text
    else:
      assert 0 < len(seed["text"]) <= 120 and seed["text"].endswith("\n")
  assert len(sources) >= 4 and "empty" not in sources
  assert [corpus.extract(8, i, 120) for i in range(5)] != [
      corpus.extract(7, i, 120) for i in range(5)]
  (tmp_path / "none.jsonl").write_text('{"id": "a", "text": ""}\n')
  with pytest.raises(ValueError, match="no record with a non-empty 'text'"):
    grounding.SeedCorpus([str(tmp_path / "none.jsonl")])


def test_the_seed_reaches_the_request_and_is_recorded_with_the_record(tmp_path):
  texts = write_corpus(tmp_path / "filtered.jsonl")
  cfg = {"seed": 2, "textbooks": {"count": 6, "grounding_chars": 150}}
  with FakeOpenAI(teacher.respond) as server:
    client = LLMClient(LLMConfig(model="teacher", base_url=server.url, api_key_env=KEY_ENV,
                                 cache_dir=str(tmp_path / "cache")))
    with pytest.raises(ValueError, match="needs seed_paths"):
      synthesize(cfg, str(tmp_path / "no_seeds"), client, progress=False)
    out = str(tmp_path / "out")
    synthesize(cfg, out, client, seed_paths=[str(tmp_path / "filtered.jsonl")],
               progress=False)
    sent = {r.body["seed"]: r.user_text for r in server.requests}
  assert len(sent) == 6
  records = [json.loads(line) for name in ("textbooks.jsonl", "rejected.jsonl")
             for line in open(os.path.join(out, name))]
  assert len(records) == 6
  for record in records:
    seed = record["meta"]["grounding"]
    assert seed["text"] in texts[seed["source"]]
    asked = sent[request_seed(record["id"])]  # the request this record answers
    assert asked.endswith(f"```python\n{seed['text']}```"), record["id"]
    assert record["meta"]["topic"]["concept"] in asked
  assert any("gate" not in record for record in records)  # accepted ones carry it too
