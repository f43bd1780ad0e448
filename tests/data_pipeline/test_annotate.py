"""data_pipeline.annotate: the LLM annotator against the fake OpenAI server, and the
heuristic proxy on planted educational vs. boilerplate snippets."""

import json
import random

import pytest

from data_pipeline import annotate
from data_pipeline.annotate import (AnnotationError, HeuristicAnnotator, LLMAnnotator,
                                    load_labels, parse_answer, select_for_annotation)
from phi_jax.llm import LLMClient, LLMConfig
from tests.fake_openai import Status
from tests.fake_openai import TEST_KEY_ENV as KEY_ENV
from tests.fake_openai import TEST_SECRET as SECRET

pytestmark = pytest.mark.usefixtures("api_key")  # `server`: a FakeOpenAI (tests/fake_openai.py)


def make_client(server, tmp_path, **fields):
  values = dict(base_url=server.url, model="fake-model", api_key_env=KEY_ENV, max_retries=3,
                timeout_s=5.0, backoff_initial_s=0.01, backoff_max_s=0.05,
                cache_dir=str(tmp_path / "cache"), parse_retries=2)
  values.update(fields)
  return LLMClient(LLMConfig(**values))


def answer(value, reason="fine"):
  return json.dumps({"reason": reason, "educational_value": value})


def snippet_of(request) -> str:
  """The code block of an annotation request (the user message)."""
  return request.user_text.split("```python\n", 1)[1].rsplit("\n```", 1)[0]


def read_rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


RECORDS = [
    {"id": "a", "text": "def area(r):\n  return 3.14159 * r * r\n", "origin": "x.py"},
    {"id": "b", "text": "X = 1\nY = 2\n", "origin": "settings.py"},
    {"id": 7, "text": "def fib(n):\n  return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
     "origin": "fib.py"},
]


# -- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ('{"reason": "clear", "educational_value": 7}', (7, "clear")),
    ('  {"educational_value": 0, "reason": " boilerplate "}\n', (0, "boilerplate")),
    ('```json\n{"reason": "ok", "educational_value": 10}\n```', (10, "ok")),
])
def test_parse_answer_accepts_exactly_the_json_object(text, expected):
  result = parse_answer(text)
  assert (result["educational_value"], result["reason"]) == expected


@pytest.mark.parametrize("text", [
    "Educational value: 7",                                          # prose
    'I would say {"reason": "x", "educational_value": 7}',           # JSON inside prose
    '{"reason": "x", "educational_value": 11}',                      # out of range
    '{"reason": "x", "educational_value": 7.5}',                     # not an integer
    '{"reason": "x", "educational_value": true}',                    # bool is not a score
    '{"reason": "", "educational_value": 3}',                        # empty reason
    '{"reason": "x", "educational_value": 3, "confidence": 1}',      # extra key
    '[{"reason": "x", "educational_value": 3}]',                     # not an object
])
def test_parse_answer_rejects_anything_else(text):
  with pytest.raises(ValueError):
    parse_answer(text)


# -- the LLM annotator --------------------------------------------------------------------


def test_llm_annotator_labels_records_in_input_order(server, tmp_path):
  server.responder = lambda req: answer(8 if "def " in snippet_of(req) else 2, "because")
  annotator = LLMAnnotator(make_client(server, tmp_path), threshold=0.5)
  summary = annotator.annotate(RECORDS, str(tmp_path / "labels.jsonl"), progress=False)
  rows = read_rows(tmp_path / "labels.jsonl")
  assert rows == [
      {"id": "a", "score": 0.8, "label": 1, "annotator": "llm:fake-model", "reason": "because"},
      {"id": "b", "score": 0.2, "label": 0, "annotator": "llm:fake-model", "reason": "because"},
      {"id": 7, "score": 0.8, "label": 1, "annotator": "llm:fake-model", "reason": "because"}]
  assert summary["positives"] == 2 and summary["negatives"] == 1 and summary["unlabelled"] == 0
  assert load_labels(str(tmp_path / "labels.jsonl")) == {row["id"]: row for row in rows}
  request = server.requests[0]
  assert request.headers["authorization"] == f"Bearer {SECRET}"  # the key from the env
  assert request.body["messages"][0] == {"role": "system", "content": annotate.SYSTEM_PROMPT}
  assert "student whose goal is to learn basic coding concepts" in request.user_text
  assert sorted(snippet_of(r) for r in server.requests) == sorted(
      r["text"].rstrip() for r in RECORDS)


