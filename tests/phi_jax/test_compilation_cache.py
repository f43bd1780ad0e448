"""phi_jax.compilation_cache: a second process loads what the first compiled.

Each run is a fresh process (JAX decides per process whether it uses the cache);
JAX's own monitoring events count the cache's misses and hits.
"""

import json
import os
import subprocess
import sys

import pytest

from phi_jax import compilation_cache
from tests.conftest import REPO_ROOT

# Compiles one program after enabling the cache (with or without an earlier compilation
# in the process) and prints the cache events it caused.
_PROGRAM = """
import json, sys
import jax, jax.numpy as jnp
from jax._src import monitoring
from phi_jax import compilation_cache
events = []
monitoring.register_event_listener(lambda name, **kw: events.append(name))
if sys.argv[2] == "compile-first":
  jax.jit(lambda x: x + 1)(1.0).block_until_ready()
path = compilation_cache.enable(sys.argv[1], min_compile_time_s=0)
assert compilation_cache.directory() == path

@jax.jit
def program(x_NN):
  for _ in range(8):
    x_NN = jnp.tanh(x_NN @ x_NN)
  return x_NN

program(jnp.ones((32, 32))).block_until_ready()
print(json.dumps({"path": path,
                  "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses")}))
"""


def _run(directory, mode="enable-first"):
  result = subprocess.run([sys.executable, "-c", _PROGRAM, directory, mode], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["enable-first", "compile-first"])
def test_a_second_process_loads_what_the_first_compiled(tmp_path, mode):
  directory = str(tmp_path / "a" / "jax_cache")  # created, parents included
  first = _run(directory, mode)
  assert first["path"] == directory and first["misses"] >= 1 and first["hits"] == 0
  assert os.listdir(directory)
  second = _run(directory, mode)
  assert second["hits"] >= 1 and second["misses"] == 0


def test_an_unusable_directory_is_named(tmp_path):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  with pytest.raises(OSError, match=f"compilation cache {a_file}/sub: cannot create it"):
    compilation_cache.enable(str(a_file / "sub"))
  with pytest.raises(ValueError, match="min_compile_time_s must be >= 0"):
    compilation_cache.enable(str(tmp_path / "ok"), min_compile_time_s=-1)
