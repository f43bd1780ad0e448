"""The one runner: for every node of the recipe's graph (a stage such as `pretrain`, or a
step of the data stage such as `classify`) it decides, before any work, whether to

    skip     its output is complete and was built from the same inputs
    run      it has never run here
    resume   it started with the same inputs and left resumable output (checkpoints)
    rerun    a cheap node whose inputs changed: built again
    force    named in --force: built again from scratch
    refuse   an expensive node (pretrain, finetune) whose inputs changed: nothing runs
             until the user passes --force=<node> or another work directory

A node's inputs are what it reads, resolved before anything runs: `Node.reads(ctx)`
returns the typed settings objects (recipe/settings.py) and resolved references (the
starting model, the checkpoints a sweep reads) the node's `run(ctx, reads)` is given,
and nothing else reaches it. Its fingerprint is the sha256 of the output-determining
fields of exactly those objects (phi_jax/settings.py: operational and inert fields are
left out), the fingerprints of the nodes it reads from (so a change propagates
downstream) and the files it reads (by sha256), so the whole plan (`run.py --plan`) is
known from the config alone.

Each node writes under the work directory and marks completion with a JSON marker
written last, atomically (`<dir>/COMPLETE.json` for a stage, `data/steps/<step>.json`
for a data step). A node running writes `STARTED.json` beside it first, so a later run
knows whether leftover output (training checkpoints) belongs to the same inputs.

Output is never lost to bad input: every selected node validates its config before the
first node runs; a node that is rerun or forced has its old directory moved aside
(WORKDIR/.previous/<node>) and deleted only when the new run has finished; if the new
run fails, the old output is put back.

In a job of several hosts (docs/multihost.md) every process runs the same command and
every node: each process plans, and the plans must agree (a digest is compared before
anything runs); process 0 alone moves old output aside, writes and removes markers;
every process runs the node between two barriers (a `primary_only` node: process 0
alone, the others wait), and the marker is written only when every process finished it
(a node that failed on one host fails on all, and the old output is put back). A
process lost or interrupted while a node runs stops every process with one line naming
it and the node (phi_jax.hosts.watch); the node is not marked complete.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from phi_jax import atomic, checkpoint, hosts
from phi_jax.llm.budget import BudgetReached
from phi_jax import settings as settings_lib
from phi_jax.digest import file_sha256
from phi_jax.cli import UsageError
from recipe import read_log

COMPLETE = "COMPLETE.json"
STARTED = "STARTED.json"
PREVIOUS_DIR = ".previous"
# Markers carry this format number; a marker without it was written by the runner of
# an older phi_jax, whose fingerprints are not comparable.
MARKER_FORMAT = 3

ACTIONS = ("skip", "run", "resume", "rerun", "force", "refuse")


class StageError(RuntimeError):
  """A node cannot run: a missing upstream output, a bad input file, ... (exit code 1)."""


class RefusedError(UsageError):
  """The plan would silently redo expensive work: the command must change (exit code 2)."""


# --------------------------------------------------------------------------- the graph
@dataclasses.dataclass(frozen=True)
class Node:
  """One unit the runner schedules: a stage, or a step of a stage.

  Attributes:
    name: unique name (`--stages`, `--force` and `--plan` use it).
    run: does the work; returns a JSON-able summary stored in the marker.
    doc: one line: what it makes.
    group: the stage it belongs to ('' = a stage of its own): `--stages=data` selects
      every node of group `data`.
    run: does the work, given the context and what `reads` returned; returns a
      JSON-able summary stored in the marker.
    reads: {name: value} of everything the node reads: settings objects of
      recipe/settings.py's RunConfig (named by their config path: 'train',
      'data.quality', ...), single values ('seed') and resolved references. Its
      output-determining part is the node's config input.
    after: the nodes it reads, or a function of the context returning them (a stage's
      starting model is named by the config).
    files: the input files it reads (their sha256 are inputs), as a function.
    validate: checks what the settings schemas cannot (files exist, references
      resolve) before any node runs (raises UsageError).
    measures_along: it takes measurements along the way (held-out loss and bits per byte
      during training): MEASUREMENT fields and `Measured` reads are recorded with the
      measurement and left out of its fingerprint (phi_jax/settings.py).
    expensive: never redone silently when its inputs change (training).
    directory: its output directory relative to the work directory ('' = the node's
      name); moved aside on a rerun when `owns_directory`.
    owns_directory: the directory holds this node's output alone.
    marker: the marker path relative to the work directory ('' = <directory>/COMPLETE.json).
    produces_model: it writes a model under <directory>/checkpoints.
    partial: describes resumable leftover output ('checkpoint step 6'), or None.
    interrupted: what an interrupted run kept and how to resume, for the console.
    estimate: what the node would send to a paid LLM endpoint, for the plan: (context,
      reads) -> lines ('textbooks: ~1,000 prompt + up to 8,000 completion tokens in 4
      request(s) (online)'), or None.
    primary_only: in a multi-host job only process 0 runs it (the others wait for it),
      True or a function of the context: for work that every host would otherwise
      repeat into the same files (LLM requests, tokenizing the datasets) and that uses
      neither Orbax nor JAX collectives, which need every process.
  """
  name: str
  run: Callable[["Context", dict], dict]
  doc: str = ""
  group: str = ""
  reads: Callable[["Context"], Mapping[str, Any]] | None = None
  after: tuple[str, ...] | Callable[["Context"], Sequence[str]] = ()
  files: Callable[["Context"], Sequence[str]] | None = None
  validate: Callable[["Context"], None] | None = None
  measures_along: bool = False
  expensive: bool = False
  directory: str = ""
  owns_directory: bool = True
  marker: str = ""
  produces_model: bool = False
  partial: Callable[["Context"], str | None] | None = None
  interrupted: Callable[["Context"], str] | None = None
  primary_only: bool | Callable[["Context"], bool] = False
  estimate: Callable[["Context", dict], Sequence[str] | None] | None = None

  @property
  def stage(self) -> str:
    return self.group or self.name

  @property
  def dir_name(self) -> str:
    return self.directory or self.name

  @property
  def marker_path(self) -> str:
    return self.marker or os.path.join(self.dir_name, COMPLETE)

  @property
  def started_path(self) -> str:
    if self.marker:
      return self.marker[:-len(".json")] + ".started.json"
    return os.path.join(self.dir_name, STARTED)

  def upstream(self, ctx: "Context") -> list[str]:
    return list(self.after(ctx) if callable(self.after) else self.after)


class Graph:
  """The nodes in pipeline order (every node after the nodes it reads)."""

  def __init__(self, nodes: Iterable[Node]):
    self.nodes = list(nodes)
    self.by_name = {node.name: node for node in self.nodes}
    if len(self.by_name) != len(self.nodes):
      raise ValueError("graph: duplicate node names")
    self.groups: dict[str, list[str]] = {}
    for node in self.nodes:
      self.groups.setdefault(node.stage, []).append(node.name)

  def __getitem__(self, name: str) -> Node:
    return self.by_name[name]

  def stage_names(self) -> list[str]:
    return list(self.groups)

  def expand(self, names: Iterable[str], what: str) -> list[str]:
    """Node names of `names` (stages expand to their nodes), in pipeline order."""
    wanted: set[str] = set()
    for name in names:
      if name in self.groups:
        wanted.update(self.groups[name])
      elif name in self.by_name:
        wanted.add(name)
      else:
        steps = [n for n in self.by_name if n not in self.groups]
        raise UsageError(
            f"{what}: unknown stage {name!r}; stages: {', '.join(self.stage_names())}"
            + (f"; steps: {', '.join(steps)}" if steps else ""))
    return [node.name for node in self.nodes if node.name in wanted]


class Context:
  """What the runner and a node's `reads` see: the config (raw and typed), the work
  directory and the graph (for markers)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, graph: Graph,
               selected: Sequence[str] = ()):
    self.config = config
    self._settings: tuple[str, Any] | None = None
    self._frozen = None
    self.settings  # pylint: disable=pointless-statement  (every section checked now)
    self.workdir = os.path.abspath(workdir)
    self.graph = graph
    self.selected = list(selected)  # the nodes this run builds (for "latest model")
    self.forced_nodes: set[str] = set()  # the nodes --force names

  @property
  def settings(self):
    """The config's typed, checked settings (recipe/settings.py), rebuilt when the
    config changed (a test's edit)."""
    from recipe import settings as run_settings  # pylint: disable=g-import-not-at-top
    if self._frozen is not None:
      return self._frozen
    key = json.dumps(self.config.to_dict(), sort_keys=True, default=str)
    if self._settings is None or self._settings[0] != key:
      self._settings = (key, run_settings.resolve(self.config))
    return self._settings[1]

  def freeze_settings(self, settings) -> None:
    """Serves `settings` without looking at the config (None: look again)."""
    self._frozen = settings

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  def node_dir(self, name: str) -> str:
    return self.path(self.graph[name].dir_name)

  def marker(self, name: str) -> dict | None:
    return _read_json(self.path(self.graph[name].marker_path))

  def forced(self, name: str) -> bool:
    return name in self.forced_nodes

  def complete_or_selected(self, name: str) -> bool:
    return name in self.selected or self.marker(name) is not None


