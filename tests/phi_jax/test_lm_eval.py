"""lm-evaluation-harness against the server: `python -m lm_eval --model local-completions`
drives `python -m phi_jax.serve` on loopback, on a loglikelihood task and a generation
task defined from local files (no hub), and its per-document results equal what phi_jax
computes directly (`sampling.score_tokens`, `phi_jax.generate`) on the same model."""

import glob
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import phi_jax
from phi_jax import sampling
from tests.conftest import REPO_ROOT, make_servable_phi

pytest.importorskip("lm_eval")

pytestmark = pytest.mark.slow  # two processes importing JAX / torch: about a minute

CONTEXT = 256  # max_position_embeddings of the conftest model
MAX_GEN = 12
UNTIL = "\n\n"
LL_DOCS = [
    {"context": "def add(a, b):\n    return", "continuation": " a + b\n"},
    {"context": "for i in range(10):", "continuation": "\n    print(i)"},
    {"context": "import", "continuation": " os"},
    {"context": "x = [1, 2, 3]\ny =", "continuation": " sum(x)"},
]
GEN_DOCS = [
    {"prompt": "def square(x):\n", "target": "    return x * x"},
    {"prompt": "# a list of numbers\nxs =", "target": " [1, 2, 3]"},
    {"prompt": "class Point:", "target": "\n    pass"},
]


def _greedy_doc(reference):
  """A doc whose continuation is the model's own greedy one (lm_eval's `acc`: is_greedy),
  of text that encodes back to the same tokens."""
  tokenizer = reference.tokenizer
  for context in ("def", "x =", "import", "class", "print(", "if", "return", "a", "#"):
    for new in (3, 2, 1):
      [out] = phi_jax.generate(reference, [context], max_new_tokens=new, eos_token_id=None)
      if out.text and tokenizer.encode(context + out.text) == tokenizer.encode(
          context) + out.tokens and not out.text[-1].isspace():
        return {"context": context, "continuation": out.text}
  raise AssertionError("no greedy continuation of whole characters")


def _write_tasks(directory, ll_docs=LL_DOCS, gen_docs=GEN_DOCS):
  """Two lm_eval task YAMLs over local jsonl files (the `json` dataset builder)."""
  paths = {}
  for name, docs in (("ll", ll_docs), ("gen", gen_docs)):
    paths[name] = os.path.join(directory, f"{name}.jsonl")
    with open(paths[name], "w") as f:
      f.writelines(json.dumps(d) + "\n" for d in docs)
  with open(os.path.join(directory, "phi_jax_ll.yaml"), "w") as f:
    f.write(textwrap.dedent(f"""\
        task: phi_jax_ll
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {paths["ll"]}
        test_split: test
        output_type: loglikelihood
        doc_to_text: "{{{{context}}}}"
        doc_to_target: "{{{{continuation}}}}"
        target_delimiter: ""
        metric_list:
          - metric: perplexity
            aggregation: perplexity
            higher_is_better: false
          - metric: acc
            aggregation: mean
            higher_is_better: true
        """))
  with open(os.path.join(directory, "phi_jax_gen.yaml"), "w") as f:
    f.write(textwrap.dedent(f"""\
        task: phi_jax_gen
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {paths["gen"]}
        test_split: test
        output_type: generate_until
        doc_to_text: "{{{{prompt}}}}"
        doc_to_target: "{{{{target}}}}"
        target_delimiter: ""
        generation_kwargs:
          until: ["{UNTIL.encode("unicode_escape").decode()}"]
          max_gen_toks: {MAX_GEN}
          do_sample: false
          temperature: 0
        metric_list:
          - metric: exact_match
            aggregation: mean
            higher_is_better: true
        """))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """The served model's directory, whose tokenizer.json and tokenizer_config.json
  `Tokenizer.save` wrote: lm_eval's huggingface tokenizer backend loads it as it is."""
  directory = make_servable_phi(str(tmp_path_factory.mktemp("lm_eval") / "hf"))
  assert os.path.isfile(os.path.join(directory, "tokenizer_config.json"))
  return directory


