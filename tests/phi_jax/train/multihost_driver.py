"""One process of a multi-host job on this machine: jax.distributed on loopback.

    python -m tests.phi_jax.train.multihost_driver PORT NUM_PROCESSES PROCESS_ID MODE ...

MODE "stages": ... = WORKDIR STAGES OVERRIDES_JSON, the training stages of driver.py
(the data must be built first: driver.build_data).
MODE "epoch": ... = DATASET_DIR SEQ_LEN BATCH_SIZE HOST_SHARDING: prints one JSON line
with this host's documents of epochs 0 and 1 (their token lists) and its first batch.
Each process has one CPU device (the caller unsets XLA_FLAGS).
"""

import json
import sys


def main(argv):
  port, num_processes, process_id, mode, *rest = argv[1:]
  # pylint: disable=g-import-not-at-top
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
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
  else:
    raise SystemExit(f"unknown mode {mode}")
  # every process leaves together (the coordinator, in process 0, must outlive the rest;
  # the shutdown barrier times out if one process is much slower on a loaded machine)
  if started:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("multihost_driver done")
    jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv)