def test_llm_annotator_truncates_snippets_to_max_chars(server, tmp_path):
  server.responder = lambda req: answer(5)
  long_text = "".join(f"value_{i} = {i}\n" for i in range(500))
  annotator = LLMAnnotator(make_client(server, tmp_path), max_chars=100)
  annotator.annotate([{"id": "long", "text": long_text}, {"id": "short", "text": "x = 1\n"}],
                     str(tmp_path / "labels.jsonl"), progress=False)
  by_snippet = {snippet_of(r): r.user_text for r in server.requests}
  assert long_text[:100].rstrip() in by_snippet
  assert "first 100 characters" in by_snippet[long_text[:100].rstrip()]
  assert "first 100 characters" not in by_snippet["x = 1"]


def test_429_and_5xx_are_retried(server, tmp_path):
  server.script(Status(429, headers={"retry-after": "0"}), Status(500), Status(503), answer(9))
  annotator = LLMAnnotator(make_client(server, tmp_path, max_concurrency=1))
  annotator.annotate(RECORDS[:1], str(tmp_path / "labels.jsonl"), progress=False)
  (row,) = read_rows(tmp_path / "labels.jsonl")
  assert (row["score"], row["label"]) == (0.9, 1)
  assert server.count() == 4


def test_malformed_answer_is_retried_then_recorded_unlabelled(server, tmp_path):
  # 'a' never answers in the format; 'b' answers in prose once, then correctly.
  def responder(req):
    if "area" in snippet_of(req):
      return "This is quite educational, I'd give it 7/10."
    return "Educational value: 3" if req.nth == 0 else answer(3)

  server.responder = responder
  client = make_client(server, tmp_path, parse_retries=2)
  LLMAnnotator(client).annotate(RECORDS[:2], str(tmp_path / "labels.jsonl"), progress=False)
  rows = {row["id"]: row for row in read_rows(tmp_path / "labels.jsonl")}
  assert rows["a"]["score"] is None and rows["a"]["label"] is None
  assert rows["a"]["reason"].startswith("unlabelled: unusable answer after 3 attempt(s)")
  assert (rows["b"]["score"], rows["b"]["label"]) == (0.3, 0)
  assert sum("area" in snippet_of(r) for r in server.requests) == 3  # 1 + parse_retries
  assert server.count() == 3 + 2
  labels = load_labels(str(tmp_path / "labels.jsonl"))
  assert labels["a"]["label"] is None  # loads back as unlabelled, not guessed
  # A rerun keeps the verdicts; retry_unlabelled asks the unlabelled record again.
  server.responder = lambda req: answer(6)
  LLMAnnotator(client).annotate(RECORDS[:2], str(tmp_path / "labels.jsonl"), progress=False)
  assert server.count() == 5 and load_labels(str(tmp_path / "labels.jsonl")) == labels
  LLMAnnotator(client).annotate(RECORDS[:2], str(tmp_path / "labels.jsonl"), progress=False,
                                retry_unlabelled=True)
  rows = load_labels(str(tmp_path / "labels.jsonl"))
  assert server.count() == 6 and (rows["a"]["score"], rows["a"]["label"]) == (0.6, 1)
  assert rows["b"] == labels["b"]


def test_rerun_is_served_from_cache_and_resumes(server, tmp_path):
  server.responder = lambda req: answer(len(snippet_of(req)) % 11)
  first = LLMAnnotator(make_client(server, tmp_path))
  first.annotate(RECORDS, str(tmp_path / "run1" / "labels.jsonl"), progress=False)
  sent = server.count()
  assert sent == len(RECORDS)
  # A fresh client and a fresh output: every answer comes from the persistent cache.
  second = LLMAnnotator(make_client(server, tmp_path))
  second.annotate(RECORDS, str(tmp_path / "run2" / "labels.jsonl"), progress=False)
  assert server.count() == sent
  assert second.client.stats.cache_hits == len(RECORDS)
  assert read_rows(tmp_path / "run1" / "labels.jsonl") == read_rows(
      tmp_path / "run2" / "labels.jsonl")
  # Same output again, cache gone: resumed from the raw answers, still no request.
  third = LLMAnnotator(make_client(server, tmp_path, cache_dir=None))
  summary = third.annotate(RECORDS, str(tmp_path / "run1" / "labels.jsonl"), progress=False)
  assert server.count() == sent and summary["total"] == len(RECORDS)


def test_bad_records_are_rejected_by_name(server, tmp_path):
  annotator = LLMAnnotator(make_client(server, tmp_path))
  with pytest.raises(AnnotationError, match=r"records\[1\]: duplicate id 'a'"):
    annotator.annotate([RECORDS[0], RECORDS[0]], str(tmp_path / "l.jsonl"), progress=False)
  with pytest.raises(AnnotationError, match=r"records\[0\]: field 'text'"):
    annotator.annotate([{"id": "x", "text": None}], str(tmp_path / "l.jsonl"), progress=False)
  assert server.count() == 0


