"""data_pipeline.synth.generate end to end against a scripted OpenAI-compatible teacher
(tests/fake_openai.py), through a fault-injecting proxy, across a SIGKILL, and into the
Record / Exercise files the TFDS/SeqIO path reads."""

import ast
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from data_pipeline.records import Exercise, Record, read_records
from data_pipeline.synth import ExerciseOptions, prompts, sample_id, sandbox_for, synthesize
from data_pipeline.synth import topics
from phi_jax.llm import LLMClient, LLMConfig
from tests.data_pipeline.synth import teacher
from tests.data_pipeline.synth.fault_proxy import FAULTS, NO_CODE_TEXT, FaultProxy
from tests.fake_openai import FakeOpenAI, Status
from tests.fake_openai import TEST_KEY_ENV as KEY_ENV

pytestmark = pytest.mark.usefixtures("api_key")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
SEED = 11
# A good exercise runs in ~0.2 s; the limit leaves room for a loaded machine.
CFG = {"seed": SEED, "textbooks": {"count": 12}, "exercises": {"count": 24, "timeout_s": 2.0}}
OUTPUTS = ("textbooks.jsonl", "exercises.jsonl", "rejected.jsonl", "diversity.json",
           "diversity.md")
TEXTBOOK_GATE = {"good": None, "bad_syntax": "syntax", "no_code": "no_code",
                 "truncated": "truncated"}
EXERCISE_GATE = {"good": None, "bare_code": None, "doctest_fail": "doctest",
                 "assert_fail": "asserts", "infinite_loop": "execution",
                 "no_code": "no_code", "two_functions": "structure"}


@pytest.fixture(scope="module")
def sandbox():
  return sandbox_for(ExerciseOptions(timeout_s=2.0))


@pytest.fixture
def scripted():
  with FakeOpenAI(teacher.respond) as server:
    yield server


def make_client(url, cache_dir, **fields):
  values = dict(model="teacher", base_url=url, api_key_env=KEY_ENV, max_concurrency=4,
                max_retries=4, timeout_s=5.0, backoff_initial_s=0.01, backoff_max_s=0.1,
                temperature=0.7, cache_dir=str(cache_dir))
  values.update(fields)
  return LLMClient(LLMConfig(**values))


def kinds(cfg):
  """{id: the scripted teacher's kind of answer} of every request of `cfg`."""
  found = {}
  for generator in topics.GENERATORS:
    for index in range(cfg[generator]["count"]):
      messages = prompts.messages(generator, topics.draw(generator, cfg["seed"], index))
      found[sample_id(generator, cfg["seed"], index)] = teacher.kind_of(messages)
  return found


def read_rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def outputs(out_dir):
  files = {}
  for name in OUTPUTS:
    with open(os.path.join(out_dir, name), "rb") as f:
      files[name] = f.read()
  return files


def ids_of(out_dir):
  return [row["id"] for name in ("textbooks.jsonl", "exercises.jsonl", "rejected.jsonl")
          for row in read_rows(os.path.join(out_dir, name))]


