"""The one runner: skip, run, rerun, refuse, force, resume and the plan, on small graphs."""

import json
import os

import pytest

from configs import tiny
from phi_jax import atomic
from phi_jax.cli import UsageError
from recipe import runner


def SEED(ctx):  # pylint: disable=invalid-name
  return {"seed": ctx.settings.seed}


class Counter:
  """A node body that writes its config seed to <dir>/out.txt and counts its calls."""

  def __init__(self, name, fail=False, interrupt=False):
    self.name, self.fail, self.interrupt, self.calls = name, fail, interrupt, 0

  def __call__(self, ctx, reads):
    self.calls += 1
    with open(os.path.join(ctx.node_dir(self.name), "out.txt"), "w") as f:
      f.write(str(reads.get("seed")))
    if self.interrupt:
      raise KeyboardInterrupt
    if self.fail:
      raise RuntimeError("boom")
    return {"seed": reads.get("seed")}


def graph(expensive_b=False, **bodies):
  """a -> b -> c, where c also reads config.sample.max_new_tokens."""
  a, b, c = (bodies.get(n) or Counter(n) for n in "abc")
  nodes = [runner.Node("a", a, doc="first", reads=SEED),
           runner.Node("b", b, doc="second", after=("a",), expensive=expensive_b),
           runner.Node("c", c, doc="third", after=("b",),
                       reads=lambda ctx: {"sample.max_new_tokens":
                                          ctx.settings.sample.max_new_tokens})]
  return runner.Graph(nodes), (a, b, c)


def plan_actions(ctx, stages=("a", "b", "c"), force=()):
  return {d.node.name: d.action for d in runner.make_plan(ctx, stages, force)}


def run(ctx, stages=("a", "b", "c"), force=()):
  return runner.execute(ctx, runner.make_plan(ctx, stages, force))


def test_fresh_then_complete_then_changed(tmp_path):
  config = tiny.get_config()
  g, (a, b, c) = graph()
  ctx = runner.Context(config, str(tmp_path), g)
  assert plan_actions(ctx) == {"a": "run", "b": "run", "c": "run"}
  run(ctx)
  assert (a.calls, b.calls, c.calls) == (1, 1, 1)
  marker = json.load(open(tmp_path / "a" / runner.COMPLETE))
  assert marker["format"] == runner.MARKER_FORMAT and marker["summary"] == {"seed": 0}
  assert not (tmp_path / "a" / runner.STARTED).exists()
  assert plan_actions(ctx) == {"a": "skip", "b": "skip", "c": "skip"}
  run(ctx)
  assert (a.calls, b.calls, c.calls) == (1, 1, 1)
  # a change read only by c reruns c alone; a change read by a reruns everything after it
  config.sample.max_new_tokens = 7
  plan = runner.make_plan(ctx, ("a", "b", "c"))
  assert [d.action for d in plan] == ["skip", "skip", "rerun"]
  assert plan[2].reason == "config sample.max_new_tokens: 48 -> 7"
  run(ctx)
  assert (a.calls, b.calls, c.calls) == (1, 1, 2)
  config.seed = 1
  plan = runner.make_plan(ctx, ("a", "b", "c"))
  assert [d.action for d in plan] == ["rerun", "rerun", "rerun"]
  assert plan[1].reason == "upstream a changed"


def test_expensive_node_is_refused_before_anything_runs(tmp_path):
  config = tiny.get_config()
  g, (a, b, c) = graph(expensive_b=True)
  ctx = runner.Context(config, str(tmp_path), g)
  run(ctx)
  config.seed = 5
  assert plan_actions(ctx) == {"a": "rerun", "b": "refuse", "c": "rerun"}
  with pytest.raises(runner.RefusedError, match="--force=b"):
    run(ctx)
  assert a.calls == 1  # a was not rebuilt either: the plan is refused whole
  assert open(tmp_path / "a" / "out.txt").read() == "0"
  run(ctx, force=("b",))
  assert (a.calls, b.calls, c.calls) == (2, 2, 2)


def test_unknown_names_and_missing_upstream(tmp_path):
  g, _ = graph()
  ctx = runner.Context(tiny.get_config(), str(tmp_path), g)
  with pytest.raises(UsageError, match="unknown stage 'x'"):
    runner.make_plan(ctx, ("a", "x"))
  with pytest.raises(UsageError, match="--force: unknown stage 'y'"):
    runner.make_plan(ctx, ("a",), force=("y",))
  with pytest.raises(runner.StageError, match=r"run the b stage first \(--stages=b,c\)"):
    runner.make_plan(ctx, ("c",))


def test_failed_forced_node_puts_the_old_output_back(tmp_path):
  config = tiny.get_config()
  g, _ = graph()
  ctx = runner.Context(config, str(tmp_path), g)
  run(ctx)
  before = open(tmp_path / "b" / runner.COMPLETE).read()
  failing, _ = graph(b=Counter("b", fail=True))
  ctx = runner.Context(config, str(tmp_path), failing)
  with pytest.raises(RuntimeError, match="boom"):
    run(ctx, stages=("b",), force=("b",))
  assert open(tmp_path / "b" / runner.COMPLETE).read() == before
  assert not (tmp_path / runner.PREVIOUS_DIR / "b").exists()


