"""Logical axis names -> mesh axes, by one rule list (MaxText style).

Every parameter of the model names its dims with logical axes ('vocab', 'embed',
'heads', 'head_dim', 'mlp', 'norm', 'layers'), and activations name theirs ('batch',
'length', 'heads'). A rule list maps each logical axis to a mesh axis (or a tuple of
mesh axes, or None = replicated); the first rule whose mesh axes are all free in that
tensor wins, so one tensor never uses a mesh axis twice.

DEFAULT_RULES below are the one definition; `config.mesh.rules` lists only the rules
a run replaces (`with_overrides`). The trainer traces its steps under
`use_rules(rules)`, so code that shards activations itself (the Pallas attention's
`shard_map`) reads the same rules through `mesh_axes_of`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# (logical axis, mesh axes) in priority order; the defaults shard parameters FSDP-style
# over 'fsdp' and Megatron-style over 'tensor'.
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),  # activations: the batch dim is split data-parallel
    ("length", None),  # activations: sequences are not split
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("layers", None),
)

LOGICAL_AXES = tuple(name for name, _ in DEFAULT_RULES)
Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]

_ACTIVE_RULES: contextvars.ContextVar[Rules] = contextvars.ContextVar(
    "phi_jax_axis_rules", default=DEFAULT_RULES)


def with_overrides(overrides: Rules) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  """DEFAULT_RULES with the rule of each logical axis in `overrides` replaced."""
  replaced = dict(overrides)
  unknown = sorted(set(replaced) - set(LOGICAL_AXES))
  if unknown:
    raise ValueError(f"unknown logical axes {unknown}; known: {LOGICAL_AXES}")
  return tuple((name, replaced.get(name, axes)) for name, axes in DEFAULT_RULES)


@contextlib.contextmanager
def use_rules(rules: Rules) -> Iterator[None]:
  """Makes `rules` the ones `mesh_axes_of` reads while tracing under this context."""
  token = _ACTIVE_RULES.set(tuple(rules))
  try:
    yield
  finally:
    _ACTIVE_RULES.reset(token)


def active_rules() -> Rules:
  return _ACTIVE_RULES.get()


def mesh_axes_of(logical: str, rules: Rules | None = None) -> tuple[str, ...]:
  """The mesh axes the logical axis `logical` maps to (() = replicated)."""
  for name, axes in (active_rules() if rules is None else rules):
    if name == logical:
      return () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
  return ()


def logical_to_mesh_spec(logical_axes: Sequence[str | None],
                         rules: Sequence[tuple[str, str | tuple[str, ...] | None]]
                         ) -> PartitionSpec:
  """The PartitionSpec of one tensor whose dims have these logical names."""
  used: set[str] = set()
  spec = []
  for name in logical_axes:
    chosen = None
    for logical, mesh_axes in rules:
      if logical != name or mesh_axes is None:
        continue
      axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
      if not used.intersection(axes):
        chosen = axes[0] if len(axes) == 1 else axes
        used.update(axes)
        break
    spec.append(chosen)
  return PartitionSpec(*spec)


def logical_axes(tree) -> dict:
  """The logical axis names of every Param in a model or nnx.State (a pure dict)."""
  state = tree if isinstance(tree, nnx.State) else nnx.state(tree, nnx.Param)
  return jax.tree.map(lambda v: tuple(v.get_metadata()["out_sharding"]), state,
                      is_leaf=lambda x: isinstance(x, nnx.Variable)).to_pure_dict()


def param_shardings(model_or_state, mesh: Mesh,
                    rules: Sequence[tuple[str, str | tuple[str, ...] | None]] = DEFAULT_RULES
                    ) -> dict:
  """NamedShardings for every parameter (a pure dict matching `params_of(model)`)."""
  mesh_axes = set(mesh.axis_names)
  rules = [(name, axes) for name, axes in rules
           if axes is None or set((axes,) if isinstance(axes, str) else axes) <= mesh_axes]
  return jax.tree.map(lambda axes: NamedSharding(mesh, logical_to_mesh_spec(axes, rules)),
                      logical_axes(model_or_state),
                      is_leaf=lambda x: isinstance(x, tuple))
