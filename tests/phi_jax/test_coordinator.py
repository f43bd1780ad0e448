"""phi_jax.coordinator: the job's coordination service in its own process. That it
outlives a killed process 0, which the others then name, is tests/phi_jax/
test_hosts_watch.py's; here: it ends when process 0 shuts it down, and when process 0
left without that, as soon as no process is connected to it."""

import socket
import time

from phi_jax import coordinator
from tests.phi_jax.train.test_multihost import _free_port


def _start():
  port = _free_port()
  service = coordinator.start(f"127.0.0.1:{port}", 2, heartbeat_timeout=5, linger_s=120)
  socket.create_connection(("127.0.0.1", port), timeout=10).close()  # it listens
  return service, port


def test_process_0s_shutdown_ends_the_service():
  service, port = _start()
  service.shutdown()
  assert service.proc.returncode == 0
  try:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    refused = False
  except OSError:
    refused = True
  assert refused


def test_without_process_0_it_serves_while_a_process_is_connected_then_ends():
  service, port = _start()
  client = socket.create_connection(("127.0.0.1", port), timeout=10)
  try:
    service.proc.stdin.close()  # process 0 gone, without shutting the service down
    time.sleep(2)
    assert service.proc.poll() is None  # a process is still connected: it serves
  finally:
    client.close()
  assert service.proc.wait(timeout=30) == 0  # long before linger_s