# -- the heuristic proxy ------------------------------------------------------------------

EDUCATIONAL = {
    "binary_search.py": '''\
def binary_search(items, target):
  """Returns the index of target in the sorted list items, or -1 if it is absent.

  Each step halves the part of the list that can still hold the target.
  """
  low, high = 0, len(items) - 1
  while low <= high:
    middle = (low + high) // 2  # the middle of the remaining range
    if items[middle] == target:
      return middle
    if items[middle] < target:
      low = middle + 1  # the target can only be to the right
    else:
      high = middle - 1
  return -1
''',
    "stack.py": '''\
class Stack:
  """A last-in, first-out collection built on a Python list."""

  def __init__(self):
    self._items = []

  def push(self, item):
    """Puts item on top of the stack."""
    self._items.append(item)

  def pop(self):
    """Removes and returns the top item; raises IndexError when empty."""
    if not self._items:
      raise IndexError("pop from an empty stack")
    return self._items.pop()

  def is_empty(self):
    return len(self._items) == 0
''',
    "primes.py": '''\
import math


def primes_below(n):
  """The primes smaller than n, by the sieve of Eratosthenes."""
  # is_prime[k] says whether k is still a prime candidate.
  is_prime = [True] * n
  for k in range(2, int(math.sqrt(n)) + 1):
    if is_prime[k]:
      # Every multiple of a prime is composite.
      for multiple in range(k * k, n, k):
        is_prime[multiple] = False
  return [k for k in range(2, n) if is_prime[k]]


def count_primes(n):
  """How many primes are smaller than n."""
  return len(primes_below(n))
''',
}

BOILERPLATE = {
    "setup.py": '''\
from setuptools import setup, find_packages

setup(
    name="mypackage",
    version="0.1.0",
    packages=find_packages(),
    install_requires=["requests>=2.0", "numpy", "pandas"],
    entry_points={"console_scripts": ["mytool=mypackage.cli:main"]},
)
''',
    "myproject/settings.py": '''\
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "change-me"
DEBUG = True
ALLOWED_HOSTS = []
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "myapp",
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
STATIC_URL = "/static/"
''',
    "mypackage/__init__.py": '''\
from .core import Engine, Session
from .models import User, Group, Permission
from .utils import slugify, chunked
from .errors import EngineError
import requests
import numpy as np

__all__ = ["Engine", "Session", "User", "Group", "Permission", "slugify", "chunked"]
''',
    "data/country_codes.py": "CODES = {\n" + "".join(
        f'    "C{i:03d}": ("Country {i}", {1000 + i}, {i * 0.5}),\n' for i in range(60)) + "}\n",
    "tests/test_api.py": '''\
import pytest
from mypackage.api import Client


@pytest.fixture
def client():
  return Client("http://localhost")


def test_get(client):
  assert client.get("/") is not None


def test_post(client):
  assert client.post("/", {}) is not None
''',
}


def heuristic_records():
  records = []
  for kind, files in (("edu", EDUCATIONAL), ("boiler", BOILERPLATE)):
    for path, text in files.items():
      records.append({"id": f"{kind}:{path}", "text": text, "origin": path,
                      "meta": {"path": path}})
  return records


def test_heuristic_ranks_planted_educational_code_above_boilerplate(tmp_path):
  annotator = HeuristicAnnotator(threshold=0.5)
  summary = annotator.annotate(heuristic_records(), str(tmp_path / "labels.jsonl"))
  rows = load_labels(str(tmp_path / "labels.jsonl"))
  edu = {rid: row["score"] for rid, row in rows.items() if rid.startswith("edu:")}
  boiler = {rid: row["score"] for rid, row in rows.items() if rid.startswith("boiler:")}
  assert min(edu.values()) > max(boiler.values()) + 0.2, (edu, boiler)
  assert all(rows[rid]["label"] == 1 for rid in edu)
  assert all(rows[rid]["label"] == 0 for rid in boiler)
  assert all(row["annotator"] == "heuristic-proxy" for row in rows.values())
  assert all(row["reason"].startswith("heuristic proxy:") for row in rows.values())
  assert summary == {"total": 8, "labelled": 8, "unlabelled": 0, "positives": 3,
                     "negatives": 5, "annotator": "heuristic-proxy", "threshold": 0.5,
                     "out_path": str(tmp_path / "labels.jsonl")}


