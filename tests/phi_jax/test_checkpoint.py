"""Tests of phi_jax.checkpoint: the Orbax checkpoint format, and from_pretrained on it."""

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import types

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

import phi_jax
from phi_jax import atomic, checkpoint, sharding
from phi_jax.config import PhiConfig
from phi_jax.model import abstract_params
from phi_jax.tokenizer import byte_level
from tests.conftest import REPO_ROOT, phi_logits, random_model, random_params
from tests.files import truncate_item_files

CONFIG = PhiConfig(vocab_size=96, d_model=32, num_layers=2, num_heads=4, mlp_dim=64,
                   rotary_dim=4, max_seq_len=64, dtype="float32", initializer_range=0.1)
TEXT = "def add(a, b):\n    return a + b  # ∑ é 🐍\n"


def flat(tree):
  return {jax.tree_util.keystr(path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_trees_equal(got, want):
  got, want = flat(got), flat(want)
  assert got.keys() == want.keys()
  for name, value in want.items():
    assert got[name].dtype == value.dtype, name
    np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(value), err_msg=name)


@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
  """A checkpoint root with steps 9 and 10 (numeric, not lexicographic, order matters)."""
  root = str(tmp_path_factory.mktemp("two_steps") / "ckpt")
  params = {step: random_params(CONFIG, seed=step) for step in (9, 10)}
  for step in (9, 10):
    checkpoint.save(root, step, params[step], CONFIG, tokenizer=byte_level())
  return root, params


def test_save_load_round_trip(tmp_path):
  root = str(tmp_path / "ckpt")
  model = random_model(CONFIG, seed=1)
  params = phi_jax.params_of(model)  # jax arrays
  tokenizer = byte_level()
  step_dir = checkpoint.save(root, 7, params, CONFIG, tokenizer=tokenizer, source="unit-test")
  assert step_dir == os.path.join(os.path.abspath(root), "7")
  assert checkpoint.steps(root) == [7]
  assert checkpoint.is_checkpoint(root) and checkpoint.is_checkpoint(step_dir)

  loaded = checkpoint.load_params(root, CONFIG)
  assert_trees_equal(loaded, params)
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(loaded))

  metadata = checkpoint.read_metadata(root)
  assert metadata["format"] == "phi_jax" and metadata["format_version"] == 1
  assert metadata["step"] == 7
  assert metadata["model_config"] == CONFIG.to_dict()
  assert isinstance(metadata["code_version"], str) and metadata["code_version"]
  assert metadata["code_version"] == checkpoint.code_version()
  assert metadata["source"] == "unit-test"
  assert checkpoint.read_config(root) == CONFIG

  stored_tokenizer = checkpoint.read_tokenizer(root)
  assert stored_tokenizer.encode(TEXT) == tokenizer.encode(TEXT) == list(TEXT.encode("utf-8"))
  assert stored_tokenizer.eos_id == 256

  # from_pretrained on the root returns the model with its config and tokenizer.
  restored = phi_jax.from_pretrained(root)
  assert restored.config == CONFIG
  assert restored.tokenizer.decode(restored.tokenizer.encode(TEXT)) == TEXT
  tokens = np.random.RandomState(0).randint(0, CONFIG.vocab_size, (2, 8))
  np.testing.assert_array_equal(phi_logits(restored, tokens), phi_logits(model, tokens))
  # Overrides change the numerics, not the weights.
  bf16 = phi_jax.from_pretrained(step_dir, dtype="bfloat16", scan_layers=False)
  assert bf16.config == CONFIG.replace(dtype="bfloat16", scan_layers=False)
  assert_trees_equal(phi_jax.params_of(bf16), params)


def test_code_version_is_the_git_commit():
  head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                        text=True)
  version = checkpoint.code_version()
  if head.returncode == 0:
    assert re.fullmatch(re.escape(head.stdout.strip()) + r"(\+dirty)?", version), version
  else:  # not a git checkout, or no commit yet
    assert version == "unknown"


def test_checkpoint_without_tokenizer(tmp_path):
  root = str(tmp_path / "ckpt")
  checkpoint.save(root, 0, random_params(CONFIG), CONFIG)
  assert checkpoint.read_tokenizer(root) is None
  assert phi_jax.from_pretrained(root).tokenizer is None


def test_root_resolves_to_latest_step(two_steps):
  root, params = two_steps
  assert checkpoint.steps(root) == [9, 10]
  assert checkpoint.resolve_step_dir(root) == os.path.join(root, "10")
  assert_trees_equal(checkpoint.load_params(root, CONFIG), params[10])
  assert checkpoint.read_metadata(root)["step"] == 10
  # A step directory loads that step.
  step_9 = os.path.join(root, "9")
  assert checkpoint.resolve_step_dir(step_9) == step_9
  assert_trees_equal(checkpoint.load_params(step_9, CONFIG), params[9])
  assert checkpoint.read_metadata(step_9)["step"] == 9
  assert_trees_equal(phi_jax.params_of(phi_jax.from_pretrained(step_9)), params[9])


