"""HumanEval infilling on the public files: canonical middles pass, empty middles fail."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from eval import run as eval_run
from eval.benchmarks import (HumanEvalInfillMulti, HumanEvalInfillSingle, HumanEvalInfillSpan,
                             get_benchmark)
from eval.settings import EvalSettings
from tests.conftest import REPO_ROOT
from tests.eval.benchmarks.helpers import write_jsonl

DATA_DIR = os.path.join(os.path.dirname(REPO_ROOT), "shared", "data", "humaneval-infilling")
# benchmark -> (file, number of problems): the counts of the public files
FILES = {
    "humaneval-infill-single": ("HumanEval-SingleLineInfilling.jsonl.gz", 1033),
    "humaneval-infill-multi": ("HumanEval-MultiLineInfilling.jsonl.gz", 5815),
    "humaneval-infill-span": ("HumanEval-RandomSpanInfilling.jsonl.gz", 1640),
}
needs_data = pytest.mark.skipif(not os.path.isdir(DATA_DIR), reason=f"no {DATA_DIR}")
WRONG = EvalSettings(k=(1,), timeout_s=2.0)  # a wrong middle may loop forever
SPREAD = 12  # problems per benchmark in the quick test, evenly spaced through the file


def data_path(name):
  return os.path.join(DATA_DIR, FILES[name][0])


def write_samples(path, problems, completion=None):
  return write_jsonl(path, [{"task_id": p.task_id, "completion": p.canonical_solution
                             if completion is None else completion} for p in problems])


def spread(problems, count):
  step = max(1, len(problems) // count)
  return problems[::step][:count]


@needs_data
@pytest.mark.parametrize("name", sorted(FILES))
def test_the_files_load_whole(name):
  problems = get_benchmark(name).load(data_path(name))
  assert len(problems) == FILES[name][1]
  assert len({p.task_id for p in problems}) == len(problems)
  # every problem is a cut of one of HumanEval's 164 solutions
  assert len({p.task_id.split("/")[2] for p in problems}) == 164
  assert all(p.entry_point and p.canonical_solution is not None for p in problems)
  # random spans may be empty: 14 of the span file's middles are (an empty answer passes)
  empty = sum(not p.canonical_solution for p in problems)
  assert empty == (14 if name == "humaneval-infill-span" else 0)


@needs_data
def test_program_is_prefix_middle_suffix_then_tests():
  problem = HumanEvalInfillMulti().load(data_path("humaneval-infill-multi"))[0]
  program = HumanEvalInfillMulti().program(problem, "MIDDLE")
  assert program.startswith(problem.prompt + "MIDDLE" + problem.suffix)
  assert problem.test in program
  assert program.rstrip().endswith(f"check({problem.entry_point})")


def test_single_line_puts_back_the_newline_the_stop_removed():
  assert HumanEvalInfillSingle.stop == ("\n",)
  assert HumanEvalInfillSingle().middle("    x = 1") == "    x = 1\n"
  assert HumanEvalInfillSingle().middle("    x = 1\n") == "    x = 1\n"
  assert HumanEvalInfillSpan().middle(" x") == " x"  # spans are cut anywhere


@needs_data
@pytest.mark.parametrize("name", sorted(FILES))
def test_canonical_middles_pass_and_empty_middles_fail(tmp_path, name):
  problems = spread(get_benchmark(name).load(data_path(name)), SPREAD)
  right = write_samples(tmp_path / "right.jsonl", problems)
  report = eval_run.evaluate(name, str(tmp_path / "right"), samples_path=right,
                             data_path=data_path(name), settings=EvalSettings(k=(1,)))
  assert report["num_samples"] == SPREAD and report["num_correct"] == SPREAD
  # an empty middle fails wherever the canonical one has code in it
  problems = [p for p in problems if p.canonical_solution.strip()]
  empty = write_samples(tmp_path / "empty.jsonl", problems, completion="")
  report = eval_run.evaluate(name, str(tmp_path / "empty"), samples_path=empty,
                             data_path=data_path(name), settings=WRONG)
  assert report["num_correct"] == 0


@needs_data
def test_the_command_line_scores_samples(tmp_path):
  name = "humaneval-infill-single"
  problems = spread(get_benchmark(name).load(data_path(name)), 4)
  samples = write_samples(tmp_path / "s.jsonl", problems)
  subprocess.run([sys.executable, "-m", "eval.run", "--benchmark", name, "--data",
                  data_path(name), "--samples", samples, "--out", str(tmp_path / "out"),
                  "--k", "1"], cwd=REPO_ROOT, check=True, capture_output=True)
  report = json.load(open(tmp_path / "out" / "pass_at_k.json"))
  assert report["benchmark"] == name and report["overall"]["pass@1"] == 1.0


def test_no_path_is_an_error_naming_the_file():
  with pytest.raises(FileNotFoundError, match="HumanEval-RandomSpanInfilling.jsonl.gz"):
    HumanEvalInfillSpan().load(None)


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("name", sorted(FILES))
def test_all_8488_canonical_middles_pass(tmp_path, name):
  problems = get_benchmark(name).load(data_path(name))
  samples = write_samples(tmp_path / "s.jsonl", problems)
  report = eval_run.evaluate(name, str(tmp_path / "out"), samples_path=samples,
                             data_path=data_path(name), settings=EvalSettings(k=(1,)))
  assert report["num_correct"] == FILES[name][1] == len(problems)


def _fim_model_dir(directory, hf_phi_dir, with_sentinels=True):
  """A random transformers Phi over the byte vocabulary (+ the FIM sentinels)."""
  from phi_jax import fim  # pylint: disable=g-import-not-at-top
  from phi_jax.tokenizer import byte_level  # pylint: disable=g-import-not-at-top
  tokenizer = byte_level()
  if with_sentinels:
    tokenizer.backend.add_special_tokens(list(fim.FIM_TOKENS))
  path, _ = hf_phi_dir(directory, vocab_size=260, max_position_embeddings=1024, seed=1)
  tokenizer.save(path)
  return path


@needs_data
def test_generating_middles_prompts_with_the_suffix(tmp_path, hf_phi_dir):
  import phi_jax  # pylint: disable=g-import-not-at-top
  name = "humaneval-infill-single"
  checkpoint = _fim_model_dir("fim", hf_phi_dir)
  out = tmp_path / "out"
  # what `python -m eval.run --benchmark=... --checkpoint=... --temperature=0` runs
  report = eval_run.evaluate(name, str(out), dataclasses.replace(WRONG, limit=2, n=1,
                                                                 max_new_tokens=8),
                             checkpoint=checkpoint, data_path=data_path(name),
                             model_overrides={"dtype": "float32"})
  samples = [json.loads(line) for line in open(out / "samples.jsonl")]
  problems = get_benchmark(name).load(data_path(name))[:2]
  assert [s["task_id"] for s in samples] == [p.task_id for p in problems]
  # each sample is the greedy middle between the problem's prompt and suffix
  model = phi_jax.from_pretrained(checkpoint, dtype="float32")
  want = phi_jax.generate(model, [p.prompt for p in problems],
                          suffix=[p.suffix for p in problems], max_new_tokens=8, stop=["\n"])
  assert [s["completion"] for s in samples] == [w.text for w in want]
  # (which the prompt alone does not give: the suffix reached the model)
  left_to_right = phi_jax.generate(model, [p.prompt for p in problems], max_new_tokens=8,
                                   stop=["\n"])
  assert [w.text for w in want] != [w.text for w in left_to_right]
  assert report["num_samples"] == 2


@needs_data
def test_generating_middles_needs_a_model_trained_with_fim(tmp_path, hf_phi_dir):
  from phi_jax.cli import UsageError  # pylint: disable=g-import-not-at-top
  name = "humaneval-infill-multi"
  checkpoint = _fim_model_dir("plain", hf_phi_dir, with_sentinels=False)
  with pytest.raises(UsageError, match="no fill-in-the-middle tokens"):
    eval_run.evaluate(name, str(tmp_path / "out"), EvalSettings(limit=1, k=(1,)),
                      checkpoint=checkpoint, data_path=data_path(name))
  assert not os.path.exists(tmp_path / "out")  # refused before anything was written