# --------------------------------------------------------------------------- the plan
@dataclasses.dataclass
class Decision:
  node: Node
  action: str
  reason: str
  fingerprint: str
  inputs: dict
  reads: dict


def fingerprint(inputs: Mapping[str, Any]) -> str:
  return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()


def config_value(config: ml_collections.ConfigDict, dotted: str) -> Any:
  node: Any = config
  for part in dotted.split("."):
    node = node[part]
  return node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node


def _file_digest(path: str) -> str:
  return file_sha256(path) if os.path.isfile(path) else "missing"


def node_reads(node: Node, ctx: Context) -> dict:
  """What `node` reads (see Node.reads), resolved from the config."""
  return dict(node.reads(ctx)) if node.reads is not None else {}


def node_inputs(node: Node, ctx: Context, fingerprints: Mapping[str, str],
                reads: Mapping[str, Any] | None = None) -> dict:
  """The inputs that define `node`'s output (see the module docstring)."""
  reads = node_reads(node, ctx) if reads is None else reads
  config = settings_lib.output_values(reads, measurements=not node.measures_along)
  inputs: dict[str, Any] = {"config": config, "after": {}}
  for name in node.upstream(ctx):
    if name in fingerprints:
      inputs["after"][name] = fingerprints[name]
      continue
    marker = ctx.marker(name)
    if marker is None:
      upstream = ctx.graph[name]
      what = (f"the {upstream.stage} stage" if upstream.group else f"the {name} stage")
      raise StageError(
          f"{node.name} reads the output of {name} ({upstream.doc}), which is not complete "
          f"in {ctx.workdir}: run {what} first (--stages={upstream.stage},{node.stage}), "
          f"or change the config field that names it")
    inputs["after"][name] = marker.get("fingerprint")
  if node.files is not None:
    inputs["files"] = {path: _file_digest(path) for path in node.files(ctx)}
  return inputs


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(value, Mapping) and value:
    out: dict[str, Any] = {}
    for key, item in value.items():
      out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out
  return {prefix: value}