def test_interrupted_node_is_not_complete_and_keeps_the_previous_output(tmp_path, capsys):
  config = tiny.get_config()
  g, _ = graph()
  ctx = runner.Context(config, str(tmp_path), g)
  run(ctx)
  stopping, _ = graph(b=Counter("b", interrupt=True))
  ctx = runner.Context(config, str(tmp_path), stopping)
  with pytest.raises(KeyboardInterrupt):
    run(ctx, stages=("b",), force=("b",))
  out = capsys.readouterr().out
  assert "[b] interrupted: kept its partial output (not marked complete)" in out
  assert ctx.marker("b") is None
  assert (tmp_path / runner.PREVIOUS_DIR / "b" / runner.COMPLETE).exists()
  # the next complete run removes the kept previous output
  ctx = runner.Context(config, str(tmp_path), g)
  run(ctx, stages=("b",))
  assert not (tmp_path / runner.PREVIOUS_DIR / "b").exists()


def test_resume_only_with_the_same_inputs(tmp_path):
  config = tiny.get_config()
  partial = lambda ctx: "step 3" if os.path.exists(ctx.path("t", "ckpt")) else None

  def body(ctx, reads):
    os.makedirs(ctx.path("t", "ckpt"), exist_ok=True)
    raise KeyboardInterrupt

  nodes = [runner.Node("t", body, reads=SEED, expensive=True, partial=partial)]
  ctx = runner.Context(config, str(tmp_path), runner.Graph(nodes))
  with pytest.raises(KeyboardInterrupt):
    run(ctx, stages=("t",))
  assert plan_actions(ctx, ("t",)) == {"t": "resume"}
  config.seed = 9
  plan = runner.make_plan(ctx, ("t",))
  assert plan[0].action == "refuse" and "leftover step 3" in plan[0].reason


def test_validation_runs_for_every_node_before_any_work(tmp_path):
  config = tiny.get_config()
  calls = []

  def check(ctx):
    raise UsageError("config.sample.num_samples = -1: must be >= 1")

  nodes = [runner.Node("a", lambda ctx, reads: calls.append("a") or {}),
           runner.Node("b", lambda ctx, reads: {}, after=("a",), validate=check)]
  ctx = runner.Context(config, str(tmp_path), runner.Graph(nodes))
  with pytest.raises(UsageError, match="num_samples"):
    run(ctx, stages=("a", "b"))
  assert not calls and not os.listdir(tmp_path)


def test_marker_of_an_older_runner_is_not_trusted(tmp_path):
  g, _ = graph(expensive_b=True)
  ctx = runner.Context(tiny.get_config(), str(tmp_path), g)
  run(ctx)
  path = str(tmp_path / "b" / runner.COMPLETE)
  marker = json.load(open(path))
  del marker["format"]
  atomic.write_json(marker, path)
  plan = runner.make_plan(ctx, ("a", "b"))
  assert plan[1].action == "refuse" and "older phi_jax" in plan[1].reason


def test_groups_select_their_steps(tmp_path):
  nodes = [runner.Node("s1", lambda ctx, reads: {}, group="g", directory="g", owns_directory=False,
                       marker="g/steps/s1.json"),
           runner.Node("s2", lambda ctx, reads: {}, group="g", directory="g", owns_directory=False,
                       marker="g/steps/s2.json", after=("s1",)),
           runner.Node("z", lambda ctx, reads: {}, after=("s2",))]
  ctx = runner.Context(tiny.get_config(), str(tmp_path), runner.Graph(nodes))
  assert [d.node.name for d in runner.make_plan(ctx, ("z", "g"))] == ["s1", "s2", "z"]
  run(ctx, stages=("g",))
  assert sorted(os.listdir(tmp_path / "g" / "steps")) == ["s1.json", "s2.json"]
  assert plan_actions(ctx, ("g", "z"), force=("s2",)) == {"s1": "skip", "s2": "force",
                                                           "z": "run"}


def test_operational_fields_are_not_inputs(tmp_path):
  config = tiny.get_config()
  nodes = [runner.Node("t", lambda ctx, reads: {},
                       reads=lambda ctx: {"train": ctx.settings.train})]
  ctx = runner.Context(config, str(tmp_path), runner.Graph(nodes))
  run(ctx, stages=("t",))
  config.train.on_corrupt_checkpoint = "previous"
  config.train.loader_workers = 2
  assert plan_actions(ctx, ("t",)) == {"t": "skip"}
  config.train.microbatches = 4  # operational too
  assert plan_actions(ctx, ("t",)) == {"t": "skip"}
  config.train.steps = 70
  assert plan_actions(ctx, ("t",)) == {"t": "rerun"}
