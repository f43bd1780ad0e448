"""One process of a two-process job for tests/phi_jax/test_hosts_watch.py:

    python -m tests.phi_jax.hosts_driver PORT NUM_PROCESSES PROCESS_ID MODE HEARTBEAT_S

It starts `jax.distributed` on loopback and `phi_jax.hosts.watch`, prints 'ready', and
runs node 'demo': barriers (collectives) every 0.1 s, TICKS of them, errors handled as
run.py does. MODE 'finish': every process finishes; 'kill-1' ('kill-0'): process 1
(process 0, beside which the coordination service runs) SIGKILLs itself after the 5th
barrier; 'host-0-lost': process 0 SIGKILLs the coordination service's process and
itself (its whole host lost) after the 5th barrier; 'wait': until a signal from the test.
"""

import os
import signal
import sys
import time

TICKS = 100000


def _lose_this_host() -> None:
  """Process 0's whole host goes: the coordination service's process
  (phi_jax/coordinator.py) and process 0 are SIGKILLed together."""
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  os.kill(distributed.global_state.service.proc.pid, signal.SIGKILL)
  os.kill(os.getpid(), signal.SIGKILL)


def main(port: str, num_processes: str, process_id: str, mode: str, heartbeat_s: str) -> None:
  from phi_jax import hosts
  from phi_jax.train.mesh import maybe_initialize_distributed
  maybe_initialize_distributed(f"127.0.0.1:{port}", int(num_processes), int(process_id),
                               heartbeat_timeout_s=int(heartbeat_s))
  hosts.watch("hosts_driver", int(heartbeat_s))
  me = int(process_id)
  ticks = 5 if mode == "finish" else TICKS
  try:
    with hosts.running("demo", lambda: False):
      hosts.sync("start")
      print("ready", flush=True)
      for k in range(ticks):
        hosts.sync(f"tick {k}")
        if mode == f"kill-{me}" and k == 5:
          os.kill(os.getpid(), signal.SIGKILL)
        if mode == "host-0-lost" and me == 0 and k == 5:
          _lose_this_host()
        time.sleep(0.1)
  except BaseException as e:  # pylint: disable=broad-except
    hosts.settle(e)
    hosts.finish(failed=True)
    print(f"hosts_driver: error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  hosts.finish(failed=False)
  print("finished", flush=True)


if __name__ == "__main__":
  main(*sys.argv[1:])
