"""Tests of importing and exporting transformers checkpoints (hf_convert, hf_io, convert)."""

import json
import os
import re
import shutil
import stat
import subprocess
import sys

import huggingface_hub
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file

import phi_jax
from phi_jax import checkpoint, convert, hf_convert, hf_io
from phi_jax.config import ConfigError
from phi_jax.pretrained import params_of
from phi_jax.tokenizer import byte_level
from tests.conftest import REPO_ROOT, hf_logits, make_hf_phi, phi_logits
from tests.files import tree_hashes, truncate_item_files

INIT = 0.1  # see test_model.py: makes the logits sensitive to every conversion detail
ATOL = 1e-4
NUM_LAYERS = 2


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """(directory, torch model, tokens, reference logits) of one random transformers Phi."""
  directory = str(tmp_path_factory.mktemp("reference") / "hf")
  hf = make_hf_phi(directory, initializer_range=INIT, num_hidden_layers=NUM_LAYERS)
  tokens = np.random.RandomState(0).randint(0, hf.config.vocab_size, (2, 11))
  return directory, hf, tokens, hf_logits(hf, tokens)


def state_dict(hf):
  return {name: tensor.detach().clone() for name, tensor in hf.state_dict().items()}


def assert_logits_match(path, reference, atol=ATOL, **overrides):
  _, _, tokens, want = reference
  model = phi_jax.from_pretrained(path, dtype="float32", **overrides)
  np.testing.assert_allclose(phi_logits(model, tokens), want, atol=atol, rtol=0)
  return model


def write_config(directory, config: dict):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f)


def test_reference_logits_are_sensitive(reference):
  """A conversion error of the usual kinds would exceed the tolerance by far."""
  directory, _, tokens, want = reference
  model = phi_jax.from_pretrained(directory, dtype="float32")
  params = params_of(model)
  # erf gelu and its tanh approximation differ by < 1e-3, so that margin is smaller.
  for changes, margin in ((dict(rotary_dim=0), 100), (dict(rope_base=100.0), 100),
                          (dict(activation="gelu"), 3)):
    wrong = phi_jax.model_from_params(model.config.replace(**changes), params)
    assert np.abs(phi_logits(wrong, tokens) - want).max() > margin * ATOL, changes
  swapped = dict(params)
  swapped["blocks"] = {**params["blocks"], "attn": {**params["blocks"]["attn"]}}
  attn = swapped["blocks"]["attn"]
  attn["q_proj"], attn["k_proj"] = attn["k_proj"], attn["q_proj"]
  wrong = phi_jax.model_from_params(model.config, swapped)
  assert np.abs(phi_logits(wrong, tokens) - want).max() > 100 * ATOL


# ---------------------------------------------------------------------- legacy names


def to_mixformer(tensors, num_layers):
  """transformers names -> microsoft 'phi-msft' names (fused Wqkv, lm_head.ln/linear)."""
  out = {"transformer.embd.wte.weight": tensors["model.embed_tokens.weight"]}
  for i in range(num_layers):
    src, dst = f"model.layers.{i}.", f"transformer.h.{i}."
    for kind in ("weight", "bias"):
      out[dst + "ln." + kind] = tensors[src + "input_layernorm." + kind]
      out[dst + "mixer.Wqkv." + kind] = torch.cat(
          [tensors[src + f"self_attn.{p}_proj.{kind}"] for p in "qkv"], dim=0)
      out[dst + "mixer.out_proj." + kind] = tensors[src + "self_attn.dense." + kind]
      out[dst + "mlp.fc1." + kind] = tensors[src + "mlp.fc1." + kind]
      out[dst + "mlp.fc2." + kind] = tensors[src + "mlp.fc2." + kind]
    out[dst + "mixer.rotary_emb.inv_freq"] = torch.arange(4, dtype=torch.float32)  # buffer
  for kind in ("weight", "bias"):
    out["lm_head.ln." + kind] = tensors["model.final_layernorm." + kind]
    out["lm_head.linear." + kind] = tensors["lm_head." + kind]
  return out