def describe_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any],
                     limit: int = 4) -> str:
  """'config train.steps: 200 -> 300; upstream classify changed' (the first few)."""
  if old is None:
    return "inputs not recorded"
  new = json.loads(json.dumps(new, default=str))  # as recorded: tuples become lists
  before, after = _flatten(old), _flatten(new)
  changes = []
  for key in sorted(set(before) | set(after)):
    if before.get(key, "<none>") == after.get(key, "<none>"):
      continue
    if key.startswith("after."):
      changes.append(f"upstream {key[len('after.'):]} changed")
    elif key.startswith("files."):
      changes.append(f"file {key[len('files.'):]} changed")
    else:
      label = key.replace("config.", "config ", 1)
      changes.append(f"{label}: {_short(before.get(key, '<none>'))} -> "
                     f"{_short(after.get(key, '<none>'))}")
  if not changes:
    return "inputs changed"
  more = f" (+{len(changes) - limit} more)" if len(changes) > limit else ""
  return "; ".join(changes[:limit]) + more


def _short(value: Any) -> str:
  text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
  return text if len(text) <= 60 else text[:57] + "..."


def make_plan(ctx: Context, stages: Sequence[str], force: Sequence[str] = ()) -> list[Decision]:
  """What `run` would do for `stages` (names of stages or steps), node by node."""
  graph = ctx.graph
  selected = graph.expand(stages, "--stages")
  forced = set(graph.expand(force, "--force"))
  ctx.selected, ctx.forced_nodes = selected, forced
  for name in selected:  # every config value is checked before anything is decided
    if graph[name].validate is not None:
      graph[name].validate(ctx)
  fingerprints: dict[str, str] = {}
  plan = []
  for name in selected:
    node = graph[name]
    reads = node_reads(node, ctx)
    inputs = node_inputs(node, ctx, fingerprints, reads)
    digest = fingerprint(inputs)
    fingerprints[name] = digest
    decision = _decide(node, ctx, inputs, digest, name in forced)
    decision.reads = reads
    plan.append(decision)
  return plan


