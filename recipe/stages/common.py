"""What several stages share: the node of a stage that reads one model of the run
(sample, eval, export_hf)."""

from __future__ import annotations

from collections.abc import Callable

from recipe import models
from recipe.runner import Context, Node


def model_ref(ctx: Context, section: str, node: str) -> models.ModelRef:
  """The model `config.<section>.model` names for `node` ('' = the latest before it)."""
  return models.resolve(ctx, ctx.settings.sections[section].model, f"config.{section}.model",
                        before=node)


def model_reader_node(name: str, section: str, run: Callable[[Context, dict], dict], doc: str,
                      partial: Callable[[Context], str | None] | None = None,
                      reads: Callable[[Context], dict] | None = None) -> Node:
  """A stage that reads the model `config.<section>.model`: that model's node is its
  upstream; it reads its section's settings ('<section>'), the resolved model ('model')
  and what `reads` adds. `partial`: see runner.Node."""

  def all_reads(ctx: Context) -> dict:
    extra = reads(ctx) if reads is not None else {}
    return {section: ctx.settings.sections[section], "model": model_ref(ctx, section, name),
            **extra}

  return Node(name=name, run=run, doc=doc, reads=all_reads,
              validate=lambda ctx: model_ref(ctx, section, name), partial=partial,
              after=lambda ctx: [r for r in [model_ref(ctx, section, name).node] if r])
