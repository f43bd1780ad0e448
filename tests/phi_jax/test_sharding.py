"""Tests of phi_jax.sharding on 8 simulated CPU devices (see tests/conftest.py)."""

import functools

import jax
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from phi_jax import sharding
from phi_jax.config import PhiConfig
from phi_jax.pretrained import model_from_params, params_of
from tests.conftest import phi_logits, random_model

AXES = ("data", "fsdp", "tensor")
MESH_SHAPES = [(8, 1, 1), (1, 8, 1), (2, 2, 2)]
# Every sharded dim divides by 8: vocab, d_model, heads and mlp_dim.
CONFIG = PhiConfig(vocab_size=128, d_model=64, num_layers=2, num_heads=8, mlp_dim=128,
                   rotary_dim=4, max_seq_len=64, dtype="float32", initializer_range=0.1)

# What DEFAULT_RULES say, worked out by hand: vocab->tensor, embed->fsdp, heads->tensor,
# mlp->tensor, everything else replicated.
EXPECTED_SPECS = {
    ("embed",): P("tensor", "fsdp"),
    ("blocks", "attn", "q_proj", "kernel"): P(None, "fsdp", "tensor", None),
    ("blocks", "attn", "q_proj", "bias"): P(None, "tensor", None),
    ("blocks", "attn", "out_proj", "kernel"): P(None, "tensor", None, "fsdp"),
    ("blocks", "attn", "out_proj", "bias"): P(None, "fsdp"),
    ("blocks", "mlp", "fc1", "kernel"): P(None, "fsdp", "tensor"),
    ("blocks", "mlp", "fc1", "bias"): P(None, "tensor"),
    ("blocks", "mlp", "fc2", "kernel"): P(None, "tensor", "fsdp"),
    ("blocks", "norm", "scale"): P(None, None),
    ("final_norm", "bias"): P(None),
    ("lm_head", "kernel"): P("fsdp", "tensor"),
    ("lm_head", "bias"): P("tensor"),
}


def make_mesh(shape, axes=AXES):
  return Mesh(np.array(jax.devices()[:int(np.prod(shape))]).reshape(shape), axes)


def get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def normalize(spec):
  """A PartitionSpec as a tuple of tuples of mesh axes, one per dim."""
  return tuple(() if s is None else ((s,) if isinstance(s, str) else tuple(s)) for s in spec)


@pytest.fixture(scope="module")
def model():
  return random_model(CONFIG, seed=0)


def test_eight_devices():
  assert jax.device_count() == 8
  assert jax.devices()[0].platform == "cpu"


@pytest.mark.parametrize("shape", MESH_SHAPES, ids=str)
def test_param_shardings_follow_the_rules(model, shape):
  mesh = make_mesh(shape)
  shardings = sharding.param_shardings(model, mesh)
  params = params_of(model)
  for path, spec in EXPECTED_SPECS.items():
    got = get(shardings, path)
    assert isinstance(got, NamedSharding) and got.mesh == mesh
    assert normalize(got.spec) == normalize(spec), path
  # Every tensor: one entry per dim, and no mesh axis used twice.
  flat_params = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  flat_shardings = dict(jax.tree_util.tree_flatten_with_path(shardings)[0])
  assert flat_params.keys() == flat_shardings.keys()
  for key, value in flat_params.items():
    spec = normalize(flat_shardings[key].spec)
    assert len(spec) == value.ndim, key
    used = [axis for dim in spec for axis in dim]
    assert len(used) == len(set(used)), (key, spec)
    assert set(used) <= set(AXES)


@pytest.mark.parametrize("shape", MESH_SHAPES, ids=str)
def test_device_put_with_param_shardings(model, shape):
  mesh = make_mesh(shape)
  shardings = sharding.param_shardings(model, mesh)
  params = params_of(model)
  sharded = jax.device_put(params, shardings)
  sizes = dict(zip(AXES, shape))

  def check(value, placed, named):
    np.testing.assert_array_equal(np.asarray(placed), np.asarray(value))
    assert placed.sharding == named
    # Each device holds the slice the spec implies: dims divided by their mesh axes.
    want = tuple(dim // int(np.prod([sizes[a] for a in axes]))
                 for dim, axes in zip(value.shape, normalize(named.spec)))
    assert {s.data.shape for s in placed.addressable_shards} == {want}
    assert len(placed.addressable_shards) == 8

  jax.tree.map(check, params, sharded, shardings)
  embed = sharded["embed"]
  fsdp, tensor = sizes["fsdp"], sizes["tensor"]
  assert embed.addressable_shards[0].data.shape == (128 // tensor, 64 // fsdp)


def test_logical_to_mesh_spec_never_reuses_a_mesh_axis():
  rules = [("embed", "fsdp"), ("mlp", "fsdp"), ("mlp", "tensor"), ("heads", ("fsdp", "data")),
           ("heads", "tensor"), ("vocab", None)]
  # mlp falls back to its second rule because fsdp is taken by embed.
  assert sharding.logical_to_mesh_spec(("embed", "mlp"), rules) == P("fsdp", "tensor")
  assert sharding.logical_to_mesh_spec(("mlp", "embed"), rules) == P("fsdp", None)
  # A tuple of mesh axes shards one dim over both.
  assert sharding.logical_to_mesh_spec(("heads", "vocab"), rules) == P(("fsdp", "data"), None)
  assert sharding.logical_to_mesh_spec(("embed", "heads"), rules) == P("fsdp", "tensor")
  # Unknown and replicated names are None.
  assert sharding.logical_to_mesh_spec(("layers", "vocab"), rules) == P(None, None)


def test_rules_naming_absent_mesh_axes_are_dropped(model):
  mesh = make_mesh((2, 4), ("data", "fsdp"))  # no 'tensor' axis
  shardings = sharding.param_shardings(model, mesh)
  assert normalize(shardings["embed"].spec) == ((), ("fsdp",))
  assert normalize(shardings["lm_head"]["bias"].spec) == ((),)
  assert normalize(get(shardings, ("blocks", "attn", "q_proj", "kernel")).spec) == (
      (), ("fsdp",), (), ())


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, tokens):
  return nnx.merge(graphdef, state)(tokens)


@pytest.mark.parametrize("shape", MESH_SHAPES, ids=str)
def test_sharded_forward_matches_unsharded(model, shape):
  tokens = np.random.RandomState(1).randint(0, CONFIG.vocab_size, (8, 12)).astype(np.int32)
  want = phi_logits(model, tokens)
  mesh = make_mesh(shape)
  params = jax.device_put(params_of(model), sharding.param_shardings(model, mesh))
  sharded_model = model_from_params(CONFIG, params)
  graphdef, state = nnx.split(sharded_model)
  assert get(state, ("embed",)).value.sharding.spec == P("tensor", "fsdp")
  tokens = jax.device_put(tokens, NamedSharding(mesh, P("data", None)))
  got = _forward(graphdef, state, tokens)
  assert got.shape == want.shape
  assert len(got.sharding.device_set) == 8  # computed on the whole mesh
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-5)