def test_end_to_end_every_request_ends_as_one_record_judged_by_its_gates(
    scripted, sandbox, tmp_path, capsys):
  expected = kinds(CFG)
  assert {"good", "doctest_fail", "assert_fail", "infinite_loop", "escape",
          "bad_syntax", "no_code"} <= set(expected.values())  # the seed covers the cases
  out = str(tmp_path / "out")
  client = make_client(scripted.url, tmp_path / "cache")
  summary = synthesize(CFG, out, client, sandbox, progress=False)
  err = capsys.readouterr().err
  assert "expecting ~" in err and "only as good as the teacher" in err
  assert f"this run sent {12 + 24} request(s)" in err

  ids = ids_of(out)
  assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids))  # exactly one each
  rejected = {row["id"]: row for row in read_rows(os.path.join(out, "rejected.jsonl"))}
  textbooks = {r.id: r for r in read_records(os.path.join(out, "textbooks.jsonl"), Record)}
  exercises = {r.id: r for r in read_records(os.path.join(out, "exercises.jsonl"), Exercise)}
  for sample, kind in expected.items():
    gate = (TEXTBOOK_GATE if "textbooks" in sample else EXERCISE_GATE).get(kind)
    if kind == "escape":
      assert rejected[sample]["gate"] in ("doctest", "execution"), sample
    elif gate is None:
      assert sample in textbooks or sample in exercises, (sample, rejected.get(sample))
    else:
      assert rejected[sample]["gate"] == gate, (sample, kind, rejected.get(sample))
      assert rejected[sample]["raw"] is not None
  assert any("Expected:" in r["reason"] for r in rejected.values() if r["gate"] == "doctest")

  for sample, exercise in exercises.items():  # the CodeExercises split, and the seed values
    index = int(sample.rsplit("-", 1)[1])
    topic = topics.draw("exercises", SEED, index)
    assert exercise.meta["topic"] == topic and exercise.meta["seed"] == SEED
    assert exercise.meta["function"] == topic["function_name"]
    module = ast.parse(exercise.prompt + exercise.solution)
    assert [type(node) for node in module.body] == [ast.FunctionDef]
    assert exercise.prompt.startswith(f"def {topic['function_name']}(")
    assert exercise.meta["doctests"] == 2 and len(exercise.meta["asserts"]) == 3
  for record in textbooks.values():
    assert "```python" in record.text and record.meta["generator"] == "textbooks"

  assert summary["textbooks"]["accepted"] == len(textbooks)
  assert summary["exercises"]["accepted"] == len(exercises)
  assert summary["sent"]["requests"] == 36 and summary["tokens"]["completion_tokens"] > 0
  report = json.load(open(os.path.join(out, "diversity.json")))
  assert report["generators"]["exercises"]["asked_name_used"] == 1.0
  assert report["generators"]["textbooks"]["distinct_openings"] == len(textbooks)

  # A complete rerun sends nothing, runs no exercise again, rewrites the same files.
  before, sent = outputs(out), scripted.count()
  verdicts = read_rows(os.path.join(out, "raw", "verdicts.jsonl"))
  assert len(verdicts) == sum(k in ("good", "bare_code", "doctest_fail", "assert_fail",
                                    "infinite_loop", "escape")
                              for s, k in expected.items() if "exercises" in s)
  again = synthesize(CFG, out, client, sandbox, progress=False)
  assert scripted.count() == sent and again["sent"]["requests"] == 0
  assert outputs(out) == before
  assert read_rows(os.path.join(out, "raw", "verdicts.jsonl")) == verdicts

  # Against curated data: a sample equal to a curated document is a duplicate; the
  # answers come from the cache (nothing is sent).
  first_book, first_exercise = sorted(textbooks)[0], sorted(exercises)[0]
  curated = tmp_path / "curated.jsonl"
  with open(curated, "w") as f:
    f.write(json.dumps(textbooks[first_book].to_json()) + "\n")
    f.write(json.dumps(exercises[first_exercise].to_json()) + "\n")
  fresh = str(tmp_path / "fresh")
  synthesize(CFG, fresh, client, sandbox, curated_paths=[str(curated)], progress=False)
  assert scripted.count() == sent
  dups = {r["id"]: r for r in read_rows(os.path.join(fresh, "rejected.jsonl"))
          if r["gate"] == "duplicate"}
  assert set(dups) == {first_book, first_exercise}
  assert dups[first_book]["reason"] == f"exact duplicate of curated {first_book}"


