"""What several stages share: range checks of config fields, and the node of a stage
that reads one model of the run (sample, eval, export_hf)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from phi_jax.cli import UsageError
from recipe import models
from recipe.runner import Context, Node


def check_fields(where: str, cfg, checks: Iterable[tuple[str, bool, str]]) -> None:
  """Raises UsageError for the first (field, ok, valid range) whose `ok` is False."""
  for field, ok, valid in checks:
    if not ok:
      raise UsageError(f"{where}.{field} = {cfg[field]!r}: must be {valid}")


def model_ref(ctx: Context, section: str, node: str) -> models.ModelRef:
  """The model `config.<section>.model` names for `node` ('' = the latest before it)."""
  return models.resolve(ctx, ctx.config[section].model, f"config.{section}.model",
                        before=node)


def model_reader_node(name: str, section: str, run: Callable[[Context], dict], doc: str,
                      validate: Callable[[Context], None],
                      partial: Callable[[Context], str | None] | None = None) -> Node:
  """A stage that reads the model `config.<section>.model`: that model's node is its
  upstream, and the reference is among its inputs. `partial`: see runner.Node."""

  def check(ctx: Context) -> None:
    validate(ctx)
    model_ref(ctx, section, name)

  return Node(name=name, run=run, doc=doc, config=(section, "seed"), validate=check,
              partial=partial,
              after=lambda ctx: [r for r in [model_ref(ctx, section, name).node] if r],
              extra=lambda ctx: {"model": models.describe(model_ref(ctx, section, name))})
