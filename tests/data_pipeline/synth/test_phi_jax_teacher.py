"""Synthesis against the real phi_jax server on loopback (phi_jax/serve.py), through the
`openai` client: a random tiny model with the byte-level tokenizer is a teacher that
writes noise, and every one of its answers must end as exactly one rejected record
with the gate that caught it (the offline default of a tiny run)."""

import json
import os

import pytest

from data_pipeline.synth import ExerciseOptions, sample_id, sandbox_for, synthesize
from phi_jax import serve
from phi_jax.llm import LLMClient, LLMConfig
from phi_jax.tokenizer import byte_level
from tests.conftest import make_hf_phi

pytestmark = pytest.mark.usefixtures("api_key")

CFG = {"seed": 0, "textbooks": {"count": 4, "max_tokens": 12},
       "exercises": {"count": 4, "max_tokens": 12, "timeout_s": 1.0}}


@pytest.fixture(scope="module")
def phi_jax_server(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("teacher") / "hf")
  make_hf_phi(directory, vocab_size=257, initializer_range=0.1, max_position_embeddings=2048)
  byte_level().save(directory)
  model = serve.load_model(directory, dtype="float32")
  with serve.Server(model, port=0, model_name="tiny-teacher", max_batch=8,
                    chunk_size=8).start() as server:
    yield server


def test_a_random_phi_jax_teacher_is_asked_through_openai_and_every_answer_is_judged(
    phi_jax_server, tmp_path):
  client = LLMClient(LLMConfig(model="tiny-teacher", base_url=phi_jax_server.url + "/v1",
                               api_key_env="UNSET_TEACHER_KEY", max_concurrency=8,
                               temperature=1.0, seed=0, timeout_s=120.0,
                               cache_dir=str(tmp_path / "cache")))
  out = str(tmp_path / "out")
  summary = synthesize(CFG, out, client, sandbox_for(ExerciseOptions(timeout_s=1.0)),
                       progress=False)
  with open(os.path.join(out, "rejected.jsonl")) as f:
    rejected = [json.loads(line) for line in f]
  expected = {sample_id(g, 0, i) for g in ("textbooks", "exercises") for i in range(4)}
  assert {r["id"] for r in rejected} == expected and len(rejected) == 8
  # 12 random bytes-tokens: cut at max_tokens, so the first gate catches every one.
  assert {r["gate"] for r in rejected} == {"truncated"}
  assert all(r["meta"]["usage"]["completion_tokens"] == 12 for r in rejected)
  assert all(isinstance(r["raw"], str) for r in rejected)
  assert summary["sent"]["requests"] == 8 and summary["tokens"]["completion_tokens"] == 96
  assert summary["textbooks"]["accepted"] == summary["exercises"]["accepted"] == 0
  again = synthesize(CFG, out, client, sandbox_for(ExerciseOptions(timeout_s=1.0)),
                     progress=False)
  assert again["sent"]["requests"] == 0