def to_sequential(mixformer, num_layers):
  """phi-msft names -> the older MixFormerSequential 'layers.N.*' names."""
  out = {}
  for name, tensor in mixformer.items():
    if name.startswith("transformer.embd."):
      out["layers.0." + name[len("transformer.embd."):]] = tensor
    elif name.startswith("transformer.h."):
      index, rest = name[len("transformer.h."):].split(".", 1)
      out[f"layers.{int(index) + 1}.{rest}"] = tensor
    else:
      assert name.startswith("lm_head.")
      out[f"layers.{num_layers + 1}.{name[len('lm_head.'):]}"] = tensor
  return out


def legacy_config(hf_config, model_type):
  config = dict(model_type=model_type, n_embd=hf_config.hidden_size,
                n_layer=hf_config.num_hidden_layers, n_head=hf_config.num_attention_heads,
                n_inner=hf_config.intermediate_size, n_positions=256,
                vocab_size=hf_config.vocab_size, layer_norm_epsilon=1e-5,
                activation_function="gelu_new")
  rotary_dim = hf_config.hidden_size // hf_config.num_attention_heads // 2
  if model_type == "phi-msft":
    config["rotary_dim"] = rotary_dim
  else:  # MixFormerSequential kept it in the mixer's architecture section
    config["architecture"] = {"block_cls": "parallel", "mixer": {"rotary_dim": rotary_dim}}
  return config


@pytest.mark.parametrize("naming, model_type, file_format", [
    ("mixformer", "phi-msft", "safetensors"),
    ("sequential", "mixformer-sequential", "bin"),
])
def test_legacy_mixformer_checkpoints(reference, tmp_path, naming, model_type, file_format):
  _, hf, _, _ = reference
  tensors = to_mixformer(state_dict(hf), NUM_LAYERS)
  if naming == "sequential":
    tensors = to_sequential(tensors, NUM_LAYERS)
    assert "layers.0.wte.weight" in tensors and f"layers.{NUM_LAYERS + 1}.linear.bias" in tensors
  directory = str(tmp_path / naming)
  write_config(directory, legacy_config(hf.config, model_type))
  if file_format == "safetensors":
    save_file(tensors, os.path.join(directory, "model.safetensors"))
  else:
    torch.save(tensors, os.path.join(directory, "pytorch_model.bin"))
  model = assert_logits_match(directory, reference)
  assert model.config.rotary_dim == hf.config.hidden_size // hf.config.num_attention_heads // 2
  assert model.config.mlp_dim == hf.config.intermediate_size


def test_normalize_names_splits_fused_qkv(reference):
  _, hf, _, _ = reference
  tensors = {k: v.numpy() for k, v in state_dict(hf).items()}
  legacy = {k: v.numpy() for k, v in to_mixformer(state_dict(hf), NUM_LAYERS).items()}
  normalized = hf_convert.normalize_names(legacy)
  assert sorted(normalized) == sorted(tensors)
  for name, value in tensors.items():
    np.testing.assert_array_equal(normalized[name], value, err_msg=name)
  with pytest.raises(ValueError, match="Wqkv"):
    hf_convert.normalize_names({"transformer.h.0.mixer.Wqkv.bias": np.zeros(10)})


# ---------------------------------------------------------------------- file formats


def test_sharded_safetensors(reference, tmp_path):
  _, hf, _, _ = reference
  directory = str(tmp_path / "sharded")
  hf.save_pretrained(directory, max_shard_size="100KB")
  shards = [f for f in os.listdir(directory) if f.endswith(".safetensors")]
  assert len(shards) > 1 and os.path.isfile(os.path.join(directory, hf_io.SAFETENSORS_INDEX))
  assert_logits_match(directory, reference)


def test_pytorch_bin_single_and_sharded(reference, tmp_path):
  _, hf, _, _ = reference
  tensors = state_dict(hf)
  single = str(tmp_path / "single")
  hf.config.save_pretrained(single)
  torch.save(tensors, os.path.join(single, "pytorch_model.bin"))
  assert_logits_match(single, reference)

  sharded = str(tmp_path / "sharded")
  hf.config.save_pretrained(sharded)
  names = sorted(tensors)
  weight_map = {}
  for i, part in enumerate(np.array_split(np.arange(len(names)), 3)):
    filename = f"pytorch_model-{i + 1:05d}-of-00003.bin"
    torch.save({names[j]: tensors[names[j]] for j in part}, os.path.join(sharded, filename))
    weight_map.update({names[j]: filename for j in part})
  with open(os.path.join(sharded, hf_io.TORCH_INDEX), "w") as f:
    json.dump({"metadata": {}, "weight_map": weight_map}, f)
  assert_logits_match(sharded, reference)
  # A shard named by the index but absent is reported by name.
  os.remove(os.path.join(sharded, "pytorch_model-00002-of-00003.bin"))
  with pytest.raises(FileNotFoundError, match="pytorch_model-00002-of-00003.bin"):
    phi_jax.from_pretrained(sharded)