@pytest.fixture(scope="module")
def server_url(model_dir):
  """`python -m phi_jax.serve` on a free loopback port; its base URL."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  process = subprocess.Popen(
      [sys.executable, "-m", "phi_jax.serve", f"--checkpoint={model_dir}", "--port=0",
       "--model_name=tiny-phi", "--dtype=float32", "--max_batch=4", "--chunk_size=8"],
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  try:
    line = process.stdout.readline()  # "serving 'tiny-phi' at http://127.0.0.1:PORT/v1 ..."
    assert " at http://" in line, line
    yield line.split(" at ", 1)[1].split("/v1", 1)[0]
  finally:
    process.terminate()
    process.wait(60)


def _lm_eval(model_dir, server_url, tasks_dir, out_dir, task):
  os.makedirs(out_dir, exist_ok=True)
  env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
         "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_CACHE": os.path.join(out_dir, "cache")}
  command = [
      sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args",
      f"model=tiny-phi,base_url={server_url}/v1/completions,tokenizer_backend=huggingface,"
      f"tokenizer={model_dir},max_length={CONTEXT},num_concurrent=1,max_retries=1",
      "--tasks", task, "--include_path", tasks_dir, "--output_path", out_dir,
      "--log_samples", "--batch_size", "1"]
  result = subprocess.run(command, env=env, cwd=out_dir, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-4000:]
  [results] = glob.glob(os.path.join(out_dir, "**", "results_*.json"), recursive=True)
  [samples] = glob.glob(os.path.join(out_dir, "**", f"samples_{task}_*.jsonl"), recursive=True)
  with open(results) as f, open(samples) as g:
    return json.load(f)["results"][task], [json.loads(line) for line in g]


@pytest.fixture(scope="module")
def reference(model_dir):
  return phi_jax.from_pretrained(model_dir, dtype="float32")


def test_loglikelihood_task_equals_phi_jax(model_dir, server_url, reference, tmp_path):
  docs = LL_DOCS + [_greedy_doc(reference)]
  _write_tasks(str(tmp_path), ll_docs=docs)
  results, samples = _lm_eval(model_dir, server_url, str(tmp_path), str(tmp_path / "out"),
                              "phi_jax_ll")
  tokenizer = reference.tokenizer
  assert len(samples) == len(docs)
  want_ll, want_greedy = [], []
  for sample in sorted(samples, key=lambda s: s["doc_id"]):
    doc = docs[sample["doc_id"]]
    context, continuation = tokenizer.encode(doc["context"]), tokenizer.encode(
        doc["continuation"])
    scores = sampling.score_tokens(reference, context + continuation, k=1)
    ll = sum(scores.logprobs[len(context):])
    greedy = all(scores.top[i][0][0] == (context + continuation)[i]
                 for i in range(len(context), len(context) + len(continuation)))
    [[got_ll, got_greedy]] = sample["resps"][0]  # written as strings
    assert abs(float(got_ll) - ll) < 1e-4, (doc, sample["resps"])
    assert got_greedy == str(greedy), (doc, sample["resps"])
    want_ll.append(ll)
    want_greedy.append(greedy)
  assert any(want_greedy) and not all(want_greedy)
  assert math.isclose(results["perplexity,none"], math.exp(-np.mean(want_ll)), rel_tol=1e-4)
  assert results["acc,none"] == pytest.approx(np.mean(want_greedy))


def test_generation_task_equals_phi_jax(model_dir, server_url, reference, tmp_path):
  tokenizer = reference.tokenizer

  def greedy(prompts):
    return phi_jax.generate(reference, [tokenizer.encode(p) for p in prompts],
                            max_new_tokens=MAX_GEN, stop=[UNTIL, "<|endoftext|>"])

  # one doc whose target is the model's own answer, so exact_match counts a hit
  docs = GEN_DOCS + [{"prompt": "def", "target": greedy(["def"])[0].text}]
  _write_tasks(str(tmp_path), gen_docs=docs)
  results, samples = _lm_eval(model_dir, server_url, str(tmp_path), str(tmp_path / "out"),
                              "phi_jax_gen")
  want = greedy([d["prompt"] for d in docs])
  assert len(samples) == len(docs)
  for sample in samples:
    assert sample["resps"][0][0] == want[sample["doc_id"]].text, sample
  matches = [w.text == d["target"] for w, d in zip(want, docs)]
  assert any(matches) and results["exact_match,none"] == pytest.approx(np.mean(matches))