def _decide(node: Node, ctx: Context, inputs: dict, digest: str, forced: bool) -> Decision:
  marker = _read_json(ctx.path(node.marker_path))
  started = _read_json(ctx.path(node.started_path))

  def decision(action: str, reason: str) -> Decision:
    return Decision(node, action, reason, digest, inputs, {})

  if forced:
    return decision("force", "--force")
  if marker is not None:
    if marker.get("format") != MARKER_FORMAT:
      changes = "written by an older phi_jax (marker format changed)"
    elif marker.get("fingerprint") == digest:
      return decision("skip", "complete, same inputs")
    else:
      changes = describe_changes(marker.get("inputs"), inputs)
    return decision("refuse" if node.expensive else "rerun", changes)
  partial = node.partial(ctx) if node.partial is not None else None
  if partial:
    if started is not None and started.get("fingerprint") == digest:
      return decision("resume", f"resumes from {partial}")
    changes = (describe_changes(started.get("inputs"), inputs) if started is not None
               else "inputs not recorded")
    if node.expensive:
      return decision("refuse", f"leftover {partial} was built from other inputs: {changes}")
    return decision("rerun", f"leftover output from other inputs: {changes}")
  return decision("run", "not built yet")


def format_plan(plan: Sequence[Decision], workdir: str, ctx: Context | None = None) -> str:
  """The plan's table; with `ctx`, also what the nodes to build would send to paid LLM
  endpoints (Node.estimate: tokens, and cost at the configured prices)."""
  lines = [f"plan for {workdir}:", f"  {'node':<15}{'stage':<15}{'action':<8}why"]
  for d in plan:
    lines.append(f"  {d.node.name:<15}{d.node.stage:<15}{d.action:<8}{d.reason}")
  estimates = []
  for d in plan:
    if ctx is not None and d.action != "skip" and d.node.estimate is not None:
      estimates += [f"  {d.node.name}: {line}" for line in d.node.estimate(ctx, d.reads) or ()]
  if estimates:
    lines += ["LLM requests it would send (prompt tokens: characters / 4; completion tokens: "
              "the configured maxima):"] + estimates
  return "\n".join(lines)


def check_refusals(plan: Sequence[Decision], workdir: str) -> None:
  refused = [d for d in plan if d.action == "refuse"]
  if refused:
    details = "; ".join(f"{d.node.name}: {d.reason}" for d in refused)
    names = ",".join(d.node.name for d in refused)
    raise RefusedError(
        f"nothing was run: {details}. These stages are expensive and are never redone "
        f"silently. Rerun them with --force={names} (their current output is replaced), "
        f"or use another --workdir (in {workdir})")


# --------------------------------------------------------------------------- running
def say(text: str) -> None:
  """The runner's console line (stdout, flushed: progress of long runs shows at once)."""
  print(text, flush=True)


def execute(ctx: Context, plan: Sequence[Decision]) -> list[dict]:
  """Runs the plan (after check_refusals); returns each node's marker."""
  check_refusals(plan, ctx.workdir)
  _check_same_plan(plan)
  markers = []
  for decision in plan:
    node = decision.node
    if decision.action == "skip":
      say(f"[{node.name}] complete, skipped ({ctx.node_dir(node.name)})")
      markers.append(ctx.marker(node.name))
      continue
    markers.append(_run_node(ctx, decision))
  return markers


def _check_same_plan(plan: Sequence[Decision]) -> None:
  """Every process of a multi-host job planned the same nodes, actions and inputs (they
  read one work directory and config); StageError naming those that did not."""
  listed = [(d.node.name, d.action, d.fingerprint) for d in plan]
  differ = hosts.differ_from_first("runner: plan", json.dumps(listed).encode())
  if differ:
    raise StageError(f"process(es) {differ} planned other work than process 0: every host "
                     f"must run the same command and config on one work directory that "
                     f"all hosts see (a shared filesystem)")


def _prepare_node(ctx: Context, decision: Decision) -> str | None:
  """Clears the way for a node to run (its old output moved aside or its markers
  removed) and writes its STARTED marker; returns where old output was moved, if any."""
  node = decision.node
  directory = ctx.node_dir(node.name)
  marker_path = ctx.path(node.marker_path)
  started_path = ctx.path(node.started_path)
  aside = None
  if decision.action in ("rerun", "force"):
    if node.owns_directory and os.path.isdir(directory):
      aside = _move_aside(ctx, node)
    else:
      for path in (marker_path, started_path):
        if os.path.exists(path):
          os.remove(path)
  elif os.path.exists(marker_path):
    os.remove(marker_path)
  os.makedirs(directory, exist_ok=True)
  atomic.write_json({"node": node.name, "fingerprint": decision.fingerprint,
                     "inputs": decision.inputs, "started_at": _now()}, started_path)
  return aside