def test_faults_between_client_and_teacher_still_give_one_record_per_request(
    scripted, sandbox, tmp_path):
  cfg = {"seed": 5, "textbooks": {"count": 10}, "exercises": {"count": 12, "timeout_s": 2.0}}
  with FaultProxy(scripted.url, slow_s=0.8) as proxy:
    client = make_client(proxy.url, tmp_path / "cache", timeout_s=0.5, max_retries=3)
    summary = synthesize(cfg, str(tmp_path / "out"), client, sandbox, progress=False)
    assert set(proxy.injected) == set(FAULTS)  # every kind of fault happened
    ids = ids_of(tmp_path / "out")
    assert sorted(ids) == sorted(kinds(cfg)) and len(ids) == len(set(ids))
    rejected = {r["id"]: r for r in read_rows(tmp_path / "out" / "rejected.jsonl")}
    no_code = [r for r in rejected.values() if r["raw"] == NO_CODE_TEXT]
    assert len(no_code) == proxy.injected["no_code"]
    assert all(r["gate"] == "no_code" for r in no_code)
    assert not any(r["gate"] == "teacher_error" for r in rejected.values())
    assert proxy.count() == 22 + sum(v for k, v in proxy.injected.items()
                                     if k not in ("pass", "no_code"))
    assert summary["sent"]["requests"] == proxy.count()
    sent = proxy.count()
    synthesize(cfg, str(tmp_path / "out"), client, sandbox, progress=False)
    assert proxy.count() == sent  # the rerun sends nothing


def test_exhausted_retries_become_a_rejected_record_retried_only_with_force(
    scripted, tmp_path):
  cfg = {"seed": 2, "textbooks": {"count": 4}, "exercises": {"count": 0}}
  broken = prompts.messages("textbooks", topics.draw("textbooks", 2, 1))[1]["content"]
  scripted.responder = lambda r: (Status(503, "teacher overloaded") if r.user_text == broken
                                  else teacher.respond(r))
  client = make_client(scripted.url, tmp_path / "cache", max_retries=1)
  out = str(tmp_path / "out")
  synthesize(cfg, out, client, progress=False)
  (failed,) = [r for r in read_rows(os.path.join(out, "rejected.jsonl"))
               if r["gate"] == "teacher_error"]
  assert failed["id"] == sample_id("textbooks", 2, 1) and failed["raw"] is None
  assert "HTTP 503: teacher overloaded" in failed["reason"]
  assert len(ids_of(out)) == 4
  sent = scripted.count()
  synthesize(cfg, out, client, progress=False)
  assert scripted.count() == sent  # final until forced
  scripted.responder = teacher.respond
  synthesize(cfg, out, client, force=True, progress=False)
  assert scripted.count() == sent + 1  # only the failed one is asked again
  assert failed["id"] not in {r["id"] for r in read_rows(os.path.join(out, "rejected.jsonl"))
                              if r["gate"] == "teacher_error"}


def test_answers_of_another_teacher_are_refused_before_anything_is_sent(scripted, tmp_path):
  cfg = {"seed": 1, "textbooks": {"count": 3}, "exercises": {"count": 0}}
  out = str(tmp_path / "out")
  synthesize(cfg, out, make_client(scripted.url, tmp_path / "cache"), progress=False)
  other = make_client(scripted.url, tmp_path / "cache", model="other-teacher")
  sent = scripted.count()
  with pytest.raises(ValueError, match=r"3 answer\(s\) in .*textbooks.jsonl were asked with "
                     "another teacher model"):
    synthesize(cfg, out, other, progress=False)
  assert scripted.count() == sent
  synthesize(cfg, out, other, force=True, progress=False)
  assert scripted.count() == sent + 3
  assert all(r["meta"]["teacher"] == "other-teacher"
             for r in read_rows(os.path.join(out, "textbooks.jsonl")))


def test_config_errors_name_the_field(scripted, tmp_path):
  client = make_client(scripted.url, tmp_path / "cache")
  with pytest.raises(ValueError, match=r"config.synth.textbooks: unknown field\(s\) \['cuont'\]"):
    synthesize({"textbooks": {"cuont": 3}}, str(tmp_path), client)
  with pytest.raises(ValueError, match=r"config.synth.near_dup_threshold = 1.5"):
    synthesize({"near_dup_threshold": 1.5}, str(tmp_path), client)
  with pytest.raises(ValueError, match="needs a sandbox"):
    synthesize({"exercises": {"count": 1}}, str(tmp_path), client)
  assert scripted.count() == 0


