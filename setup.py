"""The dependencies of pyproject.toml, read from requirements*.txt (their one source).

`-r other.txt` lines are followed; comments and blank lines are skipped. The
accelerator extras pin jax's own extras to requirements.txt's jax version.
"""

from __future__ import annotations

import os
import re

import setuptools

HERE = os.path.dirname(os.path.abspath(__file__))


def requirements(name: str) -> list[str]:
  out = []
  with open(os.path.join(HERE, name)) as f:
    for line in f:
      line = line.split("#", 1)[0].strip()
      if line.startswith("-r "):
        out += [r for r in requirements(line[3:].strip()) if r not in out]
      elif line and line not in out:
        out.append(line)
  return out


def jax_version() -> str:
  for line in requirements("requirements.txt"):
    if match := re.fullmatch(r"jax==([\w.]+)", line):
      return match.group(1)
  raise ValueError("requirements.txt pins no jax version (jax==X)")


RUNTIME = requirements("requirements.txt")
JAX = jax_version()

setuptools.setup(
    install_requires=RUNTIME,
    extras_require={
        "data": requirements("requirements-data.txt"),
        "engine": requirements("requirements-engine.txt"),
        "test": [r for r in requirements("requirements-test.txt") if r not in RUNTIME],
        "cuda": [f"jax[cuda13]=={JAX}"],
        "cuda12": [f"jax[cuda12]=={JAX}"],
        "tpu": [f"jax[tpu]=={JAX}"],
    },
)
