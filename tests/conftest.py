"""Shared test set-up: 8 simulated CPU devices, quiet logs, random transformers models.

PHI_JAX_TEST_PLATFORM picks the backend the tests run on: 'cpu' (the default: 8
simulated host devices; Pallas kernels in interpret mode) or 'gpu' / 'tpu' (jax's
default backend is the accelerator, so the kernels are compiled for real; the CPU stays
available). bench/device_check.sh sets 'gpu' on a lent GPU machine.
"""

import os

TEST_PLATFORMS = {"cpu": "cpu", "gpu": "cuda,cpu", "tpu": "tpu,cpu"}  # -> JAX_PLATFORMS
TEST_PLATFORM = os.environ.get("PHI_JAX_TEST_PLATFORM", "cpu")
if TEST_PLATFORM not in TEST_PLATFORMS:
  raise ValueError(f"PHI_JAX_TEST_PLATFORM={TEST_PLATFORM!r}: expected one of "
                   f"{sorted(TEST_PLATFORMS)}")
# Before jax is imported anywhere: 8 host devices for mesh tests; CPU only by default.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# XLA:CPU runs every simulated device's thunks on one intra-op thread pool, sized by NPROC
# (else the core count). A collective blocks its pool thread until all devices arrive, and
# a device may have several collectives in flight; on a 2-core machine both threads can
# wait for a device that gets none, and XLA aborts the process at its rendezvous
# termination timeout. A pool larger than the devices in flight avoids that; subprocesses
# (run.py, the training drivers) inherit it.
os.environ.setdefault("NPROC", str(max(16, os.cpu_count() or 1)))
os.environ.setdefault("JAX_PLATFORMS", TEST_PLATFORMS[TEST_PLATFORM])
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

# For tests whose expectations hold on the CPU backend only (interpret-mode fallbacks,
# 'needs a GPU' errors, 8 host devices).
cpu_only = pytest.mark.skipif(TEST_PLATFORM != "cpu",
                              reason=f"expects the CPU backend (PHI_JAX_TEST_PLATFORM="
                              f"{TEST_PLATFORM})")

