"""Model references: the one syntax of every config field that names a model.

`config.init.model`, `config.train.model` (where pretraining starts),
`config.finetune.model`, `config.sample.model`, `config.eval.model` and
`config.export_hf.model` each take:

    ''              the latest model of this run: the last of init, pretrain, finetune
                    that this run builds or that is complete in the work directory
    'random'        a fresh random init of config.model (training stages and init only)
    '<stage>'       that stage's latest checkpoint in this work directory ('pretrain')
    '<stage>:<N>'   its checkpoint of step N ('pretrain:24000', phi-1-base)
    a path          a phi_jax checkpoint (root or step directory) or a transformers dir
    a repo id       a Hugging Face hub model ('microsoft/phi-1'; online)
"""

from __future__ import annotations

import dataclasses
import os

from phi_jax.cli import UsageError

RANDOM = "random"
LATEST = ""


@dataclasses.dataclass(frozen=True)
class ModelRef:
  """A resolved reference: what to load, and the node of this run that made it."""
  spec: str  # 'random', a checkpoint root / step dir, a transformers dir or a repo id
  node: str | None = None  # the producing node in this work directory, if any
  step: int | None = None  # a pinned step of that node

  @property
  def is_random(self) -> bool:
    return self.spec == RANDOM

  def inert(self) -> set[str]:
    """A model of this run is identified by its node (whose fingerprint is an input of
    the reader) and step, not by where the work directory lies (phi_jax/settings.py)."""
    return {"spec"} if self.node is not None else set()


def model_nodes(ctx) -> list[str]:
  return [node.name for node in ctx.graph.nodes if node.produces_model]


def resolve(ctx, ref: str, field: str, *, allow_random: bool = False,
            before: str | None = None) -> ModelRef:
  """Resolves `ref` (the value of config field `field`) for a node of this run.

  before: the node that reads the model: 'latest' looks only at model nodes before it.
  """
  ref = str(ref).strip()
  producers = model_nodes(ctx)
  if before is not None and before in producers:
    producers = producers[:producers.index(before)]
  if ref == LATEST:
    for name in reversed(producers):
      if ctx.complete_or_selected(name):
        return ModelRef(os.path.join(ctx.node_dir(name), "checkpoints"), name)
    raise UsageError(f"{field} = '' (the latest model of this run), but no model stage "
                     f"({', '.join(producers) or 'none'}) is built or selected in "
                     f"{ctx.workdir}: run one, or name a model in {field}")
  if ref == RANDOM:
    if not allow_random:
      raise UsageError(f"{field} = 'random': only init and the training stages start from a "
                       f"random model")
    return ModelRef(RANDOM)
  name, _, step_text = ref.partition(":")
  if name in ctx.graph.by_name and ctx.graph[name].produces_model:
    root = os.path.join(ctx.node_dir(name), "checkpoints")
    if not step_text:
      return ModelRef(root, name)
    if not step_text.isdigit():
      raise UsageError(f"{field} = {ref!r}: the step after ':' must be a number")
    return ModelRef(os.path.join(root, str(int(step_text))), name, int(step_text))
  if name in ctx.graph.by_name:
    raise UsageError(f"{field} = {ref!r}: stage {name!r} makes no model; model stages are "
                     f"{', '.join(model_nodes(ctx))}")
  return ModelRef(os.path.abspath(ref) if os.path.exists(ref) else ref)


def upstream_of(ctx, ref: str, field: str, **kwargs) -> list[str]:
  """The node `ref` makes this node read from ([] for a path, a repo id or random)."""
  resolved = resolve(ctx, ref, field, **kwargs)
  return [resolved.node] if resolved.node else []


def describe(ref: ModelRef) -> dict:
  """The reference as recorded among a node's inputs."""
  return {"spec": ref.spec if ref.node is None else None, "node": ref.node, "step": ref.step}
