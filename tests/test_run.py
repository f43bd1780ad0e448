"""run.py end to end on the embedded default (configs/tiny.py), in subprocesses."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import conftest
from tests.conftest import REPO_ROOT


# The tiny pipeline's finished work directory (`tiny_run`), the arguments it was made
# with and the helper that runs run.py are shared by every end-to-end test (conftest).
SHORT_TRAINING = conftest.SHORT_TRAINING
run = conftest.run_py


def test_tiny_pipeline_writes_every_stage(tiny_run):
  workdir, result = tiny_run
  for stage in ("data", "synthesize", "decontaminate", "init", "pretrain", "finetune",
                "sample", "eval", "export_hf", "report"):
    marker = json.load(open(os.path.join(workdir, stage, "COMPLETE.json")))
    assert marker["stage"] == stage and marker["fingerprint"]
  assert "data stage summary" in result.stdout
  datasets = json.load(open(os.path.join(workdir, "data", "COMPLETE.json")))["summary"]["datasets"]
  # the random local teacher's samples are all rejected, so no textbooks or exercises
  assert set(datasets) == {"phi1_filtered_code", "phi1_mined_exercises"}
  synth = json.load(open(os.path.join(workdir, "synthesize", "summary.json")))
  rejected = [json.loads(l) for l in open(os.path.join(workdir, "synthesize", "rejected.jsonl"))]
  assert len(rejected) == 8 and all(r["gate"] != "teacher_error" for r in rejected), synth
  decont = json.load(open(os.path.join(workdir, "decontaminate", "summary.json")))
  assert set(decont["corpora"]) == {"phi1_filtered_code", "phi1_textbooks", "phi1_exercises",
                                    "phi1_mined_exercises"}
  # the model carries the tokenizer the data stage trained; pretraining started from init
  meta = json.load(open(os.path.join(workdir, "pretrain/checkpoints/6/metadata/metadata.json")))
  assert meta["source"].startswith("pretrain:") and meta["source"].endswith("init/checkpoints")
  meta = json.load(open(os.path.join(workdir, "init/checkpoints/0/metadata/metadata.json")))
  assert meta["model_config"]["num_layers"] == 2  # the override reached the model
  for stage, steps in (("pretrain", 6), ("finetune", 3)):  # trained, checkpointed
    meta = json.load(open(os.path.join(workdir, stage, f"checkpoints/{steps}/metadata/metadata.json")))
    assert meta["step"] == steps and meta["model_config"]["num_layers"] == 2
  lines = [json.loads(l) for l in open(os.path.join(workdir, "sample", "samples.jsonl"))]
  assert len(lines) == 2 and all(l["finish_reason"] in ("stop", "length") for l in lines)
  assert all(0 < l["tokens"] <= 20 for l in lines)
  assert "[sample]" in result.stdout
  report = json.load(open(os.path.join(workdir, "eval", "humaneval", "pass_at_k.json")))
  assert report["num_problems"] == 20 and report["overall"]["pass@1"] == 0.0  # untrained
  assert report["isolation"] in ("bwrap", "unshare", "rlimits")
  # greedy decoding on the CPU in fp32 does not depend on the batch: the determinism
  # certificate finds every re-decoded completion identical to the evaluation's (batch 32)
  record = json.load(open(os.path.join(workdir, "eval", "humaneval", "run.json")))
  cert = record["determinism"]
  assert cert["problems"] == 8 and cert["batch_size"] == 32 and cert["identical"], cert
  assert cert["device"] == "cpu" and cert["dtype"] == "float32"
  assert record["machine"]["scale"] >= 1 and report["verdicts"]["unstable"] == 0
  # memorisation attribution against the data the finetuned model saw
  attributed = json.load(open(os.path.join(workdir, "attribute", "summary.json")))
  assert attributed["training"]["stages"] == ["finetune", "pretrain"]
  assert {"phi1_filtered_code", "phi1_mined_exercises"} <= set(attributed["training"]["files"])
  entry = attributed["benchmarks"]["humaneval"]
  assert entry["passing"] == 0 and entry["near_copies"] == 0
  assert entry["clean_pass_at_k"]["overall"] == {"pass@1": 0.0}
  assert entry["records"]["phi1_filtered_code"] > 0
  # bits per byte of HumanEval's solutions at every evaluation and per kept checkpoint
  evals = [json.loads(l) for l in open(os.path.join(workdir, "pretrain", "metrics.jsonl"))]
  evals = [r for r in evals if r["kind"] == "eval"]
  assert [r["step"] for r in evals] == [0, 3, 6] and all(0 < r["bpb_humaneval"] < 20 for r in evals)
  sweep = json.load(open(os.path.join(workdir, "eval", "checkpoints.json")))
  assert [e["model"] for e in sweep] == ["finetune:3"]
  assert sweep[0]["benchmarks"]["humaneval"]["bpb"] > 0
  # the report: pass@1, bits per byte per checkpoint, the loss plot
  md = open(os.path.join(workdir, "report", "report.md")).read()
  assert "| humaneval | 20 | 0.00% |" in md and "| finetune:3 | 0.00% |" in md
  assert "### Uncertainty" in md and "95% level, 10,000 resamples" in md
  assert "8 problems vs batch 32 (cpu, float32): batch 1: 0 diverged" in md
  assert "![pretrain loss](pretrain_loss.png)" in md and "bpb_humaneval" in md
  assert os.path.isfile(os.path.join(workdir, "report", "report.html"))


def test_export_loads_in_transformers_with_same_logits(tiny_run):
  import torch
  from transformers import AutoModelForCausalLM

  import phi_jax

  workdir, _ = tiny_run
  ours = phi_jax.from_pretrained(os.path.join(workdir, "finetune", "checkpoints"), dtype="float32")
  theirs = AutoModelForCausalLM.from_pretrained(os.path.join(workdir, "export_hf", "hf")).eval()
  tokens = np.random.RandomState(0).randint(0, ours.config.vocab_size, (2, 16))
  with torch.no_grad():
    expected = theirs(torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours(tokens)), expected, atol=1e-4)
  trained = ours.tokenizer  # the data stage's byte-level BPE, stored with the model
  assert trained is not None and 257 < trained.vocab_size <= ours.config.vocab_size
  assert trained.eos_id == trained.backend.token_to_id("<|endoftext|>")


def test_second_run_skips_and_changed_inputs_rerun(tiny_run):
  workdir, _ = tiny_run
  again = run("--config=configs/tiny.py", "--config.model.num_layers=2", f"--workdir={workdir}",
              "--config.sample.max_new_tokens=20", *SHORT_TRAINING)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.count("complete, skipped") == 19  # 8 data nodes + 11 stages and steps
  changed = run("--config=configs/tiny.py", "--config.model.num_layers=2", f"--workdir={workdir}",
                "--config.sample.max_new_tokens=8", "--stages=sample,report", *SHORT_TRAINING)
  assert changed.returncode == 0, changed.stderr[-3000:]
  assert "[sample] rerun: config sample.max_new_tokens: 20 -> 8" in changed.stdout
  lines = [json.loads(l) for l in open(os.path.join(workdir, "sample", "samples.jsonl"))]
  assert all(l["tokens"] <= 8 for l in lines)


def _plan(workdir, *args):
  """{node: (action, why)} of `run.py --plan` with the tiny_run settings (and the sample
  length the workdir's sample stage last used: another test changes it)."""
  marker = os.path.join(workdir, "sample", "COMPLETE.json")
  tokens = (json.load(open(marker))["inputs"]["config"]["sample"]["max_new_tokens"]
            if os.path.exists(marker) else 20)
  result = run("--config=configs/tiny.py", "--config.model.num_layers=2", f"--workdir={workdir}",
               f"--config.sample.max_new_tokens={tokens}", *SHORT_TRAINING, *args, "--plan")
  assert result.returncode == 0, result.stderr[-3000:]
  table = result.stdout.split("\nLLM requests it would send")[0]  # the estimate follows
  rows = [line.split(None, 3) for line in table.splitlines()[2:]]
  return {row[0]: (row[2], row[3] if len(row) > 3 else "") for row in rows}


def test_plan_of_a_fresh_workdir_runs_everything(tmp_path):
  plan = _plan(tmp_path / "fresh")
  assert list(plan) == ["curate", "annotate", "embed", "classify", "exercises", "synthesize",
                        "decontaminate", "tokenizer", "datasets", "data", "init", "pretrain",
                        "finetune", "curves", "sample", "eval", "attribute", "export_hf",
                        "report"]
  assert {action for action, _ in plan.values()} == {"run"}
  assert not (tmp_path / "fresh").exists()  # --plan writes nothing


def test_plan_of_a_complete_workdir_and_of_changed_fields(tiny_run):
  workdir, _ = tiny_run
  before = {p: open(p, "rb").read() for p in _markers(workdir)}
  assert {action for action, _ in _plan(workdir).values()} == {"skip"}
  # a field only the classifier reads: it and everything downstream of it reruns, and the
  # expensive stages are refused (until --force)
  plan = _plan(workdir, "--config.data.quality.keep_threshold=0.6")
  actions = {name: action for name, (action, _) in plan.items()}
  assert actions == {"curate": "skip", "annotate": "skip", "embed": "skip", "classify": "rerun",
                     "exercises": "skip", "synthesize": "skip", "decontaminate": "rerun",
                     "tokenizer": "rerun", "datasets": "rerun",
                     "data": "rerun", "init": "rerun", "pretrain": "refuse",
                     "finetune": "refuse", "curves": "rerun", "sample": "rerun",
                     "eval": "rerun", "attribute": "rerun", "export_hf": "rerun",
                     "report": "rerun"}
  assert plan["classify"][1] == "config data.quality.keep_threshold: 0.5 -> 0.6"
  # a field only the sampler reads
  plan = _plan(workdir, "--config.sample.temperature=0.5")
  assert [n for n, (a, _) in plan.items() if a != "skip"] == ["sample", "report"]
  # a finetune field: finetune is refused, what reads its model reruns
  plan = _plan(workdir, "--config.finetune.optimizer.lr=0.002")
  assert [n for n, (a, _) in plan.items() if a != "skip"] == ["finetune", "curves", "sample",
                                                              "eval", "attribute", "export_hf",
                                                              "report"]
  assert plan["finetune"][0] == "refuse"
  plan = _plan(workdir, "--config.finetune.optimizer.lr=0.002", "--force=finetune")
  assert plan["finetune"][0] == "force"
  # the refused run changes nothing
  result = run("--config=configs/tiny.py", "--config.model.num_layers=2", f"--workdir={workdir}",
               "--config.sample.max_new_tokens=8", *SHORT_TRAINING,
               "--config.finetune.optimizer.lr=0.002")
  assert result.returncode == 2 and "--force=finetune" in result.stderr
  assert {p: open(p, "rb").read() for p in _markers(workdir)} == before


def _markers(workdir):
  return sorted(os.path.join(root, name) for root, _, names in os.walk(workdir)
                for name in names if name == "COMPLETE.json" or root.endswith("steps"))


def test_unknown_config_field_fails_clearly(tmp_path):
  result = run("--config=configs/tiny.py", "--config.model.num_layerz=2", f"--workdir={tmp_path}")
  assert result.returncode == 2
  assert "unknown config field 'model.num_layerz'" in result.stderr
  assert "num_layers" in result.stderr  # lists the fields that exist
  assert not os.listdir(tmp_path)


def test_bad_values_and_stages_fail_clearly(tmp_path):
  result = run("--config=configs/tiny.py", "--config.model.num_heads=3", f"--workdir={tmp_path}")
  assert result.returncode == 2 and "num_heads" in result.stderr and "Traceback" not in result.stderr
  result = run("--config=configs/tiny.py", "--stages=init,trian", f"--workdir={tmp_path}")
  assert result.returncode == 2 and "unknown stage 'trian'" in result.stderr
  result = run("--config=configs/tiny.py", "--stages=pretrain", f"--workdir={tmp_path}",
               "--config.init.tokenizer=byte_level", "--config.model.vocab_size=320",
               "--config.train.steps=5")  # warmup_steps 20 >= steps
  assert result.returncode == 2 and "warmup_steps" in result.stderr
  assert "Traceback" not in result.stderr
  result = run("--config=configs/tiny.py", "--stages=pretrain", f"--workdir={tmp_path}")
  assert result.returncode == 1 and "run the data stage first" in result.stderr
  assert "Traceback" not in result.stderr
  result = run("--config=configs/nope.py", f"--workdir={tmp_path}")
  assert result.returncode == 2 and "no config file" in result.stderr


def test_serve_serves_the_latest_model_until_interrupted(tiny_run):
  """`run.py --serve` with config.serve's key, queue and warm-up settings and the
  compilation cache."""
  import signal
  import urllib.error
  import urllib.request

  workdir, _ = tiny_run
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", PHI_JAX_TEST_KEY="k-123")
  env.pop("XLA_FLAGS", None)
  proc = subprocess.Popen(
      [sys.executable, os.path.join(REPO_ROOT, "run.py"), "--config=configs/tiny.py",
       "--config.model.num_layers=2", f"--workdir={workdir}", "--serve",
       "--config.serve.port=0", "--config.serve.model_name=tiny",
       "--config.serve.api_key_env=PHI_JAX_TEST_KEY", "--config.serve.max_batch=2",
       "--config.serve.warm_up_prompt_tokens=8", "--config.serve.warm_up_new_tokens=8",
       "--config.compilation_cache_dir=jax_cache"],
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    url, lines = None, []
    for line in proc.stdout:
      lines.append(line)
      if line.startswith("serving "):
        url = line.split(" at ")[1].split()[0]
        break
    assert url, proc.stderr.read()[-2000:]
    assert any(l.startswith("warmed up batch sizes 1, 2 in ") for l in lines), lines
    cache_dir = os.path.join(workdir, "jax_cache")
    assert any(f"compiled programs are kept in {cache_dir}" in l for l in lines), lines

    def call(path, body=None, key="k-123"):
      request = urllib.request.Request(
          url + path, method="POST" if body else "GET",
          headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
          data=json.dumps(body).encode() if body else None)
      return json.load(urllib.request.urlopen(request, timeout=120))

    with pytest.raises(urllib.error.HTTPError) as refused:
      call("/models", key="wrong")
    assert refused.value.code == 401
    assert [m["id"] for m in call("/models")["data"]] == ["tiny"]
    answer = call("/completions", {"prompt": "def f(", "max_tokens": 4, "temperature": 0})
    assert answer["usage"]["completion_tokens"] == 4
  finally:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
  assert proc.returncode == 0
  assert not os.path.exists(os.path.join(workdir, "serve"))  # a service, not a stage
  assert os.path.isdir(cache_dir)


def test_the_paper_config_offline_says_which_source_needs_the_network(tmp_path):
  result = run("--config=configs/phi1.py", f"--workdir={tmp_path}", "--stages=curate",
               timeout=300)
  assert result.returncode == 1, result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert "hf:bigcode/the-stack-dedup is a Hugging Face hub dataset and the hub is " \
         "unreachable" in result.stderr
  assert "point config.data.sources at local data" in result.stderr


def test_bad_values_and_paths_change_nothing_in_a_finished_workdir(tiny_run, tmp_path):
  """Each bad value is refused with one line, before any file of the run is touched."""
  from tests.files import tree_hashes
  workdir, _ = tiny_run
  snapshot = lambda: tree_hashes(workdir)
  before = snapshot()
  cases = [("--stages=pretrain", "--force=pretrain", "--config.train.steps=-5"),
           ("--stages=sample", "--config.sample.num_samples=-1"),
           ("--stages=sample", "--config.sample.top_p=0"),
           ("--stages=eval", "--config.eval.n=0"),
           ("--stages=eval", "--config.eval.timeout_s=-1"),
           ("--stages=export_hf", "--config.export_hf.dtype=int8")]
  for args in cases:
    result = run("--config=configs/tiny.py", "--config.model.num_layers=2",
                 f"--workdir={workdir}", *SHORT_TRAINING, *args)
    assert result.returncode == 2, (args, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "must be" in result.stderr, args
    assert snapshot() == before, args
  blocker = tmp_path / "file"
  blocker.write_text("x")
  result = run("--config=configs/tiny.py", f"--workdir={blocker}/work", "--stages=curate")
  assert result.returncode == 2 and "is a file, not a directory" in result.stderr


def _sigint_deliverable():
  """In the child before exec: SIGINT unblocked and at its default disposition. An
  ignored or blocked SIGINT is inherited across exec, and Python then installs no
  KeyboardInterrupt handler; whatever an earlier test in this process left, the child
  must see Ctrl-C as a terminal sends it."""
  import signal
  signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_ends_a_stage_with_one_line_and_the_rerun_resumes(tmp_path):
  import signal
  import time
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  env.pop("XLA_FLAGS", None)
  args = [sys.executable, os.path.join(REPO_ROOT, "run.py"), "--config=configs/tiny.py",
          f"--workdir={tmp_path}", "--stages=curate,annotate,embed",
          "--config.data.max_files=1500",
          # embedding the annotated sample (400) takes > 10 s: time to stop it
          "--config.data.quality.embed_max_len=512"]
  proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_deliverable)
  for line in proc.stdout:
    if line.startswith("[embed] run"):
      time.sleep(0.5)
      proc.send_signal(signal.SIGINT)
      break
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-2000:]
  assert "[embed] interrupted: kept" in out and "Run the same command again" in out
  assert "Traceback" not in err
  assert not (tmp_path / "data" / "steps" / "embed.json").exists()  # not complete
  again = subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
  assert again.returncode == 0, again.stderr[-2000:]
  assert "[annotate] complete, skipped" in again.stdout and "[embed] done" in again.stdout
