"""One process of a multi-host job on this machine: jax.distributed on loopback.

    python -m tests.phi_jax.train.multihost_driver PORT NUM_PROCESSES PROCESS_ID MODE ...

MODE "stages": ... = WORKDIR STAGES OVERRIDES_JSON, the training stages of driver.py
(the data must be built first: driver.build_data).
MODE "epoch": ... = DATASET_DIR SEQ_LEN BATCH_SIZE HOST_SHARDING: prints one JSON line
with this host's documents of epochs 0 and 1 (their token lists) and its first batch.
MODE "quality": ... = WORKDIR: the data stage's embed and classify steps on WORKDIR
(curate and annotate written by tests/recipe/test_data_multihost.py), with
`quality_config()`; prints one JSON line with the steps' summaries and the numbers of
documents this host embedded and scored.
MODE "curate": ... = OUT SPEC...: the curate step on datatrove (`curate_on_engine`);
prints one JSON line with its counts, stats and the task ranks this host ran.
MODE "runner": ... = WORKDIR SEED FAIL_B_ON: a two-node graph through recipe.runner
(`run_graph`); prints one JSON line with the markers' summaries or the error.
Each process has one CPU device (the caller unsets XLA_FLAGS).
"""

import json
import os
import sys


def quality_config():
  """A tiny config for the data stage's quality steps: a random-init embedder of 32
  dims, small score chunks (so each host scores several)."""
  from configs import tiny  # pylint: disable=g-import-not-at-top
  config = tiny.get_config()
  config.model.update(dict(vocab_size=512, d_model=32, num_layers=1, num_heads=2, mlp_dim=64,
                           rotary_dim=8, max_seq_len=128))
  config.data.update(dict(max_files=40))
  config.data.quality.update(dict(annotate=40, embed_max_len=64, n_estimators=10,
                                  score_chunk_size=8, embed_batch_size=4))
  return config


def main(argv):
  port, num_processes, process_id, mode, *rest = argv[1:]
  # pylint: disable=g-import-not-at-top
  import jax
  from phi_jax.train.mesh import maybe_initialize_distributed
  started = maybe_initialize_distributed(f"127.0.0.1:{port}", int(num_processes),
                                         int(process_id))
  assert started == (int(num_processes) > 1)
  assert jax.process_count() == int(num_processes) and jax.process_index() == int(process_id)
  if mode == "stages":
    from tests.phi_jax.train import driver
    driver.main([argv[0], *rest])
  elif mode == "epoch":
    from data_pipeline import loader
    dataset_dir, seq_len, batch_size, host_sharding = rest
    ld = loader.make_loader([dataset_dir], split="train", seq_len=int(seq_len),
                            batch_size=int(batch_size), seed=3, eos_id=256,
                            host_sharding=host_sharding)
    print(json.dumps({
        "process": jax.process_index(),
        "epochs": [[t.tolist() for t in ld.epoch_documents(e)] for e in (0, 1)],
        "first_batch": next(ld)["tokens"].tolist(), "state": ld.get_state()}), flush=True)
  elif mode == "quality":
    from data_pipeline import classifier, embed
    from recipe import graph, runner
    from recipe.stages import data
    (workdir,) = rest
    scored = []  # the documents this host scored: its block only
    stream_scores = classifier.stream_scores
    def counting(*args, **kwargs):
      counts = stream_scores(*args, **kwargs)
      scored.append(counts["documents"])
      return counts
    classifier.stream_scores = counting
    embedded = []  # the rows of each embed_block call: the embed step's first
    embed_block = embed.Embedder.embed_block
    def counting_rows(self, *args, **kwargs):
      rows, x = embed_block(self, *args, **kwargs)
      embedded.append(len(rows))
      return rows, x
    embed.Embedder.embed_block = counting_rows
    ctx = runner.Context(quality_config(), workdir, graph.build())
    nodes = ctx.graph
    summaries = {name: getattr(data, name)(ctx, runner.node_reads(nodes[name], ctx))
                 for name in ("embed", "classify")}
    print(json.dumps({"process": jax.process_index(), "scored": scored,
                      "embedded": embedded, **summaries}),
          flush=True)
  elif mode == "curate":
    out, specs = rest[0], rest[1:]
    print(json.dumps({"process": jax.process_index(), **curate_on_engine(out, specs)}),
          flush=True)
  elif mode == "runner":
    workdir, seed, fail_b_on = rest
    print(json.dumps({"process": jax.process_index(),
                      **run_graph(workdir, seed, fail_b_on)}), flush=True)
  else:
    raise SystemExit(f"unknown mode {mode}")
  # every process leaves together (the coordinator, in process 0, must outlive the rest:
  # hosts.leave_in_order; the shutdown barrier times out if one process is much slower
  # on a loaded machine)
  if started:
    from jax.experimental import multihost_utils
    from phi_jax import hosts
    from phi_jax.train.mesh import HEARTBEAT_TIMEOUT_S
    multihost_utils.sync_global_devices("multihost_driver done")
    hosts.leave_in_order(HEARTBEAT_TIMEOUT_S)
    jax.distributed.shutdown()