_KILLED_RUN = textwrap.dedent("""
    import json, sys
    from data_pipeline.synth import ExerciseOptions, sandbox_for, synthesize
    from phi_jax.llm import LLMClient, LLMConfig
    url, out, cache, cfg = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    client = LLMClient(LLMConfig(model="teacher", base_url=url, api_key_env="{key_env}",
                                 max_concurrency=2, temperature=0.7, cache_dir=cache))
    synthesize(cfg, out, client, sandbox_for(ExerciseOptions(timeout_s=5.0)), progress=False)
""")


def test_a_run_killed_with_sigkill_and_restarted_ends_with_the_same_files(tmp_path):
  # No infinite loops here: a verdict decided by a time limit could differ between the
  # two runs on a loaded machine; what is compared is the resumption.
  cfg = {"seed": 4, "textbooks": {"count": 16}, "exercises": {"count": 16, "timeout_s": 5.0}}
  # While `held` is clear, answers after the 8th of the killed run wait for it: the kill
  # lands with 5 to 8 textbooks written, however slow the machine.
  held, answered = threading.Event(), itertools.count()

  def respond(request):
    if not held.is_set() and next(answered) >= 8:
      held.wait(120)
    return teacher.respond(request, avoid=("infinite_loop",))

  with FakeOpenAI(respond) as server:
    reference = str(tmp_path / "reference")
    held.set()
    synthesize(cfg, reference, make_client(server.url, tmp_path / "cache_a"),
               sandbox_for(ExerciseOptions(timeout_s=5.0)), progress=False)
    held.clear()
    out, cache = str(tmp_path / "killed"), str(tmp_path / "cache_b")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN.format(key_env=KEY_ENV),
                             server.url, out, cache, json.dumps(cfg)], env=env, cwd=REPO_ROOT,
                            stderr=subprocess.DEVNULL)
    raw = os.path.join(out, "raw", "textbooks.jsonl")
    try:
      deadline = time.monotonic() + 60
      while time.monotonic() < deadline and proc.poll() is None:
        if os.path.exists(raw) and len(read_rows(raw)) >= 5:
          break
        time.sleep(0.01)
      proc.send_signal(signal.SIGKILL)
    finally:
      proc.wait()
      held.set()
    assert 5 <= len(read_rows(raw)) <= 8, "the run was not killed mid-way"
    assert not os.path.exists(os.path.join(out, "textbooks.jsonl"))  # nothing looks done
    with open(raw, "a") as f:
      f.write('{"id": "synth-textbooks-s4-0000015", "raw": "half a li')  # a torn write
    sent = server.count()
    synthesize(cfg, out, make_client(server.url, cache),
               sandbox_for(ExerciseOptions(timeout_s=5.0)), progress=False)
    assert server.count() - sent <= 32 - 5
  assert outputs(out) == outputs(reference)


def test_the_base_config_section_builds_the_teacher_and_the_synth_config():
  from configs import base  # pylint: disable=g-import-not-at-top
  from data_pipeline.synth import SynthConfig  # pylint: disable=g-import-not-at-top
  config = base.get_config()
  synth = SynthConfig.from_mapping(config.synth)
  assert synth.textbooks.count > 0 and synth.exercises.count > 0
  config.synth.teacher.model = "gpt-4o-mini"
  synth = SynthConfig.from_mapping(config.synth)
  # the teacher is an LLM client of config.llm's schema, with the teacher's defaults
  assert set(config.synth.teacher) == set(config.llm)
  assert isinstance(synth.teacher, LLMConfig) and synth.teacher.model == "gpt-4o-mini"
  assert (synth.teacher.temperature, synth.teacher.top_p) == (1.0, 0.95)
