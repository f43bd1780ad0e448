"""No node reads an output-determining setting its plan-time fingerprint does not cover.

The shared tiny run (tests/conftest.py: tiny_run) records, node by node, every field of
the run's settings and raw config that the node read while it ran (recipe/read_log.py).
Each read must be operational (phi_jax/settings.py's kind rule), inert under the run's
other values, a measurement taken along the way by a node that records it, or covered by
the node's fingerprint."""

import json

from phi_jax import settings
from recipe import graph as graph_lib
from recipe import runner
from recipe import settings as run_settings
from tests import conftest
from tests.recipe.test_plan_fields import tiny_run_config

def kinds() -> dict[str, str]:
  """{config path: kind} of every leaf of the run config."""
  out = {}
  for section, schema in run_settings.schemas().items():
    prefix = f"{section}." if section else ""
    out.update({prefix + f: k for f, k in settings.leaf_kinds(schema).items()})
  return out


def inert(ctx) -> set[str]:
  """Every field with no effect under the tiny run's values, by config path."""
  out = set()

  def walk(obj, path):
    if not settings._is_schema(obj):  # pylint: disable=protected-access
      return
    out.update(f"{path}.{name}" for name in settings.inert_fields(obj))
    for field in obj.__dataclass_fields__:
      walk(getattr(obj, field), f"{path}.{field}")

  for section, obj in ctx.settings.sections.items():
    walk(obj, section)
  return out


def covered(path: str, keys: set[str]) -> bool:
  parts = path.split(".")
  return any(".".join(parts[:i]) in keys for i in range(1, len(parts) + 1))


def test_every_output_determining_read_is_in_the_fingerprint(tiny_run):
  workdir, _ = tiny_run
  with open(conftest.reads_log(workdir)) as f:
    records = [json.loads(line) for line in f]
  assert {r["node"] for r in records} >= {"curate", "classify", "synthesize", "init",
                                           "pretrain", "finetune", "eval", "report"}
  # the recording saw the reads (a silent recorder would pass everything)
  reads = {r["node"]: set(r["read"]) for r in records}
  assert "train.steps" in reads["pretrain"] and "finetune.steps" in reads["finetune"]
  assert "data.quality.keep_threshold" in reads["classify"]
  assert "sample.max_new_tokens" in reads["sample"]
  ctx = runner.Context(tiny_run_config(), workdir, graph_lib.build())
  kind, no_effect = kinds(), inert(ctx)
  wrong = []
  for record in records:
    keys = set(record["fingerprint"])
    for path in record["read"]:
      if path == "*":
        wrong.append(f"{record['node']} read the whole raw config")
        continue
      if path not in kind and any(k.startswith(path + ".") for k in kind):
        continue  # a nested section itself: its fields are read (and checked) one by one
      if kind.get(path) == settings.OPERATIONAL or path in no_effect or covered(path, keys):
        continue
      if record["measures_along"] and (
          kind.get(path) == settings.MEASUREMENT or covered(path, set(record["measured"]))):
        continue
      wrong.append(f"{record['node']} reads {path} ({kind.get(path, 'unknown kind')}), "
                   f"not in its fingerprint")
  assert not wrong, "\n".join(sorted(set(wrong)))
