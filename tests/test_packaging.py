"""pyproject.toml: the wheel, its dependencies, console scripts and built-in configs.

The slow test does what a new user does: builds a wheel from a clean copy of the
checkout, installs it with its declared dependencies into a fresh virtualenv (from the
package registry), and uses it from a directory outside the repository.
"""

import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from phi_jax import cli
from tests.conftest import REPO_ROOT

# each console script and a flag its --help must list
ENTRY_POINTS = {"phi-jax-run": "--coordinator_address", "phi-jax-eval": "--benchmark",
                "phi-jax-serve": "--checkpoint", "phi-jax-convert": "--hf_dir",
                "phi-jax-compile-only": "--target", "phi-jax-decontaminate": "--benchmarks"}


def pyproject() -> dict:
  with open(os.path.join(REPO_ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)


def pins(name: str) -> list[str]:
  """The requirement lines of one requirements file, without following `-r`."""
  with open(os.path.join(REPO_ROOT, name)) as f:
    lines = [line.split("#", 1)[0].strip() for line in f]
  return [line for line in lines if line and not line.startswith("-r ")]


def clean_copy(dest: str) -> str:
  """The checkout's files as git sees them (tracked and new, not ignored) under dest:
  no .venv, build outputs or caches."""
  files = subprocess.run(
      ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
      capture_output=True, check=True).stdout.decode().split("\0")
  for name in filter(None, files):
    source = os.path.join(REPO_ROOT, name)
    if os.path.isfile(source):  # deleted but not yet committed files are listed too
      os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
      shutil.copy2(source, os.path.join(dest, name))
  return dest


def test_console_scripts_name_functions():
  """Each script's target is a top-level function of its module that a console script
  can call with no argument (read, not imported: the modules define absl flags at
  import, which one process cannot define twice)."""
  scripts = pyproject()["project"]["scripts"]
  assert set(scripts) == set(ENTRY_POINTS)
  for name, target in scripts.items():
    module, _, attr = target.partition(":")
    spec = importlib.util.find_spec(module)
    with open(spec.origin) as f:
      tree = ast.parse(f.read())
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert attr in functions, (name, target)
    args = functions[attr].args
    required = len(args.posonlyargs) + len(args.args) - len(args.defaults)
    assert required == 0, f"{name} = {target}: a console script calls it with no argument"


def test_packages_are_the_layers():
  include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
  assert sorted(p.rstrip("*") for p in include) == sorted(
      ("phi_jax", "data_pipeline", "eval", "recipe", "configs"))


def test_builtin_config_names_resolve_to_the_configs_package(tmp_path):
  configs_dir = os.path.join(REPO_ROOT, "configs")
  assert cli.builtin_config_args(["--config=tiny", "--plan"], configs_dir) == [
      f"--config={configs_dir}/tiny.py", "--plan"]
  assert cli.builtin_config_args(["--config", "phi1:x"], configs_dir) == [
      "--config", f"{configs_dir}/phi1.py:x"]
  own = tmp_path / "mine.py"
  own.write_text("")
  assert cli.builtin_config_args([f"--config={own}"], configs_dir) == [f"--config={own}"]
  with pytest.raises(cli.UsageError, match=r"'tinny' is neither .* \(ablation_phi1_small, ablation_quality, long_context, phi1, phi1_small, section5, tiny\)"):
    cli.builtin_config_args(["--config=tinny"], configs_dir)


def _wheel_requirements(wheel: str) -> dict[str, list[str]]:
  """{extra ('' for the base): [requirement]} from a wheel's METADATA."""
  import zipfile  # pylint: disable=g-import-not-at-top
  with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    metadata = z.read(name).decode()
  out: dict[str, list[str]] = {}
  for line in metadata.splitlines():
    if line.startswith("Requires-Dist: "):
      req, _, marker = line[len("Requires-Dist: "):].partition(";")
      extra = re.search(r'extra == "([^"]+)"', marker)
      out.setdefault(extra.group(1) if extra else "", []).append(req.strip())
  return out


def _build_wheel(src: str, out: str) -> str:
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, src],
                 check=True, capture_output=True, timeout=600)
  (wheel,) = [os.path.join(out, n) for n in os.listdir(out) if n.endswith(".whl")]
  return wheel


FORWARD = """
import os, sys
import numpy as np
import configs.tiny, phi_jax
assert 'site-packages' in phi_jax.__file__, phi_jax.__file__
config = phi_jax.PhiConfig.from_mapping(configs.tiny.get_config().model).replace(num_layers=2)
model = phi_jax.init_model(config)
logits = model(np.zeros((1, 8), np.int32))
assert logits.shape == (1, 8, config.vocab_size) and np.isfinite(np.asarray(logits)).all()
print('params', phi_jax.count_params(configs.tiny.get_config()))
"""


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_virtualenv_and_runs_outside_the_repo(tmp_path):
  wheel = _build_wheel(clean_copy(str(tmp_path / "src")), str(tmp_path / "dist"))
  requires = _wheel_requirements(wheel)
  assert requires[""] == pins("requirements.txt")  # the pins are the versions installed
  assert requires["data"] == pins("requirements-data.txt")
  jax_pin = next(p for p in pins("requirements.txt") if p.startswith("jax=="))
  assert requires["tpu"] == [jax_pin.replace("jax", "jax[tpu]", 1)]

  venv = str(tmp_path / "venv")
  subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
  bin_dir = os.path.join(venv, "bin")
  install = subprocess.run([os.path.join(bin_dir, "python"), "-m", "pip", "install", "-q",
                            wheel], capture_output=True, text=True, timeout=1800)
  assert install.returncode == 0, install.stderr[-3000:]

  outside = tmp_path / "elsewhere"
  outside.mkdir()
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  env.update(JAX_PLATFORMS="cpu", PATH=bin_dir + os.pathsep + env.get("PATH", ""))

  def run(*args):
    return subprocess.run(list(args), cwd=outside, env=env, capture_output=True, text=True,
                          timeout=600)

  forward = run(os.path.join(bin_dir, "python"), "-c", FORWARD)
  assert forward.returncode == 0, forward.stderr[-3000:]
  assert re.search(r"params \d+", forward.stdout)
  for script, flag in ENTRY_POINTS.items():
    result = run(os.path.join(bin_dir, script), "--help")
    # absl's --help exits 1 (argparse's, phi-jax-eval's, 0), having printed the flags
    assert result.returncode in (0, 1) and "Traceback" not in result.stderr, (script, result.stderr)
    assert flag in result.stdout, (script, result.stdout[-2000:])
  # a built-in config by name, without a checkout: the plan of the whole tiny pipeline
  plan = run(os.path.join(bin_dir, "phi-jax-run"), "--config=tiny", "--plan",
             f"--workdir={outside / 'work'}")
  assert plan.returncode == 0, plan.stderr[-3000:]
  assert "pretrain" in plan.stdout and "not built yet" in plan.stdout
