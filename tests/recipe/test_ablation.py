"""The data-quality ablation: arms that differ only in data; end to end in the slow target."""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from configs import ablation_quality
from recipe import ablation
from tests.conftest import REPO_ROOT
from tests.test_run import SHORT_TRAINING


def _leaves(config, prefix=""):
  out = {}
  for key, value in config.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_leaves(value, path + "."))
    else:
      out[path] = value
  return out


def test_arms_differ_only_in_data(tmp_path):
  config = ablation_quality.get_config()
  config.ablation.textbooks = ("books.jsonl",)
  arms = {arm: _leaves(ablation.arm_config(config, arm, str(tmp_path)))
          for arm in config.ablation.arms}
  base = arms["filtered"]
  for arm, leaves in arms.items():
    differing = {k for k in base if base[k] != leaves[k]} - {"workdir"}
    assert all(k.startswith("data.") or k == "train.data" for k in differing), (arm, differing)
  assert arms["unfiltered"]["data.quality.keep_threshold"] == 0.0
  assert arms["filtered_textbooks"]["train.data"] == ("phi1_code_textbook",)
  assert arms["filtered_textbooks"]["data.textbooks"] == ("books.jsonl",)
  # the same model and token budget in every arm
  for key in ("train.steps", "train.batch_size", "train.seq_len", "model.d_model"):
    assert len({leaves[key] for leaves in arms.values()}) == 1
  config.ablation.textbooks = ()
  with pytest.raises(ValueError, match="textbooks"):
    ablation.arm_config(config, "filtered_textbooks", str(tmp_path))


def _textbooks(path):
  """A stand-in for synthetic textbooks: prose + code sections (the synthesize stage
  makes the real ones with a teacher LLM)."""
  rows = []
  for i in range(40):
    rows.append({"id": f"book-{i}", "origin": f"test-textbook-{i}", "license": "",
                 "meta": {}, "text": (
        f"## Lesson {i}: loops and sums\n\nA loop visits every item of a list once. To add "
        f"the numbers up to {i}, keep a running total and add each number to it.\n\n"
        f"```python\ndef total_{i}(numbers):\n    total = 0\n    for n in numbers:\n"
        f"        total += n\n    return total\n```\n\nFor example total_{i}([1, 2]) is 3.\n")})
  with open(path, "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.slow
def test_ablation_runs_three_arms_and_draws_the_chart(tmp_path):
  books = str(tmp_path / "books.jsonl")
  _textbooks(books)
  workdir = str(tmp_path / "ablation")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run(
      [sys.executable, "-m", "recipe.ablation", "--config=configs/ablation_quality.py",
       f"--workdir={workdir}", f"--config.ablation.textbooks=('{books}',)",
       "--config.model.num_layers=2", "--config.eval.limit=5", "--config.eval.bpb_limit=20",
       *SHORT_TRAINING],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=3000)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.load(open(os.path.join(workdir, "ablation.json")))
  assert set(results) == {"unfiltered", "filtered", "filtered_textbooks"}
  for arm in results.values():
    assert arm["humaneval"]["pass@1"] is not None and arm["humaneval"]["bpb"] > 0
  for png in ("ablation_pass1.png", "ablation_bpb.png"):
    assert open(os.path.join(workdir, png), "rb").read().startswith(b"\x89PNG")
  assert "| filtered_textbooks |" in open(os.path.join(workdir, "ablation.md")).read()