def test_pytorch_bin_legacy_serialization(reference, tmp_path):
  """Files written before torch 1.6 (not zip archives, so not memory-mappable)."""
  _, hf, _, _ = reference
  directory = str(tmp_path / "old")
  hf.config.save_pretrained(directory)
  torch.save(state_dict(hf), os.path.join(directory, "pytorch_model.bin"),
             _use_new_zipfile_serialization=False)
  assert_logits_match(directory, reference)


def test_pytorch_bin_bfloat16(reference, tmp_path):
  _, hf, tokens, _ = reference
  tensors = {k: v.to(torch.bfloat16) for k, v in state_dict(hf).items()}
  directory = str(tmp_path / "bf16")
  hf.config.save_pretrained(directory)
  torch.save(tensors, os.path.join(directory, "pytorch_model.bin"))
  # Reference: the transformers model with the same bf16-rounded weights, in fp32.
  rounded = make_hf_phi(initializer_range=INIT, num_hidden_layers=NUM_LAYERS)
  rounded.load_state_dict({k: v.float() for k, v in tensors.items()})
  model = phi_jax.from_pretrained(directory, dtype="float32")
  np.testing.assert_allclose(phi_logits(model, tokens), hf_logits(rounded, tokens),
                             atol=ATOL, rtol=0)


# ---------------------------------------------------------------------- export


def assert_transformers_loads(directory, reference, atol=ATOL):
  _, hf, tokens, want = reference
  loaded = transformers.PhiForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
  np.testing.assert_allclose(hf_logits(loaded, tokens), want, atol=atol, rtol=0)
  return loaded


def test_export_round_trip(reference, tmp_path):
  directory, hf, _, _ = reference
  model = phi_jax.from_pretrained(directory, dtype="float32")
  out = convert.export_hf(params_of(model), model.config, str(tmp_path / "export"),
                          max_shard_bytes=100_000)
  assert os.path.isfile(os.path.join(out, hf_io.SAFETENSORS_INDEX))  # sharded
  assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]  # temporary dir renamed
  loaded = assert_transformers_loads(out, reference)
  # fp32 conversion is exact: every tensor comes back bit for bit.
  original = hf.state_dict()
  for name, tensor in loaded.state_dict().items():
    torch.testing.assert_close(tensor, original[name], rtol=0, atol=0, msg=name)
  with pytest.raises(FileExistsError):
    convert.export_hf(params_of(model), model.config, out)
  convert.export_hf(params_of(model), model.config, out, overwrite=True)
  with pytest.raises(ValueError, match="dtype"):
    convert.export_hf(params_of(model), model.config, str(tmp_path / "x"), dtype="int8")


def test_export_is_readable_by_other_users(reference, tmp_path):
  """The export gets the umask's modes (0755 / 0644 under umask 022), not mkdtemp's 0700."""
  directory = reference[0]
  model = phi_jax.from_pretrained(directory, dtype="float32")
  old = os.umask(0o022)
  try:
    out = convert.export_hf(params_of(model), model.config, str(tmp_path / "export"),
                            tokenizer=byte_level())
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(out).st_mode) == 0o755
  for name in os.listdir(out):
    assert stat.S_IMODE(os.stat(os.path.join(out, name)).st_mode) == 0o644, name
  assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(os.listdir(out))
  assert_transformers_loads(out, reference)