def curate_on_engine(out, specs):
  """The curate step on datatrove over `specs`, this host's share of it (one worker:
  its tasks run in this process, so the ranks it ran are recorded); the result's counts
  and stats (without timings) and {phase: [ranks run here]}."""
  from data_pipeline import curation, datatrove_pipeline, sources
  ranks = {}
  for phase in ("filter", "group", "clusters", "dedup"):
    method = getattr(datatrove_pipeline.Job, phase)
    def recording(self, rank, _method=method, _phase=phase):
      ranks.setdefault(_phase, []).append(rank)
      return _method(self, rank)
    setattr(datatrove_pipeline.Job, phase, recording)
  shard_index, num_shards = sources.host_shard()
  settings = curation.CurationSettings(seed=3, near_dup_threshold=0.7, text_field="content")
  result = curation.curate(specs, settings, os.path.join(out, "code.jsonl"),
                           runner="datatrove", workers=1, shard_files=2,
                           work_dir=os.path.join(out, "shards"), shard_index=shard_index,
                           num_shards=num_shards)
  stats = [{k: v for k, v in step.items() if k not in ("elapsed_s", "records_per_s")}
           for step in result["stats"]]
  return {"documents": result["documents"], "bytes": result["bytes"], "stats": stats,
          "ranks": ranks}


def run_graph(workdir, seed, fail_b_on):
  """Runs nodes a -> b -> c of a small graph through the runner on this host: a writes
  out.txt (config.seed) and ran-by-<process>; b does the same and fails on process
  `fail_b_on` ('' = none); c does the same on process 0 only (primary_only). seed 'index' gives each process its own seed (plans differ).
  Returns the markers' summaries, or the error."""
  import jax
  from configs import tiny
  from recipe import runner

  def body(name, fail_on=""):
    def run(ctx, reads):
      directory = ctx.node_dir(name)
      with open(os.path.join(directory, "out.txt"), "w") as f:
        f.write(str(reads.get("seed")))
      open(os.path.join(directory, f"ran-by-{jax.process_index()}"), "w").close()
      if fail_on == str(jax.process_index()):
        raise RuntimeError(f"boom on process {fail_on}")
      return {"seed": reads.get("seed")}
    return run

  config = tiny.get_config()
  config.seed = jax.process_index() if seed == "index" else int(seed)
  def reads(ctx):
    return {"seed": ctx.settings.seed}

  nodes = [runner.Node("a", body("a"), doc="first", reads=reads),
           runner.Node("b", body("b", fail_b_on), doc="second", after=("a",), reads=reads),
           runner.Node("c", body("c"), doc="third, on process 0", after=("b",),
                       reads=reads, primary_only=True)]
  ctx = runner.Context(config, workdir, runner.Graph(nodes))
  try:
    markers = runner.execute(ctx, runner.make_plan(ctx, ["a", "b", "c"]))
  except Exception as e:  # pylint: disable=broad-except  (reported, then the barrier)
    return {"error": f"{type(e).__name__}: {e}"}
  return {"summaries": [m["summary"] for m in markers]}


if __name__ == "__main__":
  main(sys.argv)