def test_temporary_and_incomplete_dirs_are_ignored(tmp_path, two_steps):
  source, params = two_steps
  root = str(tmp_path / "ckpt")
  os.makedirs(root)
  for step in ("9", "10"):
    os.symlink(os.path.join(source, step), os.path.join(root, step))
  # An interrupted save (Orbax's temporary name), a step dir without metadata, junk.
  os.makedirs(os.path.join(root, "11.orbax-checkpoint-tmp-1700000000", "params"))
  os.makedirs(os.path.join(root, "11.orbax-checkpoint-tmp-1700000000", "metadata"))
  os.makedirs(os.path.join(root, "12", "params"))
  os.makedirs(os.path.join(root, "latest"))
  with open(os.path.join(root, "README"), "w") as f:
    f.write("not a step")
  assert checkpoint.steps(root) == [9, 10]
  assert checkpoint.resolve_step_dir(root) == os.path.join(root, "10")
  assert_trees_equal(checkpoint.load_params(root, CONFIG), params[10])


def test_missing_or_empty_dir(tmp_path):
  missing = str(tmp_path / "nowhere")
  for fn in (lambda p: checkpoint.load_params(p, CONFIG), checkpoint.read_metadata,
             checkpoint.resolve_step_dir):
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
      fn(missing)
  assert not checkpoint.is_checkpoint(missing)
  assert checkpoint.steps(missing) == []

  empty = tmp_path / "empty"
  (empty / "not-a-step").mkdir(parents=True)
  with pytest.raises(FileNotFoundError, match=re.escape(str(empty)) + ".*step directories"):
    checkpoint.load_params(str(empty), CONFIG)
  assert not checkpoint.is_checkpoint(str(empty))
  with pytest.raises(FileNotFoundError, match=re.escape(str(empty))):
    phi_jax.from_pretrained(str(empty))


@pytest.mark.parametrize("changes", [
    dict(vocab_size=64),
    dict(mlp_dim=32),
    dict(num_layers=3),
    dict(d_model=64, rotary_dim=8),
], ids=lambda c: ",".join(c))
def test_shape_mismatch_names_the_parameter(two_steps, changes):
  root, _ = two_steps
  other = CONFIG.replace(**changes)
  have, need = flat(abstract_params(CONFIG)), flat(abstract_params(other))
  differing = {name for name in have if have[name].shape != need[name].shape}
  with pytest.raises(ValueError) as e:
    checkpoint.load_params(root, other)
  message = str(e.value)
  m = re.search(r"parameter (\S+) has shape \(([\d, ]+)\) in the checkpoint but the model "
                r"config needs \(([\d, ]+)\)", message)
  assert m, message
  name, stored, needed = m.groups()
  key = "".join(f"['{part}']" for part in name.split("/"))
  assert key in differing
  assert tuple(int(x) for x in stored.split(",") if x.strip()) == have[key].shape
  assert tuple(int(x) for x in needed.split(",") if x.strip()) == need[key].shape
  assert os.path.join(root, "10") in message
  with pytest.raises(ValueError, match=re.escape(name)):
    phi_jax.from_pretrained(root, **changes)


def test_shape_mismatch_first_names():
  """The first differing parameter is named: 'embed' for the vocab, fc1 for mlp_dim."""
  stored = abstract_params(CONFIG)
  with pytest.raises(ValueError, match="parameter embed has shape"):
    checkpoint.check_shapes(stored, abstract_params(CONFIG.replace(vocab_size=64)), "ckpt")
  with pytest.raises(ValueError, match="parameter blocks/mlp/fc1/bias has shape"):
    checkpoint.check_shapes(stored, abstract_params(CONFIG.replace(mlp_dim=32)), "ckpt")
  with pytest.raises(ValueError, match="missing.*extra"):
    checkpoint.check_shapes(stored, {**stored, "extra": stored["embed"]}, "ckpt")


def test_newer_format_version_is_refused(tmp_path):
  root = str(tmp_path / "ckpt")
  step_dir = checkpoint.save(root, 3, random_params(CONFIG), CONFIG)
  metadata_file = os.path.join(step_dir, checkpoint.METADATA, checkpoint.METADATA_FILE)
  with open(metadata_file) as f:
    metadata = json.load(f)
  with open(metadata_file, "w") as f:
    json.dump({**metadata, "format_version": checkpoint.FORMAT_VERSION + 1}, f)
  with pytest.raises(ValueError, match="newer phi_jax"):
    checkpoint.read_metadata(root)
  with pytest.raises(ValueError, match="newer phi_jax"):
    phi_jax.from_pretrained(root)
  with open(metadata_file, "w") as f:
    json.dump({**metadata, "format": "something-else"}, f)
  with pytest.raises(ValueError, match="not phi_jax checkpoint metadata"):
    checkpoint.read_metadata(root)


