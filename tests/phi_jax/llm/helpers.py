"""What the phi_jax.llm tests share: a client on the fake server, JSONL and file readers."""

import json
import os

from phi_jax.llm import LLMClient, LLMConfig
from tests.fake_openai import TEST_KEY_ENV as KEY_ENV

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
USER = [{"role": "user", "content": "Say hi"}]


def make_client(server, tmp_path=None, **fields):
  values = dict(base_url=server.url, model="fake-model", api_key_env=KEY_ENV, max_retries=3,
                timeout_s=5.0, backoff_initial_s=0.01, backoff_max_s=0.05,
                cache_dir=str(tmp_path / "cache") if tmp_path is not None else None)
  values.update(fields)
  return LLMClient(LLMConfig(**values))


def all_text_under(path) -> str:
  chunks = []
  for root, _, files in os.walk(path):
    for name in files:
      with open(os.path.join(root, name), "rb") as f:
        chunks.append(f.read().decode("utf-8", "replace"))
  return "\n".join(chunks)


def read_lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def numbered_requests(n):
  return [{"id": f"r{i}", "prompt": f"n={i}"} for i in range(n)]