def test_heuristic_features_follow_their_definitions():
  features = annotate.heuristic_features(EDUCATIONAL["binary_search.py"], "binary_search.py")
  # 15 non-blank lines: 4 docstring lines + 3 inline comments at half a line each.
  assert features["docs"] == pytest.approx(min(1.0, (4 + 1.5) / 15 / 0.25))
  assert features["definitions"] == pytest.approx(1 / 3)
  assert features["logic"] == 1.0  # 8 of 11 code lines are control flow
  assert features["self_contained"] == 1.0 and features["tiny"] == 0.0
  init = annotate.heuristic_features(BOILERPLATE["mypackage/__init__.py"],
                                     "mypackage/__init__.py")
  # 6 imports (of 7 code lines); .core/.models/.utils/.errors/requests/numpy are not stdlib.
  assert init["import_heavy"] == pytest.approx(6 / 7)
  assert init["self_contained"] == 0.0 and init["boilerplate_file"] == 1.0
  score, _ = HeuristicAnnotator().score("import os\n")
  assert score == 0.0  # tiny and all import: clipped at 0


def test_heuristic_reads_the_path_of_record_objects(tmp_path):
  class Rec:  # duck-typed, like data_pipeline.records.Record
    def __init__(self, rid, text, path):
      self.id, self.text, self.origin, self.meta = rid, text, path, {"path": path}

  text = EDUCATIONAL["stack.py"]
  annotator = HeuristicAnnotator()
  as_module = annotator.row(Rec("m", text, "pkg/stack.py"))
  as_test = annotator.row(Rec("t", text, "pkg/test_stack.py"))
  assert as_module["score"] - as_test["score"] == pytest.approx(
      annotator.weights.test_scaffolding)


# -- the annotated subset and the labels file ---------------------------------------------


def test_select_for_annotation_is_a_seeded_order_free_nested_sample():
  records = [{"id": f"r{i}", "text": ""} for i in range(200)]
  sample = select_for_annotation(records, 30, seed=1)
  assert len(sample) == 30 and len({r["id"] for r in sample}) == 30
  assert [r for r in records if r in sample] == sample  # input order
  shuffled = records[:]
  random.Random(0).shuffle(shuffled)
  assert {r["id"] for r in select_for_annotation(shuffled, 30, seed=1)} == {
      r["id"] for r in sample}
  larger = {r["id"] for r in select_for_annotation(records, 60, seed=1)}
  assert {r["id"] for r in sample} <= larger
  assert {r["id"] for r in select_for_annotation(records, 30, seed=2)} != {
      r["id"] for r in sample}
  assert select_for_annotation(records[:5], 30) == records[:5]
  # Roughly uniform: over many seeds, each half of the ids gets about half the picks.
  first_half = sum(int(r["id"][1:]) < 100 for seed in range(50)
                   for r in select_for_annotation(records, 10, seed=seed))
  assert 200 < first_half < 300


def test_load_labels_names_file_and_line(tmp_path):
  path = tmp_path / "labels.jsonl"
  good = {"id": "a", "score": 0.5, "label": 1, "annotator": "x"}
  for bad, message in [({**good, "score": 1.5}, "'score'"), ({**good, "label": 2}, "'label'"),
                       ({**good, "label": None}, "both be null"),
                       ({"id": "a", "score": 0.5}, "missing field")]:
    path.write_text(json.dumps(good | {"id": "z"}) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(AnnotationError, match=f"{path}:2: .*{message}"):
      load_labels(str(path))
  path.write_text(json.dumps(good) + "\nnot json\n")
  with pytest.raises(AnnotationError, match=f"{path}:2: invalid JSON"):
    load_labels(str(path))


def test_batch_mode_writes_the_labels_online_mode_writes(server, tmp_path):
  # 'a' never answers in the format (unlabelled either way); 7 fails inside its first
  # batch (a 500) and is asked again in a new batch
  server.responder = lambda req: ("It is a 7/10." if "area" in snippet_of(req)
                                  else answer(8 if "def " in snippet_of(req) else 2))
  LLMAnnotator(make_client(server, tmp_path / "online")).annotate(
      RECORDS, str(tmp_path / "online.jsonl"), progress=False)
  failed = set()

  def fail(req):
    if "fib" in snippet_of(req) and not failed:
      failed.add(1)
      return Status(500, "overloaded")
    return None

  server.batches.fail = fail
  client = make_client(server, tmp_path / "batch", mode="batch", batch_poll_s=0.001)
  summary = LLMAnnotator(client).annotate(RECORDS, str(tmp_path / "batch.jsonl"),
                                          progress=False)
  assert failed and summary["unlabelled"] == 1
  assert read_rows(tmp_path / "batch.jsonl") == read_rows(tmp_path / "online.jsonl")
  # the three; then 7 again with 'a's first re-ask; then 'a's second (parse_retries 2)
  assert server.batches.created == 3 and len(server.batches.lines_submitted) == 6
