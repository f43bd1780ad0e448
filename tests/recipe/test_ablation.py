"""The Figure 2.1 ablation: arms differ only in data, teacher arms are skipped with a
reason, the summary carries the paper's values; end to end at tiny scale (one short
run here, the documented three-seed result in the slow target)."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from configs import ablation_phi1_small, ablation_quality, phi1_small
from recipe import ablation
from tests.conftest import REPO_ROOT, SHORT_TRAINING
from tests.recipe.reporting.test_trust import assert_matches_exact


def _leaves(config, prefix=""):
  out = {}
  for key, value in config.items():
    path = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_leaves(value, path + "."))
    else:
      out[path] = value
  return out


def test_runs_differ_only_in_data_and_budgets_and_seeds_only_in_training(tmp_path):
  config = ablation_quality.get_config()
  config.ablation.textbooks = ("books.jsonl",)
  runs = {run: _leaves(ablation.run_config(config, run, 200, 0, str(tmp_path)))
          for run in ablation.RUNS}
  base = runs["filtered"]
  for run, leaves in runs.items():
    differing = {k for k in base if base[k] != leaves[k]} - {"workdir"}
    assert all(k.startswith("data.") or k in ("train.data", "finetune.data")
               for k in differing), (run, differing)
  assert runs["stack_plus"]["data.quality.keep_threshold"] == 0.0
  assert runs["code_textbook"]["train.data"] == ("phi1_code_textbook",)
  assert runs["code_textbook"]["data.textbooks"] == ("books.jsonl",)
  assert runs["filtered"]["data.textbooks"] == ()
  for key in ("train.batch_size", "train.seq_len", "model.d_model", "train.steps"):
    assert len({leaves[key] for leaves in runs.values()}) == 1
  # a budget is the pretraining length of its own run; a seed is the run's seed; the
  # data stage is the same for every budget and seed
  other = _leaves(ablation.run_config(config, "filtered", 70, 2, str(tmp_path)))
  assert {k for k in base if base[k] != other[k]} == {"workdir", "train.steps", "seed"}
  assert ablation.data_config(config, "filtered", str(tmp_path)).seed == config.seed
  assert base["eval.checkpoints"] == ("pretrain",) and base["eval.model"] == "finetune"


def test_teacher_arms_are_skipped_with_the_reason_without_a_teacher():
  config = ablation_quality.get_config()
  reasons = ablation.skip_reasons(config)
  assert set(reasons) == {"code_textbook", "code_textbook_exercises"}
  assert "no teacher is configured" in reasons["code_textbook"]
  assert ablation._runs(config) == ["stack_plus", "filtered"]
  assert ablation.finetune_data(config, "filtered") == ("phi1_mined_exercises",)
  config.ablation.textbooks = ("books.jsonl",)
  assert "CodeExercises" in ablation.skip_reasons(config)["code_textbook_exercises"]
  config.synth.teacher.model = "gpt-3.5-turbo"
  assert ablation.skip_reasons(config) == {}
  assert ablation.finetune_data(config, "code_textbook") == ("phi1_code_exercises",)
  assert ablation.data_config(config, "code_textbook", "/w").stages == ("data", "synthesize")
  assert ablation.data_config(config, "filtered", "/w").stages == ("data",)
  config.ablation.arms = ("stack_plus", "nope")
  with pytest.raises(ValueError, match="config.ablation.arms: unknown arm 'nope'"):
    ablation.skip_reasons(config)


def test_the_350m_configs_have_their_own_budget():
  small = phi1_small.get_config()
  assert small.train.steps == 36_000 and small.train.keep_steps == ()
  assert small.finetune.model == "pretrain"
  assert not any(str(ref).startswith("pretrain:") for ref in small.eval.checkpoints)
  fig = ablation_phi1_small.get_config()
  assert fig.ablation.size == "350M" and fig.model.d_model == 1024
  tokens = [b * fig.train.batch_size * fig.train.seq_len for b in fig.ablation.budgets]
  assert [round(t / 1e9) for t in tokens] == [26, 75]  # the figure's 26B and ~76B
  assert ablation.skip_reasons(fig) == {}  # GPT-3.5 is its teacher


def test_spread_verdicts():
  lo, hi = ablation.stats([2.0, 2.1, 2.05]), ablation.stats([2.3, 2.2, 2.4])
  assert lo["n"] == 3 and abs(lo["sd"] - 0.05) < 1e-9
  assert ablation.compare(lo, hi, lower_is_better=True).startswith("beyond the spread")
  assert ablation.compare(hi, lo, lower_is_better=True).startswith("the other way")
  mixed = ablation.stats([2.0, 2.35])
  assert ablation.compare(mixed, hi, lower_is_better=True).startswith("not beyond")
  one = ablation.stats([2.0])
  assert one["sd"] is None
  assert ablation.compare(one, hi, lower_is_better=True).startswith("one seed")


def test_the_paper_values_are_the_texts():
  assert ablation.PAPER["stack_plus"]["350M"][0] == 12.19
  assert ablation.PAPER["filtered"]["350M"][0] == 17.68
  assert ablation.PAPER["code_textbook"]["350M"][0] == 20.12
  assert ablation.PAPER["code_textbook"]["1.3B"][0] == 29.0
  assert ablation.PAPER["code_textbook_exercises"]["1.3B"][0] == 50.6
  assert ablation.PAPER["stack_plus"]["1.3B"] == (
      None, ablation.FIGURE_ONLY + "; trained for 76B tokens (Figure 2.1 caption)")
  for sizes in ablation.PAPER.values():  # every value names its source
    assert all(source for _, source in sizes.values())


ABLATION_ARGS = ("--config.model.num_layers=2", "--config.eval.limit=2",
                 "--config.eval.bpb_limit=5", "--config.eval.max_new_tokens=16",
                 *SHORT_TRAINING)


def _ablation(*args, timeout=1800):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  return subprocess.run(
      [sys.executable, "-m", "recipe.ablation", "--config=configs/ablation_quality.py",
       *ABLATION_ARGS, *args],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_ablation_runs_without_a_teacher_and_writes_both_scores_beside_the_paper(tmp_path):
  workdir = str(tmp_path / "ablation")
  result = _ablation(f"--workdir={workdir}", "--config.ablation.budgets=6",
                     "--config.ablation.seeds=0")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "ablation arm code_textbook: skipped: needs synthetic textbooks" in result.stdout
  [res] = json.load(open(os.path.join(workdir, "ablation.json")))
  assert res["size"] == "tiny" and set(res["skipped"]) == {"code_textbook",
                                                           "code_textbook_exercises"}
  [group] = res["groups"]
  rows = {row["arm"]: row for row in group["rows"]}
  for arm in ("stack_plus", "filtered"):  # scored after pretraining alone ...
    assert rows[arm]["stage"] == "pretrain" and rows[arm]["bpb"]["mean"] > 0
    assert rows[arm]["pass@1"]["n"] == 1
    finetuned = rows[f"{arm}_finetuned"]  # ... and after finetuning
    assert finetuned["scored_after"] == "finetuning on phi1_mined_exercises"
    assert finetuned["bpb"]["mean"] != rows[arm]["bpb"]["mean"]
  assert "skipped" in rows["code_textbook"] and "skipped" in rows["code_textbook_exercises"]
  assert group["verdict"]["pretrain"]["bpb"] == "one seed: the spread is unknown"
  # every pair of the four scored rows compared on the same problems
  assert len(group["paired"]) == 6
  assert all(p["seeds"] == ["0"] and p["num_problems"] > 0 for p in group["paired"])
  md = open(os.path.join(workdir, "ablation.md")).read()
  assert "| The Stack+ (unfiltered code) | pretraining |" in md
  assert "12.19% (§2.1" in md and "50.6% (phi-1" in md
  assert "| CodeTextbook -> CodeExercises | skipped: needs synthetic textbooks" in md
  assert open(os.path.join(workdir, "ablation.png"), "rb").read().startswith(b"\x89PNG")
  # a second command resumes: every node of every run is complete
  again = _ablation(f"--workdir={workdir}", "--config.ablation.budgets=6",
                    "--config.ablation.seeds=0", "--plan")
  assert again.returncode == 0, again.stderr[-3000:]
  actions = [line.split()[2] for line in again.stdout.splitlines()
             if line.startswith("  ") and "stage" not in line]
  assert actions and set(actions) == {"skip"}


@pytest.mark.slow
def test_small_scale_result_three_seeds(tmp_path):
  """The documented small-scale result (docs/ablation.md): the tiny model, the arms
  that run offline, both budgets, three seeds."""
  workdir = os.environ.get("PHI_JAX_ABLATION_WORKDIR") or str(tmp_path / "ablation")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run(
      [sys.executable, "-m", "recipe.ablation", "--config=configs/ablation_quality.py",
       f"--workdir={workdir}"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
      timeout=6 * 3600)
  assert result.returncode == 0, result.stderr[-3000:]
  [res] = json.load(open(os.path.join(workdir, "ablation.json")))
  for group in res["groups"]:
    for row in group["rows"]:
      if "skipped" not in row:
        assert row["bpb"]["n"] == 3 and row["bpb"]["sd"] is not None
    assert set(group["verdict"]) == {"pretrain", "finetune"}


def _fake_run(run_workdir, pretrained: dict, finetuned: dict) -> None:
  """A finished run's eval outputs: the finetuned model's summary and per-problem
  pass@1, the pretrained checkpoint's in the sweep."""
  def write(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      json.dump(value, f)

  def summary(per_task):
    return {"humaneval": {"overall": {"pass@1": sum(per_task.values()) / len(per_task)},
                          "bpb": 1.0}}

  eval_dir = os.path.join(run_workdir, "eval")
  write(os.path.join(eval_dir, "summary.json"), summary(finetuned))
  write(os.path.join(eval_dir, "humaneval", "pass_at_k.json"),
        {"per_task": {t: {"pass@1": v} for t, v in finetuned.items()}})
  sweep_dir = os.path.join("eval", "checkpoints", "pretrain_10")
  write(os.path.join(eval_dir, "checkpoints.json"),
        [{"model": "pretrain:10", "benchmarks": summary(pretrained), "dir": sweep_dir}])
  write(os.path.join(run_workdir, sweep_dir, "humaneval", "pass_at_k.json"),
        {"per_task": {t: {"pass@1": v} for t, v in pretrained.items()}})


def test_paired_comparisons_of_every_arm_pair_against_brute_force(tmp_path):
  """Synthetic runs (two arms, two seeds, pretrained and finetuned): the summary JSON
  has every pair of scored rows with the paired difference of pass@1 and its interval,
  equal to a brute-force computation over every bootstrap resample of the problems
  (seeds averaged per problem first), and ablation.md renders them."""
  config = ablation_quality.get_config()
  rng = np.random.default_rng(0)
  tasks = [f"HumanEval/{i}" for i in range(6)]
  per_problem, scores = {}, {}
  for run in ("stack_plus", "filtered"):
    for seed in (0, 1):
      values = {stage: {t: float(round(v, 3)) for t, v in zip(tasks, rng.uniform(0, 1, 6))}
                for stage in ("pretrain", "finetune")}
      directory = ablation.run_dir(str(tmp_path), "tiny", run, 10, seed)
      _fake_run(directory, values["pretrain"], values["finetune"])
      scores[(run, 10, seed)] = ablation.run_scores(directory)
      for stage, v in values.items():
        per_problem.setdefault((run, stage), {})[seed] = v
  results = ablation._size_results(config, ["stack_plus", "filtered"], [10], [0, 1],
                                   ablation.skip_reasons(config), scores, {}, 1.0)
  [group] = results["groups"]
  rows = [(r["arm"], r["run"], r["stage"]) for r in group["rows"] if "skipped" not in r]
  assert len(rows) == 4
  expected_pairs = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]]
  assert [(p["a"], p["b"]) for p in group["paired"]] == [(a[0], b[0]) for a, b in
                                                         expected_pairs]
  for pair, (a, b) in zip(group["paired"], expected_pairs):
    mean = lambda key: {t: sum(per_problem[key][s][t] for s in (0, 1)) / 2 for t in tasks}
    assert pair["seeds"] == ["0", "1"] and pair["metric"] == "pass@1"
    assert_matches_exact(pair, mean(a[1:]), mean(b[1:]))
  # per-problem results stay out of the summary's rows
  assert all("per_task" not in v for r in group["rows"] for v in r.get("seeds", {}).values())
  os.makedirs(tmp_path / "tiny", exist_ok=True)
  with open(tmp_path / "tiny" / "results.json", "w") as f:
    json.dump(results, f)
  [written] = ablation.write_summary(str(tmp_path))
  assert written["groups"][0]["paired"] == json.loads(json.dumps(group["paired"]))
  md = open(tmp_path / "ablation.md").read()
  first = group["paired"][0]
  assert (f"| filtered code | The Stack+ (unfiltered code) | 0, 1 | 6 | "
          f"{100 * first['difference']:+.2f} | {100 * first['interval'][0]:+.2f} to "
          f"{100 * first['interval'][1]:+.2f} |") in md
