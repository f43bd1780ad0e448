"""phi_jax.llm.cache: repeated calls are free, one JSON file per key, safe under threads."""

import json
import os
import threading

import pytest

from phi_jax import llm
from tests.fake_openai import FakeOpenAI
from tests.phi_jax.llm.helpers import USER, make_client

pytestmark = pytest.mark.usefixtures("api_key")  # `server`: a FakeOpenAI (tests/fake_openai.py)


def test_cache_makes_a_repeated_call_free_across_clients_and_urls(server, tmp_path):
  first = make_client(server, tmp_path)
  assert not first.chat(USER).cached
  again = first.chat(USER)
  assert again.cached and again.text == "echo: Say hi" and server.count() == 1
  assert make_client(server, tmp_path).chat(USER).cached  # a new client, same cache_dir
  with FakeOpenAI() as elsewhere:  # the same model behind another URL: key is URL-free
    assert make_client(elsewhere, tmp_path).chat(USER).cached
    assert elsewhere.count() == 0
  assert server.count() == 1
  # What changes the answer changes the key; refresh skips the lookup.
  first.chat(USER, temperature=0.5)
  first.chat(USER, variant=1)
  first.complete("Say hi")
  make_client(server, tmp_path, model="another").chat(USER)
  assert server.count() == 5
  assert not first.chat(USER, refresh=True).cached
  assert server.count() == 6
  assert first.stats.cache_hits == 1


def test_a_cached_answer_serialises_to_the_same_bytes(server, tmp_path):
  """Outputs that record an answer's metadata (synthetic data's rejected.jsonl) must not
  depend on whether it came from the server or the cache (stored with sorted keys)."""
  client = make_client(server, tmp_path)
  fresh, cached = client.chat(USER), client.chat(USER)
  assert not fresh.cached and cached.cached
  assert list(fresh.usage) == list(cached.usage) == list(llm.client.USAGE_FIELDS)
  assert json.dumps(fresh.usage) == json.dumps(cached.usage)
  assert fresh.usage["total_tokens"] > 0


def test_cache_layout_one_json_file_per_key(server, tmp_path):
  client = make_client(server, tmp_path)
  client.chat(USER)
  files = [os.path.join(root, name) for root, _, names in os.walk(tmp_path / "cache")
           for name in names]
  assert len(files) == 1
  key = llm.request_key("chat", "fake-model", USER, {"temperature": 0.0, "max_tokens": 1024})
  assert files[0] == os.path.join(tmp_path, "cache", key[:2], key + ".json")
  with open(files[0]) as f:
    entry = json.load(f)
  assert entry["response"] == {"text": "echo: Say hi", "finish_reason": "stop",
                               "usage": client.chat(USER).usage}
  assert entry["request"]["inputs"] == USER and entry["model"] == "fake-model"


def test_cache_is_safe_for_concurrent_threads(server, tmp_path):
  client = make_client(server, tmp_path, max_concurrency=8)
  prompts = [[{"role": "user", "content": f"q{i % 10}"}] for i in range(60)]
  threads = [threading.Thread(target=client.chat, args=(p,)) for p in prompts]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  again = [client.chat(p) for p in prompts[:10]]
  assert all(r.cached and r.text == f"echo: q{i}" for i, r in enumerate(again))
  assert not [n for _, _, names in os.walk(tmp_path / "cache") for n in names if ".tmp-" in n]


def test_another_model_behind_the_same_name_is_asked_afresh(server, api_key, tmp_path):
  """The cache key holds the answering model's identity (the local teacher's checkpoint
  fingerprint), not only its name: a cached answer of one model never answers for
  another served under the same name."""
  from phi_jax.llm import LLMClient, LLMConfig
  from tests.fake_openai import TEST_KEY_ENV
  server.responder = lambda req: f"answer {len(server.requests)}"

  def ask(identity: str) -> str:
    config = LLMConfig(model="phi-jax-local-teacher", base_url=server.url,
                       api_key_env=TEST_KEY_ENV, cache_dir=str(tmp_path / "cache"),
                       model_identity=identity)
    with LLMClient(config) as client:
      return client.chat([{"role": "user", "content": "hi"}]).text

  first = ask("random-seed-0")
  assert ask("random-seed-0") == first and server.count() == 1  # cached
  assert ask("checkpoint-abc") != first and server.count() == 2  # asked afresh
  assert ask("random-seed-0") == first and server.count() == 2
