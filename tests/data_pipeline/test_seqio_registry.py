"""`import data_pipeline.seqio_registry` registers every task and mixture, as T5X expects.

Each check runs in a fresh process (the registry is filled at import), with the data
directory from $PHI_JAX_DATA_DIR or SeqIO's TFDS data-dir override, and reads examples
through docs/seqio_example.py, which calls nothing of phi_jax but the import.
"""

import os
import re
import subprocess
import sys

import pytest

from data_pipeline import token_dataset
from phi_jax.tokenizer import byte_level
from tests.conftest import REPO_ROOT
from tests.data_pipeline.test_token_dataset import code_rows, exercise_rows, write_jsonl

pytest.importorskip("seqio")

from data_pipeline import catalog  # noqa: E402

# every dataset the data stage builds, and every mixture the runner trains on
TASKS = tuple(catalog.DATASETS) + ("humaneval",)
MIXTURES = tuple(catalog.MIXTURES)
EXAMPLE = os.path.join(REPO_ROOT, "docs", "seqio_example.py")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A data stage's output layout: WORKDIR/data/tfds/<name>/1.0.0 and WORKDIR/data/tokenizer."""
  root = tmp_path_factory.mktemp("registry")
  tok = byte_level()
  data = root / "data"
  tok.save(str(data / "tokenizer"))
  for name, rows in (("phi1_filtered_code", code_rows(9)),
                     ("phi1_textbooks", code_rows(4, prefix="book")),
                     ("phi1_exercises", exercise_rows(5)),
                     ("phi1_mined_exercises", exercise_rows(3))):
    jsonl = write_jsonl(root / f"{name}.jsonl", rows)
    token_dataset.write_jsonl_dataset(name, [jsonl], tok, str(data / "tfds"))
  return root


def read(*args, env_extra=None):
  env = {k: v for k, v in os.environ.items() if not k.startswith("PHI_JAX_")}
  env.update(env_extra or {}, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, EXAMPLE, *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def examples(stdout):
  """{name: [(split, target tokens, decoded text)]} of the example script's lines."""
  out = {}
  for line in stdout.splitlines():
    m = re.match(r"(\w+) (\w+) \d+: (\d+) target tokens, features \[(.*?)\]: (.*)$", line)
    if m:
      out.setdefault(m.group(1), []).append((m.group(2), int(m.group(3)), m.group(4), m.group(5)))
  return out


def test_import_registers_every_task_and_mixture_from_the_environment(workdir):
  result = read("--mixture_or_task=" + ",".join(TASKS + MIXTURES), "--num_examples=2",
                env_extra={"PHI_JAX_DATA_DIR": str(workdir / "data" / "tfds")})
  assert result.returncode == 0, result.stderr[-3000:]
  got = examples(result.stdout)
  assert set(got) == set(TASKS + MIXTURES)
  for name, rows in got.items():
    assert len(rows) == 2, name
    split, n_tokens, features, _ = rows[0]
    assert split == ("test" if name == "humaneval" else "train")
    assert n_tokens > 1
  # the exercises carry their loss mask; the first code document decodes to its text
  assert "'loss_mask'" in got["phi1_exercises"][0][2]
  assert "'inputs'" in got["humaneval"][0][2]
  assert got["phi1_filtered_code"][0][3].startswith(repr("def c_0(x):\n")[:-1])


@pytest.mark.slow
def test_seqio_tfds_data_dir_override_and_a_clear_error_without_one(workdir):
  result = read("--mixture_or_task=phi1_code_exercises", "--num_examples=5",
                f"--tfds_data_dir={workdir / 'data' / 'tfds'}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(examples(result.stdout)["phi1_code_exercises"]) == 5
  missing = read("--mixture_or_task=phi1_code_exercises")
  assert missing.returncode != 0
  assert "set $PHI_JAX_DATA_DIR, or call seqio.set_tfds_data_dir_override" in missing.stderr