def test_export_bfloat16(reference, tmp_path):
  directory, hf, _, want = reference
  model = phi_jax.from_pretrained(directory, dtype="float32")
  out = convert.export_hf(params_of(model), model.config, str(tmp_path / "bf16"),
                          dtype="bfloat16")
  with safe_open(os.path.join(out, hf_io.SAFETENSORS_SINGLE), framework="np") as f:
    embed = f.get_tensor("model.embed_tokens.weight")
  assert embed.dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(
      embed, hf.state_dict()["model.embed_tokens.weight"].numpy().astype(ml_dtypes.bfloat16))
  assert hf_io.read_json(os.path.join(out, "config.json"))["torch_dtype"] == "bfloat16"
  assert_transformers_loads(out, reference, atol=0.05 * np.abs(want).max())
  # phi_jax reads bf16 safetensors back: the weights are the bf16-rounded originals.
  reloaded = phi_jax.from_pretrained(out, dtype="float32")
  np.testing.assert_array_equal(np.asarray(params_of(reloaded)["embed"]),
                                embed.astype(np.float32))


def test_orbax_round_trip(reference, tmp_path):
  directory = reference[0]
  # A copy of the reference directory with a tokenizer, which must travel along.
  source = str(tmp_path / "hf")
  os.makedirs(source)
  for name in os.listdir(directory):
    os.symlink(os.path.join(directory, name), os.path.join(source, name))
  tokenizer = byte_level()
  tokenizer.save(source)

  ckpt = str(tmp_path / "ckpt")
  step_dir = convert.hf_to_orbax(source, ckpt)
  assert step_dir == os.path.join(ckpt, "0") and checkpoint.steps(ckpt) == [0]
  assert checkpoint.read_metadata(ckpt)["source"] == f"transformers:{source}"
  model = assert_logits_match(ckpt, reference)
  assert model.tokenizer.encode("def f(x):") == tokenizer.encode("def f(x):")
  with pytest.raises(FileExistsError, match="already holds"):
    convert.hf_to_orbax(source, ckpt)

  out = convert.orbax_to_hf(ckpt, str(tmp_path / "exported"))
  assert_transformers_loads(out, reference)
  config = hf_io.read_json(os.path.join(out, "config.json"))
  assert config["eos_token_id"] == tokenizer.eos_id == 256
  assert hf_io.read_json(os.path.join(out, "generation_config.json"))["eos_token_id"] == 256
  exported_tokenizer = phi_jax.Tokenizer.from_dir(out)
  assert exported_tokenizer.encode("print('hé')") == tokenizer.encode("print('hé')")
  # transformers' own tokenizer loader reads the exported tokenizer.json too.
  fast = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(out, "tokenizer.json"))
  assert fast.encode("x = 1") == tokenizer.encode("x = 1")


