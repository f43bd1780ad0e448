"""bench/device_check.sh in its dry mode, and bench/device_image.py's view of the image.

The dry mode runs every part of the GPU check with tiny shapes on the CPU, through the
same import restrictions as the lent machines' image, so that a script that would fail
there fails here first.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import REPO_ROOT

SCRIPT = os.path.join(REPO_ROOT, "bench", "device_check.sh")
PARTS = ("train", "attention", "kernels", "tune", "generate")  # the script's order


def run_check(tmp_path, *args, **env_overrides) -> tuple[subprocess.CompletedProcess, str]:
  """Runs device_check.sh --dry with this interpreter; returns (process, output folder)."""
  out = tmp_path / "out"
  env = {k: v for k, v in os.environ.items()
         if k not in ("XLA_FLAGS", "JAX_PLATFORMS", "PHI_JAX_TEST_PLATFORM",
                      "PHI_JAX_BENCHMARKS_FILE", "OUT")}
  env.update(PYTHON=sys.executable, DEVICE_SITE=str(tmp_path / "site"), **env_overrides)
  process = subprocess.run(["bash", SCRIPT, "--dry", f"--out={out}", *args], env=env,
                           capture_output=True, text=True, timeout=300, check=False)
  return process, str(out)


def summary_rows(out: str) -> dict[str, list[str]]:
  """part -> [status, seconds, result] from the table in summary.md."""
  with open(os.path.join(out, "summary.md")) as f:
    text = f.read()
  rows = {}
  for line in text.splitlines():
    cells = [c.strip() for c in line.strip("|").split("|")]
    if line.startswith("| ") and cells[0] in PARTS:
      rows[cells[0]] = cells[1:]
  return rows


def test_dry_mode_runs_training_and_generation(tmp_path):
  """The fast suite's share of the dry run: the two parts whose code the rest of the
  project changes most (the train step, generation); every part is the slow test below."""
  prepare = subprocess.run(["bash", SCRIPT, "--prepare"], capture_output=True, text=True,
                           env={**os.environ, "PYTHON": sys.executable,
                                "DEVICE_SITE": str(tmp_path / "site")}, check=False)
  assert prepare.returncode == 0, prepare.stderr
  process, out = run_check(tmp_path, "--parts=train,generate")
  assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
  rows = summary_rows(out)
  assert list(rows) == ["train", "generate"]
  assert all(status == "PASS" for status, _, _ in rows.values()), rows
  assert re.match(r"step [\d.]+ ms +[\d,]+ tokens/s +MFU - +\(dropout attn 0.1, resid 0.1\); "
                  r"step [\d.]+ ms +[\d,]+ tokens/s +MFU - +\(dropout off\)$",
                  rows["train"][2]), rows["train"]


def test_parts_beyond_the_budget_are_skipped_and_a_cut_off_check_leaves_its_summary(
    tmp_path):
  """A part whose timeout exceeds what is left of --budget is skipped and named with the
  command that runs it; summary.md is written before each part, so a check killed from
  outside (the device command's limit) still says what finished and what was running."""
  process, out = run_check(tmp_path, "--parts=train,generate", "--budget=100",
                           TIMEOUT_TRAIN="101", TIMEOUT_GENERATE="1")
  assert process.returncode == 1  # generate ran (and timed out); a skip is no failure
  rows = summary_rows(out)
  assert rows["train"][0] == "SKIPPED (timeout 101s > 100s left of the budget)", rows
  assert rows["generate"][0] == "TIMEOUT", rows
  with open(os.path.join(out, "summary.md")) as f:
    assert "run them next with 'bash bench/device_check.sh --parts=train'" in f.read()

  cut = tmp_path / "cut"
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_PLATFORMS", "OUT")}
  check = subprocess.Popen(["bash", SCRIPT, "--dry", f"--out={cut}", "--parts=generate,train"],
                           env={**env, "PYTHON": sys.executable}, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  summary = cut / "summary.md"
  try:
    deadline = time.time() + 60
    while not (summary.exists() and "RUNNING" in summary.read_text()):
      assert time.time() < deadline and check.poll() is None, "no summary while running"
      time.sleep(0.2)
  finally:
    os.killpg(check.pid, signal.SIGKILL)
    check.wait()
  rows = summary_rows(str(cut))
  assert rows["generate"][0] == "RUNNING (cut off if this stays)", rows
  assert rows["train"][0] == "not reached", rows


@pytest.mark.slow
def test_dry_mode_runs_every_part_and_writes_the_rows(tmp_path):
  prepare = subprocess.run(["bash", SCRIPT, "--prepare"], capture_output=True, text=True,
                           env={**os.environ, "PYTHON": sys.executable,
                                "DEVICE_SITE": str(tmp_path / "site")}, check=False)
  assert prepare.returncode == 0, prepare.stderr
  assert os.path.isfile(tmp_path / "site" / "ml_collections" / "__init__.py")

  process, out = run_check(tmp_path)
  assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
  rows = summary_rows(out)
  assert list(rows) == list(PARTS)
  assert all(status == "PASS" for status, _, _ in rows.values()), rows
  assert re.match(r"2 passed, \d+ deselected", rows["kernels"][2]), rows["kernels"]
  assert re.search(r"pallas [\d.]+x@128", rows["attention"][2]), rows["attention"]
  assert re.match(r"step [\d.]+ ms +[\d,]+ tokens/s +MFU -", rows["train"][2]), rows["train"]
  assert rows["generate"][2].startswith("ratio phi_jax / transformers: ")
  # The table is printed at the end of the output too.
  assert "| part | status | seconds | result |" in process.stdout.split("=== generate")[-1]
  for part in PARTS:
    assert os.path.getsize(os.path.join(out, f"{part}.log")) > 0

  # The benchmarks' rows went to the output folder under their sections (the CPU
  # attention timings are never recorded), not to the repository's BENCHMARKS.md.
  with open(os.path.join(out, "benchmarks_rows.md")) as f:
    recorded = f.read()
  from bench import generate, train  # pylint: disable=g-import-not-at-top
  for module, cells in ((train, "| tiny | "), (generate, "| tiny | 2 | 8 | 4 | float32 | - |")):
    section = recorded.split(module.SECTION)[1].split("\n## ")[0]
    rows_here = 2 if module is train else 1  # train: with the config's dropout, then none
    assert sum(line.startswith("| 20") for line in section.splitlines()) == rows_here, section
    assert cells in section
  assert "| off |" in recorded.split(train.SECTION)[1].split("\n## ")[0]
  assert "bench/attention.py" not in recorded
  # attention='auto''s table: every situation and the tuned tiles of this device kind,
  # beside the repository's entries
  import json  # pylint: disable=g-import-not-at-top
  with open(os.path.join(out, "attention_choices.json")) as f:
    choices = json.load(f)
  (kind, situations), = [(k, v) for k, v in choices["devices"].items() if k.lower() == "cpu"]
  assert set(situations) == {"train", "prefill", "train_dropout"}, situations
  assert situations["train_dropout"]["implementation"] in ("pallas", "xla")
  assert set(choices["tiles"][kind]) == {"head_dim=64,seq=128", "head_dim=64,seq=128,dropout"}
  assert rows["tune"][2].count("tiles head_dim") == 2, rows["tune"]


def test_a_failing_or_slow_part_does_not_stop_the_others(tmp_path):
  # No carried ml_collections: the train bench fails on its import, as it would on
  # the GPU machine; generate runs out of its 1 s; the kernel tests still pass.
  process, out = run_check(tmp_path, "--parts=train,generate,kernels", TIMEOUT_GENERATE="1")
  assert process.returncode == 1
  rows = summary_rows(out)
  assert list(rows) == ["train", "generate", "kernels"]
  assert rows["train"][0] == "FAIL (exit 1)"
  assert rows["generate"][0] == "TIMEOUT"
  assert rows["kernels"][0] == "PASS"
  with open(os.path.join(out, "summary.md")) as f:
    summary = f.read()
  assert "## train: FAIL (exit 1), last lines of train.log" in summary
  assert "No module named 'ml_collections'" in summary  # the error tail
  assert "bench/device_check.sh --prepare" in summary  # and what to do about it
  assert "## generate: TIMEOUT" in summary


def test_bad_arguments_are_refused(tmp_path):
  process, _ = run_check(tmp_path, "--parts=train,decode")
  assert process.returncode == 2
  assert "unknown part 'decode'" in process.stderr


def test_the_image_lacks_the_data_stack_but_keeps_carried_packages(tmp_path):
  """grain, seqio, TensorFlow, openai, ... are installed here but not on the image."""
  site = tmp_path / "site"
  (site / "ml_collections").mkdir(parents=True)
  (site / "ml_collections" / "__init__.py").write_text("CARRIED = True\n")
  probe = tmp_path / "probe.py"
  probe.write_text(textwrap.dedent("""
      import importlib.metadata, importlib.util
      import jax, flax, optax, numpy  # the image has these
      for name in ("grain", "seqio", "tensorflow", "openai", "tensorboardX", "datasets"):
        assert importlib.util.find_spec(name) is None, name
        try:
          __import__(name)
        except ModuleNotFoundError:
          pass
        else:
          raise AssertionError(f"{name} imported")
      try:
        importlib.metadata.version("grain")
      except importlib.metadata.PackageNotFoundError:
        pass
      else:
        raise AssertionError("grain's metadata is visible")
      import ml_collections
      assert ml_collections.CARRIED  # from the site folder, not the virtualenv
      print("probe ok")
  """))
  process = subprocess.run(
      [sys.executable, os.path.join(REPO_ROOT, "bench", "device_image.py"), "--site",
       str(site), "--", str(probe)], capture_output=True, text=True, check=False)
  assert process.returncode == 0, process.stderr[-3000:]
  assert process.stdout.strip() == "probe ok"


@pytest.mark.parametrize("argv", [[], ["--site"], ["--"], ["--", "-m"], ["script.py"]])
def test_device_image_usage(argv):
  process = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", "device_image.py"),
                            *argv], capture_output=True, text=True, check=False)
  assert process.returncode != 0 and "usage:" in process.stderr
