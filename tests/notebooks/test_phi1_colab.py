"""notebooks/phi1_colab.ipynb executes top to bottom headless (nbclient), installing
phi_jax from a clean copy of this checkout into a fresh virtualenv, as Colab would."""

import json
import os
import site
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.test_packaging import clean_copy

NOTEBOOK = os.path.join(REPO_ROOT, "notebooks", "phi1_colab.ipynb")


def test_notebook_is_valid_and_installs_from_a_repository():
  nbformat = pytest.importorskip("nbformat")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
  assert "pip" in code and "phi-jax-run" in code and "from_pretrained" in code
  assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # stored clean


@pytest.mark.slow
def test_notebook_executes_every_cell(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  # A fresh virtualenv that sees this one's packages (a .pth file), so installing
  # phi_jax there needs no download, and nothing is installed into this one.
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
  python = str(venv / "bin" / "python")
  venv_site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
  with open(os.path.join(venv_site, "parent_venv.pth"), "w") as f:
    f.write("\n".join(site.getsitepackages()) + "\n")
  kernels = tmp_path / "jupyter" / "kernels" / "phi-jax-test"
  kernels.mkdir(parents=True)
  (kernels / "kernel.json").write_text(json.dumps({
      "argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "phi_jax test", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  monkeypatch.setenv("PHI_JAX_SOURCE", clean_copy(str(tmp_path / "phi_jax_checkout")))
  monkeypatch.setenv("PHI_JAX_NOTEBOOK_QUICK", "1")
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "error")
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.delenv("PYTHONPATH", raising=False)
  workdir = tmp_path / "colab"
  workdir.mkdir()
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(nb, kernel_name="phi-jax-test", timeout=1500,
                          resources={"metadata": {"path": str(workdir)}}).execute()
  outputs = ["".join(o.get("text", "") for o in c.get("outputs", []))
             for c in nb.cells if c.cell_type == "code"]
  text = "\n".join(outputs)
  assert "installed phi_jax from" in text
  assert os.path.join("venv", "lib") in text  # phi_jax came from the fresh venv's install
  assert (workdir / "phi_jax_tiny" / "export_hf" / "COMPLETE.json").is_file()
  assert "--- prompt 0" in text
  assert "compute dtype float32 (float32 on CPU)" in text
  assert "max |phi_jax - transformers| logits" in text
  assert '"benchmark":' in text and '"limit": 3' in text
