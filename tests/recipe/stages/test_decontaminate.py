"""The decontaminate stage checks the training data against the problems the run
evaluates: the benchmarks built with config.eval's options (long-context's files)."""

import ast
import json
import os

from configs import tiny
from eval import run as eval_run
from eval.benchmarks.long_context import LongContext
from eval.settings import EvalSettings
from recipe import graph as graph_lib
from recipe import runner
from recipe.stages import decontaminate as decontaminate_stage

OPTIONS = {"long_context_lengths": (1500,), "long_context_depths": (0.5,),
           "long_context_per_cell": 2, "long_context_seed": 3}


def test_the_run_s_long_context_files_are_the_targets(tmp_path):
  """With config.eval's long-context lengths, depths, files per cell and seed (none of
  them the defaults), the stage reads them (so changing them reruns it) and checks the
  data against those files: a training record holding the function one of them must
  call (renamed) is removed, its nearest problem that file, whose id no default file
  has."""
  config = tiny.get_config()
  config.decontaminate.benchmarks = ("long-context",)
  for field, value in OPTIONS.items():
    config.eval[field] = value
  ctx = runner.Context(config, str(tmp_path / "work"), graph_lib.build())
  node = next(n for n in ctx.graph.nodes if n.name == decontaminate_stage.NAME)
  reads = node.reads(ctx)
  expected_options = eval_run.benchmark_options_of("long-context", EvalSettings(**OPTIONS))
  assert reads["benchmark_options"] == {"long-context": expected_options}

  problems = LongContext(**expected_options).load()  # what the evaluator generates
  assert {p.task_id for p in problems}.isdisjoint(p.task_id for p in LongContext().load())
  problem = problems[1]
  module = ast.parse(problem.prompt + "None")
  function = next(node for node in module.body if isinstance(node, ast.FunctionDef)
                  and node.name == problem.entry_point)
  source = ast.get_source_segment(problem.prompt + "None", function)
  corpus = tmp_path / "corpus.jsonl"
  with open(corpus, "w", encoding="utf-8") as f:
    for record in ({"id": "copy", "text": source.replace(problem.entry_point, "helper")},
                   {"id": "other", "text": "import os\n\nprint(os.getcwd())\n"}):
      f.write(json.dumps(record) + "\n")

  summary = decontaminate_stage.run(ctx, reads, {"corpus": [str(corpus)]})
  assert summary["corpora"]["corpus"]["removed"] == 1
  with open(os.path.join(ctx.node_dir(decontaminate_stage.NAME), "corpus", "removed.jsonl"),
            encoding="utf-8") as f:
    removed = [json.loads(line) for line in f]
  assert [r["id"] for r in removed] == ["copy"]
  assert removed[0]["nearest"] == {"benchmark": "long-context", "task_id": problem.task_id,
                                   "by": "ast"}
  assert removed[0]["scores"]["ast"]["tau"] == 1.0


def test_the_proximity_gate_reads_the_same_options(tmp_path):
  """The synthesize stage's proximity gate builds the decontamination's indexes, so it
  reads the same options (and reruns when they change)."""
  config = tiny.get_config()
  config.decontaminate.benchmarks = ("long-context",)
  config.synth.proximity.checks = ("ngram",)
  for field, value in OPTIONS.items():
    config.eval[field] = value
  ctx = runner.Context(config, str(tmp_path / "work"), graph_lib.build())
  node = next(n for n in ctx.graph.nodes if n.name == "synthesize")
  assert node.reads(ctx)["benchmark_options"] == {
      "long-context": eval_run.benchmark_options_of("long-context", EvalSettings(**OPTIONS))}