def _run_cli(*args):
  return subprocess.run([sys.executable, "-m", "phi_jax.convert", *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


def test_cli(reference, tmp_path):
  directory = reference[0]
  ckpt, out = str(tmp_path / "ckpt"), str(tmp_path / "out")
  result = _run_cli("hf-to-orbax", "--hf_dir", directory, "--out", ckpt)
  assert result.returncode == 0, result.stderr
  assert checkpoint.steps(ckpt) == [0]
  result = _run_cli("orbax-to-hf", "--checkpoint", ckpt, "--out", out, "--dtype", "float32")
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().endswith(out)
  assert_transformers_loads(out, reference)


@pytest.mark.parametrize("args, message", [
    ((), "usage"),
    (("frobnicate", "--out", "x"), "usage"),
    (("hf-to-orbax", "--out", "x"), "--hf_dir"),
])
def test_cli_bad_usage(tmp_path, args, message):
  result = _run_cli(*args)
  assert result.returncode != 0
  assert message in result.stderr + result.stdout
  assert not os.path.exists(os.path.join(REPO_ROOT, "x"))


def test_cli_refuses_bad_paths_and_changes_nothing(reference, tmp_path):
  directory = reference[0]
  existing = tmp_path / "existing"
  existing.mkdir()
  (existing / "keep.txt").write_text("keep")
  a_file = tmp_path / "file"
  a_file.write_text("x")
  before = tree_hashes(tmp_path)
  for args, message in [
      (("hf-to-orbax", f"--hf_dir={tmp_path / 'missing'}", f"--out={tmp_path / 'o'}"),
       f"--hf_dir {tmp_path / 'missing'} does not exist"),
      (("hf-to-orbax", f"--hf_dir={a_file}", f"--out={tmp_path / 'o'}"),
       f"--hf_dir {a_file} is not a directory"),
      (("hf-to-orbax", f"--hf_dir={directory}", f"--out={a_file / 'o'}"),
       f"{a_file} is a file, not a directory"),
      (("orbax-to-hf", f"--checkpoint={directory}", f"--out={tmp_path / 'o'}"),
       "is not an Orbax checkpoint"),
      (("orbax-to-hf", f"--checkpoint={existing}", "--out=o", "--dtype=int8"),
       "flag --dtype=int8"),
  ]:
    result = _run_cli(*args)
    assert result.returncode == 2, (args, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert message in lines[0] and "nothing was changed" in lines[1], (args, lines)
  assert tree_hashes(tmp_path) == before and not os.path.exists(tmp_path / "o")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_cli_names_a_corrupt_checkpoint_and_an_existing_out(reference, tmp_path):
  ckpt, out = tmp_path / "ckpt", tmp_path / "out"
  assert _run_cli("hf-to-orbax", f"--hf_dir={reference[0]}", f"--out={ckpt}").returncode == 0
  shutil.copytree(ckpt / "0", ckpt / "5")  # a later step, then damaged
  truncate_item_files(ckpt / "5" / "params")
  out.mkdir()
  (out / "keep.txt").write_text("keep")
  before = tree_hashes(tmp_path)
  result = _run_cli("orbax-to-hf", f"--checkpoint={ckpt}", f"--out={out}")
  assert result.returncode == 2 and "--overwrite" in result.stderr.splitlines()[0]
  result = _run_cli("orbax-to-hf", f"--checkpoint={ckpt}", f"--out={out}", "--overwrite")
  assert result.returncode == 1
  line = next(l for l in result.stderr.splitlines() if ": error: " in l)
  assert line.startswith(f"python -m phi_jax.convert: error: corrupt checkpoint: step 5, "
                         f"item 'params' ({ckpt}/5/params) cannot be read: OUT_OF_RANGE")
  assert line.endswith(f"the next older complete step is 0 ({ckpt}/0)")
  assert tree_hashes(tmp_path) == before


def test_cli_without_the_hub_says_how_to_use_a_local_copy(tmp_path):
  result = _run_cli("hf-to-orbax", "--hf_dir=phi-jax-test/not-a-repo", f"--out={tmp_path / 'o'}")
  assert result.returncode == 1
  line = next(l for l in result.stderr.splitlines() if ": error: " in l)
  assert "phi-jax-test/not-a-repo" in line and "needs network access to huggingface.co" in line
  assert "huggingface-cli download phi-jax-test/not-a-repo --local-dir DIR" in line
  assert not os.path.exists(tmp_path / "o")


# ---------------------------------------------------------------------- errors


def test_missing_directory(tmp_path):
  path = str(tmp_path / "does-not-exist")
  with pytest.raises(FileNotFoundError, match="does-not-exist"):
    phi_jax.from_pretrained(path)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(FileNotFoundError, match=re.escape(str(empty))):
    phi_jax.from_pretrained(str(empty))
  weights_only = tmp_path / "no-config"
  weights_only.mkdir()
  (weights_only / "model.safetensors").write_bytes(b"")
  with pytest.raises(FileNotFoundError, match="no-config"):
    phi_jax.from_pretrained(str(weights_only))


@pytest.mark.parametrize("field, value, tensor", [
    ("hidden_size", 32, "model.embed_tokens.weight"),
    ("intermediate_size", 96, "model.layers.0.mlp.fc1.weight"),
    ("vocab_size", 99, "model.embed_tokens.weight"),
])
def test_config_disagreeing_with_weights(reference, tmp_path, field, value, tensor):
  _, hf, _, _ = reference
  directory = str(tmp_path / "bad")
  hf.save_pretrained(directory)
  config = hf_io.read_json(os.path.join(directory, "config.json"))
  config[field] = value
  write_config(directory, config)
  with pytest.raises(ValueError, match=rf"tensor {tensor} has shape") as e:
    phi_jax.from_pretrained(directory)
  assert directory in str(e.value)


def test_layer_count_disagreeing_with_weights(reference, tmp_path):
  _, hf, _, _ = reference
  directory = str(tmp_path / "bad")
  hf.save_pretrained(directory)
  config = hf_io.read_json(os.path.join(directory, "config.json"))
  write_config(directory, {**config, "num_hidden_layers": NUM_LAYERS + 1})
  with pytest.raises(ValueError, match=rf"missing tensor.*model\.layers\.{NUM_LAYERS}\."):
    phi_jax.from_pretrained(directory)
  write_config(directory, {**config, "num_hidden_layers": NUM_LAYERS - 1})
  with pytest.raises(ValueError, match=rf"unexpected tensor.*model\.layers\.{NUM_LAYERS - 1}\."):
    phi_jax.from_pretrained(directory)


def test_missing_and_unexpected_tensors(reference, tmp_path):
  _, hf, _, _ = reference
  tensors = state_dict(hf)
  missing = dict(tensors)
  del missing["model.layers.1.mlp.fc2.bias"]
  directory = str(tmp_path / "missing")
  hf.config.save_pretrained(directory)
  save_file(missing, os.path.join(directory, "model.safetensors"))
  with pytest.raises(ValueError, match=r"missing tensor.*model\.layers\.1\.mlp\.fc2\.bias"):
    phi_jax.from_pretrained(directory)

  extra = dict(tensors)
  extra["model.layers.0.self_attn.rotary.scale"] = torch.zeros(3)
  directory = str(tmp_path / "unexpected")
  hf.config.save_pretrained(directory)
  save_file(extra, os.path.join(directory, "model.safetensors"))
  with pytest.raises(ValueError, match=r"unexpected tensor.*self_attn\.rotary\.scale"):
    phi_jax.from_pretrained(directory)


@pytest.mark.parametrize("overrides, message", [
    (dict(num_key_value_heads=2), "num_key_value_heads"),
    (dict(qk_layernorm=True), "qk_layernorm"),
])
def test_unsupported_transformers_models(hf_phi_dir, overrides, message):
  directory, _ = hf_phi_dir(**overrides)
  with pytest.raises(ConfigError, match=message):
    phi_jax.from_pretrained(directory)


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_act="relu"), "hidden_act"),
    (dict(tie_word_embeddings=True), "tie_word_embeddings"),
    (dict(rope_scaling={"type": "dynamic", "factor": 2.0}), "rope scaling 'dynamic'"),
    (dict(rope_parameters={"rope_type": "yarn", "factor": 2.0}), "rope scaling 'yarn'"),
    (dict(rope_parameters={"rope_type": "linear"}), "without a 'factor'"),
    (dict(model_type="llama"), "not a phi model"),
    (dict(hidden_size=None), "hidden_size"),
    (dict(num_attention_heads=5, num_key_value_heads=5), "num_heads"),
])
def test_unsupported_configs(reference, changes, message):
  config = reference[1].config.to_dict()
  config.update(changes)
  if config["hidden_size"] is None:
    del config["hidden_size"]
  with pytest.raises(ConfigError, match=message):
    hf_convert.config_from_hf(config)