def test_load_params_with_shardings(two_steps):
  root, params = two_steps
  mesh = Mesh(np.array(jax.devices()).reshape(2, 4, 1), ("data", "fsdp", "tensor"))
  shardings = sharding.param_shardings(phi_jax.model_from_params(CONFIG, params[10]), mesh)
  loaded = checkpoint.load_params(root, CONFIG, shardings=shardings)
  assert_trees_equal(loaded, params[10])
  embed = loaded["embed"]
  assert embed.sharding == shardings["embed"]
  assert embed.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  assert {shard.data.shape for shard in embed.addressable_shards} == {(96, 32 // 4)}


def test_checkpoint_files_get_the_umask_modes(two_steps):
  root, _ = two_steps
  for directory, dirs, files in os.walk(os.path.join(root, "10")):
    for name in dirs:
      assert stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode) == atomic.dir_mode()
    for name in files:
      assert stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode) == atomic.file_mode()


# Orbax leaves the other reads of a failed restore as never-awaited coroutines.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_truncated_parameter_file_names_the_step_item_and_older_step(tmp_path):
  root = str(tmp_path / "ckpt")
  for step in (3, 5, 8):
    checkpoint.save(root, step, random_params(CONFIG, seed=step), CONFIG,
                    tokenizer=byte_level())
  os.makedirs(os.path.join(root, "4", "params"))  # incomplete: not an older complete step
  truncate_item_files(os.path.join(root, "8", "params"))
  for load in (lambda: phi_jax.from_pretrained(root),
               lambda: checkpoint.load_params(os.path.join(root, "8"), CONFIG)):
    with pytest.raises(checkpoint.CheckpointError) as info:
      load()
    error = info.value
    assert (error.step, error.item, error.older_step) == (8, "params", 5)
    assert error.step_dir == os.path.join(root, "8")
    message = str(error)
    assert "\n" not in message and len(message) < 700
    assert message.startswith(f"corrupt checkpoint: step 8, item 'params' ({root}/8/params)")
    assert "OUT_OF_RANGE" in message  # TensorStore's own reason, without its spec dump
    assert message.endswith(f"the next older complete step is 5 ({root}/5)")
  assert checkpoint.older_complete_steps(os.path.join(root, "8")) == [5, 3]
  # The older step named is loadable.
  assert phi_jax.from_pretrained(os.path.join(root, "5")).config == CONFIG
  truncate_item_files(os.path.join(root, "3", "params"))
  with pytest.raises(checkpoint.CheckpointError, match="there is no older complete step$"):
    checkpoint.load_params(os.path.join(root, "3"), CONFIG)


def test_a_failed_restore_prints_nothing_after_its_error(tmp_path):
  """The reads still in flight when a restore fails (their loop closed, their coroutines
  collected at exit) print nothing; the CheckpointError alone reports the damage."""
  root = str(tmp_path / "ckpt")
  checkpoint.save(root, 8, random_params(CONFIG, seed=8), CONFIG)
  truncate_item_files(os.path.join(root, "8", "params"))
  program = (
      "import sys\n"
      "from phi_jax import checkpoint\n"
      "for _ in range(6):\n"
      "  try:\n"
      f"    checkpoint.load_params({root!r}, checkpoint.read_config({root!r}))\n"
      "  except checkpoint.CheckpointError as e:\n"
      "    print('raised', e.step, e.item)\n")
  result = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines() == ["raised 8 params"] * 6
  assert result.stderr == ""


def test_a_late_read_error_is_recognised_and_others_are_not():
  """The unraisable-exception filter drops exactly a closed loop's error and the
  errors of Orbax's read coroutines; anything else reaches the previous hook."""
  loop = asyncio.new_event_loop()
  loop.close()
  try:
    loop.call_soon_threadsafe(print)
  except RuntimeError as e:
    closed = e
  late = types.SimpleNamespace(exc_value=closed, exc_traceback=closed.__traceback__,
                               object=None)
  assert checkpoint._is_late_read_error(late)
  other = RuntimeError("Event loop is closed")  # raised by hand, not by asyncio
  assert not checkpoint._is_late_read_error(
      types.SimpleNamespace(exc_value=other, exc_traceback=None, object=None))
  try:
    raise ValueError("some other failure")
  except ValueError as e:
    unrelated = types.SimpleNamespace(exc_value=e, exc_traceback=e.__traceback__, object=None)
  assert not checkpoint._is_late_read_error(unrelated)

  async def not_orbax():
    pass

  coroutine = not_orbax()
  assert not checkpoint._is_late_read_error(
      types.SimpleNamespace(exc_value=ValueError(), exc_traceback=None, object=coroutine))
  coroutine.close()


def test_corrupt_metadata_and_tokenizer_are_named(tmp_path):
  root = str(tmp_path / "ckpt")
  for step in (1, 2):
    checkpoint.save(root, step, random_params(CONFIG), CONFIG, tokenizer=byte_level())
  truncate_item_files(os.path.join(root, "2", "tokenizer"))
  with pytest.raises(checkpoint.CheckpointError, match="step 2, item 'tokenizer'.*step is 1"):
    phi_jax.from_pretrained(root)
  with open(os.path.join(root, "2", "metadata", "metadata.json"), "w") as f:
    f.write('{"format": "phi_j')
  with pytest.raises(checkpoint.CheckpointError, match="step 2, item 'metadata'.*step is 1"):
    checkpoint.read_config(root)