def _run_node(ctx: Context, decision: Decision) -> dict:
  node = decision.node
  directory = ctx.node_dir(node.name)
  primary = hosts.index() == 0  # the process that keeps the work directory's books
  primary_only = node.primary_only(ctx) if callable(node.primary_only) else node.primary_only
  runs_here = primary or not primary_only
  aside = _prepare_node(ctx, decision) if primary else None
  hosts.sync(f"runner: {node.name} prepared")
  say(f"[{node.name}] {decision.action}: {decision.reason} ({directory})" if runs_here
      else f"[{node.name}] runs on process 0; waiting for it")

  def put_back() -> None:
    if aside is not None:
      _restore(aside, directory)
      print(f"[{node.name}] failed: its previous output was put back in {directory}",
            file=sys.stderr, flush=True)

  start = time.time()
  try:
    with hosts.running(node.name, lambda: os.path.exists(ctx.path(node.marker_path))):
      summary, failed = hosts.run_and_sync(
          f"runner: {node.name} ran", lambda: _call(ctx, decision) if runs_here else None)
  except BudgetReached as e:
    note = f"; the previous output is kept in {aside}" if aside else ""
    say(f"[{node.name}] stopped by its budget, not marked complete (the nodes after it do "
        f"not start){note}: {e}")
    raise StageError(f"[{node.name}] is incomplete: its LLM budget was reached (raise the "
                     f"budget_usd of its LLM settings and run again to continue)") from None
  except KeyboardInterrupt:
    kept = node.interrupted(ctx) if node.interrupted is not None else "its partial output"
    note = f"; the previous output is kept in {aside}" if aside else ""
    say(f"[{node.name}] interrupted: kept {kept} (not marked complete){note}. "
        f"Run the same command again to continue.")
    raise
  except BaseException:
    put_back()
    raise
  if failed:
    put_back()
    raise StageError(f"[{node.name}] failed on process(es) {failed}: see their output")
  with hosts.running(node.name, lambda: os.path.exists(ctx.path(node.marker_path))):
    if primary:
      with hosts.unless_stopping():  # a job stopping (a process lost or interrupted)
        _mark_complete(ctx, decision, summary, time.time() - start)
    hosts.sync(f"runner: {node.name} marked")
  marker = ctx.marker(node.name)
  say(f"[{node.name}] done in {marker['seconds']:.1f}s")
  return marker


def _call(ctx: Context, decision: Decision) -> dict:
  """The node's run, given what it reads (with $PHI_JAX_RECORD_READS: recorded)."""
  node = decision.node
  with read_log.recording(ctx, node.name, decision.reads, decision.inputs,
                          node.measures_along):
    return node.run(ctx, decision.reads)


def _mark_complete(ctx: Context, decision: Decision, summary: Any, seconds: float) -> None:
  """Writes the node's marker, then drops its STARTED marker and its old output."""
  node = decision.node
  marker_path = ctx.path(node.marker_path)
  started_path = ctx.path(node.started_path)
  marker = {
      "format": MARKER_FORMAT,
      "node": node.name,
      "stage": node.stage,
      "fingerprint": decision.fingerprint,
      "inputs": decision.inputs,
      "summary": summary,
      "seconds": round(seconds, 3),
      "finished_at": _now(),
      "code_version": checkpoint.code_version(),
  }
  atomic.write_json(marker, marker_path)
  if os.path.exists(started_path):
    os.remove(started_path)
  previous = ctx.path(PREVIOUS_DIR, node.name)
  if os.path.isdir(previous):
    shutil.rmtree(previous)


def _move_aside(ctx: Context, node: Node) -> str:
  aside = ctx.path(PREVIOUS_DIR, node.name)
  if os.path.isdir(aside):  # left by an interrupted forced run: its output is newer
    shutil.rmtree(aside)
  os.makedirs(os.path.dirname(aside), exist_ok=True)
  os.rename(ctx.node_dir(node.name), aside)
  return aside


def _restore(aside: str, directory: str) -> None:
  if os.path.isdir(directory):
    shutil.rmtree(directory)
  os.rename(aside, directory)


def _read_json(path: str) -> dict | None:
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise StageError(f"{path}: unreadable marker ({e}); delete it to rebuild that "
                     f"node") from None


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat()