def test_config_round_trip(reference):
  hf_config = reference[1].config
  config = hf_convert.config_from_hf(hf_config.to_dict())
  assert hf_convert.config_from_hf(hf_convert.config_to_hf(config)) == config
  exported = transformers.PhiConfig(**hf_convert.config_to_hf(config))
  for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "hidden_act", "layer_norm_eps"):
    assert getattr(exported, field) == getattr(hf_config, field), field
  assert exported.rope_parameters["partial_rotary_factor"] == (
      hf_config.rope_parameters["partial_rotary_factor"])


# ---------------------------------------------------------------------- rope scaling

ROPE_SETTINGS = [  # (phi_jax fields, transformers rope_parameters)
    (dict(rope_scaling_type="linear", rope_scaling_factor=4.0),
     {"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}),
    (dict(rope_base=1e6), {"rope_type": "default", "rope_theta": 1e6}),  # Code Llama's base
    (dict(rope_scaling_type="linear", rope_scaling_factor=2.5, rope_base=5e5),
     {"rope_type": "linear", "factor": 2.5, "rope_theta": 5e5}),
]


@pytest.mark.parametrize("fields, rope_parameters", ROPE_SETTINGS)
def test_rope_scaling_logits_match_transformers(tmp_path, fields, rope_parameters):
  directory = str(tmp_path / "hf")
  hf = make_hf_phi(directory, initializer_range=INIT, num_hidden_layers=NUM_LAYERS,
                   rope_parameters=dict(rope_parameters, partial_rotary_factor=0.5))
  tokens = np.random.RandomState(1).randint(0, hf.config.vocab_size, (2, 48))
  want = hf_logits(hf, tokens)
  model = phi_jax.from_pretrained(directory, dtype="float32")
  for field, value in fields.items():
    assert getattr(model.config, field) == value, field
  np.testing.assert_allclose(phi_logits(model, tokens), want, atol=ATOL, rtol=0)
  # the settings matter at these positions: without them the logits are far off
  plain = phi_jax.model_from_params(model.config.replace(
      rope_scaling_type="none", rope_scaling_factor=1.0, rope_base=10000.0), params_of(model))
  assert np.abs(phi_logits(plain, tokens) - want).max() > 100 * ATOL


def test_export_with_rope_scaling_loads_in_transformers(reference, tmp_path):
  directory, _, tokens, _ = reference
  base = phi_jax.from_pretrained(directory, dtype="float32")
  config = base.config.replace(rope_scaling_type="linear", rope_scaling_factor=4.0,
                               rope_base=5e4, max_seq_len=1024)
  model = phi_jax.model_from_params(config, params_of(base))
  out = convert.export_hf(params_of(model), config, str(tmp_path / "export"))
  loaded = transformers.PhiForCausalLM.from_pretrained(out).eval()
  rope = loaded.config.rope_parameters
  assert (rope["rope_type"], rope["factor"], rope["rope_theta"]) == ("linear", 4.0, 5e4)
  assert loaded.config.max_position_embeddings == 1024
  assert loaded.model.rotary_emb.rope_type == "linear"
  np.testing.assert_allclose(hf_logits(loaded, tokens), phi_logits(model, tokens), atol=ATOL,
                             rtol=0)
  assert phi_jax.from_pretrained(out, dtype="float32").config == model.config


def test_rope_scaling_in_transformers_4x_form():
  """transformers 4.x wrote `rope_scaling` {"type", "factor"} beside `rope_theta`."""
  config = dict(model_type="phi", vocab_size=64, hidden_size=32, num_hidden_layers=1,
                num_attention_heads=4, partial_rotary_factor=0.5, rope_theta=2e4,
                rope_scaling={"type": "linear", "factor": 2.0})
  imported = hf_convert.config_from_hf(config)
  assert (imported.rope_scaling_type, imported.rope_scaling_factor, imported.rope_base) == (
      "linear", 2.0, 2e4)
  assert hf_convert.config_to_hf(imported)["rope_scaling"] == {"type": "linear", "factor": 2.0}
  assert hf_convert.config_to_hf(imported.replace(
      rope_scaling_type="none", rope_scaling_factor=1.0))["rope_scaling"] is None


@pytest.mark.parametrize("changes, message", [
    (dict(rope_scaling_type="yarn"), "rope_scaling_type"),
    (dict(rope_scaling_factor=2.0), "must be 1.0 when rope_scaling_type is 'none'"),
    (dict(rope_scaling_type="linear", rope_scaling_factor=0.0), "rope_scaling_factor"),
])
def test_bad_rope_settings_are_named(changes, message):
  with pytest.raises(ConfigError, match=message):
    phi_jax.PhiConfig(**changes)


def test_hub_repo_offline():
  with pytest.raises(FileNotFoundError, match="phi-jax-test/not-a-repo.*Hugging Face hub"):
    phi_jax.from_pretrained("phi-jax-test/not-a-repo")


def test_hub_repo_resolves_with_snapshot_download(reference, monkeypatch):
  directory = reference[0]
  calls = []

  def fake_snapshot_download(repo_id, **kwargs):
    calls.append((repo_id, kwargs))
    return directory

  monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
  assert_logits_match("org/name", reference)
  assert [repo for repo, _ in calls] == ["org/name"]
  patterns = calls[0][1].get("allow_patterns")
  assert "*.safetensors" in patterns and "*.json" in patterns
