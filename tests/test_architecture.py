"""The layers of docs/architecture.md, as import-linter contracts (.importlinter)."""

import os
import shutil
import subprocess
import sys

from tests.conftest import REPO_ROOT

PACKAGES = ("recipe", "configs", "data_pipeline", "eval", "phi_jax")
LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def lint_imports(root: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=root)
  return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=root, env=env, capture_output=True,
                        text=True, timeout=300)


def test_the_packages_import_downward_only():
  result = lint_imports(REPO_ROOT)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
  assert "Contracts: 1 kept, 0 broken." in result.stdout
  with open(os.path.join(REPO_ROOT, ".importlinter")) as f:
    contract = f.read()
  assert "ignore_imports" not in contract  # no exception whitelists an upward import


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path):
  for package in PACKAGES:
    shutil.copytree(os.path.join(REPO_ROOT, package), tmp_path / package,
                    ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copy(os.path.join(REPO_ROOT, ".importlinter"), tmp_path)
  with open(tmp_path / "phi_jax" / "sampling.py", "a") as f:
    f.write("\n\ndef _peek():\n  from data_pipeline import catalog  # noqa\n  return catalog\n")
  result = lint_imports(str(tmp_path))
  assert result.returncode != 0
  assert "BROKEN" in result.stdout and "phi_jax.sampling -> data_pipeline.catalog" in result.stdout