pytest_plugins = ("tests.fake_openai",)  # the `server` and `api_key` fixtures

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tiny pipeline on a smaller data sample with short training (the loss-goes-down check
# is in tests/phi_jax/train, the data stage's in tests/data_pipeline): the `tiny_run`
# work directory every end-to-end test shares.
SHORT_TRAINING = ("--config.train.steps=6", "--config.train.checkpoint_every=3",
                  "--config.train.eval_every=3", "--config.train.optimizer.warmup_steps=2",
                  "--config.finetune.steps=3", "--config.finetune.checkpoint_every=3",
                  "--config.finetune.eval_every=3", "--config.finetune.optimizer.warmup_steps=1",
                  "--config.data.max_files=150", "--config.data.quality.annotate=80",
                  "--config.data.quality.embed_max_len=64",
                  "--config.data.quality.n_estimators=20")
TINY_RUN_ARGS = ("--config=configs/tiny.py", "--config.model.num_layers=2",
                 "--config.sample.max_new_tokens=20", *SHORT_TRAINING)


def run_py(*args, timeout=600, env=None):
  """run.py in a subprocess, on one CPU device as on a user's laptop (`env`: more
  environment variables)."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, JAX_PLATFORMS="cpu", TRANSFORMERS_VERBOSITY="error", **(env or {}))
  env.pop("XLA_FLAGS", None)  # one CPU device, as a user's laptop
  return subprocess.run([sys.executable, os.path.join(REPO_ROOT, "run.py"), *args],
                        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def reads_log(workdir: str) -> str:
  """Where the tiny_run recorded what each node read (recipe/read_log.py)."""
  return workdir + ".reads.jsonl"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
  """A finished tiny pipeline (TINY_RUN_ARGS): (work directory, the run's result); what
  each node read is recorded in reads_log(workdir)."""
  workdir = str(tmp_path_factory.mktemp("run") / "work")
  result = run_py(*TINY_RUN_ARGS, f"--workdir={workdir}",
                  env={"PHI_JAX_RECORD_READS": reads_log(workdir)})
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, result


def make_hf_phi(directory=None, *, seed=0, **overrides):
  """A randomly initialised transformers PhiForCausalLM (saved to `directory` if given).

  overrides: transformers PhiConfig fields; defaults are a tiny 2-layer model.
  """
  import torch
  from transformers import PhiConfig, PhiForCausalLM

  fields = dict(vocab_size=101, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, partial_rotary_factor=0.5, max_position_embeddings=256,
                pad_token_id=None, bos_token_id=None, eos_token_id=None)
  fields.update(overrides)
  torch.manual_seed(seed)
  model = PhiForCausalLM(PhiConfig(**fields)).eval()
  # Non-zero biases and LayerNorm affines, so the conversion of every tensor is tested.
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name.endswith("bias") or "layernorm" in name:
        param.add_(0.1 * torch.randn_like(param))
  if directory is not None:
    model.save_pretrained(directory)
  return model


CODEGEN_TOKENIZER_TEXTS = ("def add(a, b):\n    return a + b\n",
                           "import os\n\nprint(os.getcwd())\n",
                           "class Point:\n    def __init__(self, x):\n        self.x = x\n",
                           "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n")


def make_codegen_tokenizer(vocab_size=300):
  """A small transformers CodeGenTokenizer (GPT-2 byte-level BPE, `<|endoftext|>` = 0),
  its merges trained on a few lines of Python: what a CodeGen directory stores."""
  import json

  import tokenizers
  from tokenizers import models, pre_tokenizers, trainers
  from transformers import CodeGenTokenizer

  bpe = tokenizers.Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  bpe.train_from_iterator(list(CODEGEN_TOKENIZER_TEXTS) * 10, trainer)
  model = json.loads(bpe.to_str())["model"]
  merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
  return CodeGenTokenizer(vocab=model["vocab"], merges=merges)


def make_hf_codegen(directory=None, *, seed=0, tokenizer=True, **overrides):
  """A randomly initialised transformers CodeGenForCausalLM, saved to `directory` (if
  given) with its own small CodeGenTokenizer (`make_codegen_tokenizer`) when `tokenizer`.

  overrides: transformers CodeGenConfig fields; defaults are a tiny 2-layer model with 4
  heads of 16 dims, the first 8 rotated, and a vocabulary padded past the tokenizer's
  300 tokens (as CodeGen pads 50295 to 51200).
  """
  import torch
  from transformers import CodeGenConfig, CodeGenForCausalLM

  fields = dict(vocab_size=320, n_embd=64, n_inner=128, n_layer=2, n_head=4, rotary_dim=8,
                n_positions=256, n_ctx=256, bos_token_id=0, eos_token_id=0,
                pad_token_id=None, initializer_range=0.1)
  fields.update(overrides)
  torch.manual_seed(seed)
  model = CodeGenForCausalLM(CodeGenConfig(**fields)).eval()
  # Non-zero biases and LayerNorm affines, so the conversion of every tensor is tested.
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name.endswith("bias") or ".ln_" in name:
        param.add_(0.1 * torch.randn_like(param))
  if directory is not None:
    model.save_pretrained(directory)
    if tokenizer:
      make_codegen_tokenizer().save_pretrained(directory)
  return model


def make_servable_phi(directory):
  """A random byte-vocabulary Phi saved by transformers in `directory`, with the byte-level
  tokenizer.json beside it (what `phi_jax.serve` needs); returns the directory."""
  from phi_jax.tokenizer import byte_level

  make_hf_phi(directory, vocab_size=257, initializer_range=0.1)
  byte_level().save(directory)
  return directory


@pytest.fixture
def hf_phi_dir(tmp_path):
  """Factory: (directory, torch model) of a random transformers Phi saved to tmp."""

  def factory(name="hf", **overrides):
    directory = str(tmp_path / name)
    model = make_hf_phi(directory, **overrides)
    return directory, model

  return factory


def hf_logits(model, tokens, attention_mask=None, position_ids=None):
  """fp32 numpy logits [B, T, V] of a transformers model (no grad)."""
  import numpy as np
  import torch

  kwargs = {}
  if attention_mask is not None:
    kwargs["attention_mask"] = torch.as_tensor(np.asarray(attention_mask), dtype=torch.long)
  if position_ids is not None:
    kwargs["position_ids"] = torch.as_tensor(np.asarray(position_ids), dtype=torch.long)
  with torch.no_grad():
    out = model(torch.as_tensor(np.asarray(tokens), dtype=torch.long), **kwargs)
  return out.logits.float().numpy()


_JIT_FORWARD = None


def phi_logits(model, tokens, attention_mask=None, **kwargs):
  """numpy logits of a phi_jax model through one jitted call.

  The compiled function is cached by graph definition (config) and shapes, so models
  of the same config loaded in different ways share one compilation.
  kwargs: further keyword arguments of the model's __call__ (arrays, or None).
  """
  global _JIT_FORWARD
  import jax
  import numpy as np
  from flax import nnx

  if _JIT_FORWARD is None:

    def forward(graphdef, state, tokens, attention_mask, kwargs):
      return nnx.merge(graphdef, state)(tokens, attention_mask=attention_mask, **kwargs)

    _JIT_FORWARD = jax.jit(forward, static_argnums=0)
  graphdef, state = nnx.split(model)
  mask = None if attention_mask is None else np.asarray(attention_mask, np.int32)
  return np.asarray(_JIT_FORWARD(graphdef, state, np.asarray(tokens, np.int32), mask, kwargs))


def left_pad_positions(mask):
  """transformers position_ids for a padded batch: max(cumsum(mask) - 1, 0)."""
  import numpy as np

  mask = np.asarray(mask)
  return np.maximum(np.cumsum(mask, axis=1) - 1, 0)


def random_params(config, seed=0):
  """Random phi_jax parameters (nested dict of numpy) for a PhiConfig, without an init.

  Kernels and embeddings ~ N(0, initializer_range); biases ~ N(0, 0.1); LayerNorm scales
  ~ 1 + N(0, 0.1). Much faster than `init_model` for tiny test models.
  """
  import jax
  import numpy as np
  from phi_jax.model import abstract_params

  rng = np.random.RandomState(seed)
  flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_params(config))
  leaves = []
  for path, leaf in flat:
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      value = 1.0 + 0.1 * rng.standard_normal(leaf.shape)
    elif "bias" in name:
      value = 0.1 * rng.standard_normal(leaf.shape)
    else:
      value = config.initializer_range * rng.standard_normal(leaf.shape)
    leaves.append(value.astype(leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, leaves)


def random_model(config, seed=0):
  """A phi_jax model of `config` holding `random_params(config, seed)`."""
  from phi_jax.pretrained import model_from_params

  return model_from_params(config, random_params(config, seed))
