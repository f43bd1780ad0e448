"""The Section 5 experiment (configs/section5.py, recipe/section5.py) end to end at tiny
scale, on exercises planted close to HumanEval problems, and its Table 3 layout."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import section5 as section5_config
from data_pipeline.decontaminate.targets import load_targets
from recipe import paper
from tests import conftest
from tests.recipe.reporting.test_trust import assert_matches_exact

PLANTED = (0, 2, 4)  # HumanEval problems with a copy among the exercises
EVALUATED = 8


def _exercises(path: str) -> None:
  """Copies of HumanEval/0, 2, 4 under other names (AST match rate 1) and three
  exercises of their own."""
  targets = {t.task_id: t for t in load_targets(["humaneval"])[0]}
  rows = []
  for i in PLANTED:
    t = targets[f"HumanEval/{i}"]
    rows.append({"id": f"planted-{i}", "prompt": t.prompt.replace("def ", "def my_", 1),
                 "solution": t.solution, "origin": f"planted:{t.task_id}"})
  own = (
      ("read_config", "Read key=value lines of a file into a dict.",
       "    try:\n        with open(path) as f:\n"
       "            return {k.strip(): v.strip() for k, v in\n"
       "                    (line.split('=', 1) for line in f if '=' in line)}\n"
       "    except OSError as e:\n        raise RuntimeError(path) from e\n"),
      ("retry", "Call fn up to n times until it does not raise.",
       "    last = None\n    for _ in range(n):\n        try:\n            return fn()\n"
       "        except Exception as e:  # noqa\n            last = e\n"
       "    raise last\n"),
      ("group_by", "Group items by key(item).",
       "    out = {}\n    for item in items:\n"
       "        out.setdefault(key(item), []).append(item)\n"
       "    return dict(sorted(out.items(), key=lambda kv: str(kv[0])))\n"),
  )
  args = {"read_config": "path", "retry": "fn, n", "group_by": "items, key"}
  for i, (name, doc, body) in enumerate(own):
    rows.append({"id": f"own-{i}", "prompt": f'def {name}({args[name]}):\n    """{doc}"""\n',
                 "solution": body, "origin": "own"})
  with open(path, "w") as f:
    f.write("".join(json.dumps(r) + "\n" for r in rows))


def test_the_config_is_phi1_with_the_papers_taus():
  config = section5_config.get_config()
  assert tuple(config.section5.taus) == (0.95, 0.9, 0.85, 0.8) == tuple(paper.TABLE3)
  assert config.decontaminate.prune is False  # the base run trains on unpruned data
  assert config.finetune.model == "pretrain:24000"  # each tau restarts from phi-1-base
  assert set(config.decontaminate.checks) == {"embedding", "ast"}
  with pytest.raises(ValueError, match="unknown variant"):
    section5_config.get_config("huge")


@pytest.mark.slow
def test_section5_tiny_runs_end_to_end_and_writes_table3(tmp_path):
  exercises = str(tmp_path / "exercises.jsonl")
  _exercises(exercises)
  workdir = str(tmp_path / "s5")
  args = ["--config=configs/section5.py:tiny", f"--workdir={workdir}",
          f"--config.data.exercises=('{exercises}',)", f"--config.eval.limit={EVALUATED}",
          "--config.eval.max_new_tokens=32", "--config.model.num_layers=2",
          *conftest.SHORT_TRAINING]
  env = dict(os.environ, JAX_PLATFORMS="cpu", TRANSFORMERS_VERBOSITY="error")
  env.pop("XLA_FLAGS", None)
  result = subprocess.run([sys.executable, "-m", "recipe.section5", *args],
                          cwd=conftest.REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=3000)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(workdir, "table3.json")) as f:
    table = json.load(f)
  assert [r["tau"] for r in table["rows"]] == [t for t in paper.TABLE3 for _ in range(3)]
  for row in table["rows"]:
    if row["set"] == "similar":  # the planted copies: similar at every tau
      assert row["problems"] == len(PLANTED)
    if row["set"] == "non-similar":
      assert row["problems"] == EVALUATED - len(PLANTED)
    if row["set"] == "total":
      assert row["exercises_removed"] == len(PLANTED)  # pruned at each tau
    assert row["phi-1"] is not None and row["retrained"] is not None
  for tau in paper.TABLE3:
    # each tau finetuned again, from the base run's pretraining
    assert os.path.isfile(os.path.join(workdir, f"tau_{tau:g}", "finetune", "COMPLETE.json"))
    assert not os.path.exists(os.path.join(workdir, f"tau_{tau:g}", "pretrain"))
    kept = os.path.join(workdir, f"tau_{tau:g}", "decontaminate", "phi1_exercises",
                        "kept.jsonl")
    with open(kept) as f:
      assert sorted(json.loads(line)["id"] for line in f) == ["own-0", "own-1", "own-2"]
  md = open(os.path.join(workdir, "table3.md")).read()
  assert "| tau | | problem count | phi-1 | phi-1 retrained on pruned data |" in md
  assert "| 0.95 | similar | 3 |" in md and "| 71 | 81.7% | 74.6% | 57.7% |" in md
  assert "| 0.8 | similar | 3 |" in md and "| 116 | 59.5% | 52.6% | 45.7% |" in md
  # run again: everything is complete, nothing reruns
  marker = os.path.join(workdir, "tau_0.9", "finetune", "COMPLETE.json")
  before = os.path.getmtime(marker)
  again = subprocess.run([sys.executable, "-m", "recipe.section5", *args],
                         cwd=conftest.REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert os.path.getmtime(marker) == before


def test_the_papers_table3_totals_follow_from_its_parts():
  """phi-1 scores 50.6% and StarCoder-Prompted 41.5% of all 164 problems at every tau
  (Table 3); each part's rate is a whole number of problems."""
  for tau, parts in paper.TABLE3.items():
    for count, rates in parts.values():
      for rate in rates:
        assert abs(count * rate / 100 - round(count * rate / 100)) < 0.06, (tau, rate)
    *_, (name, total, rates) = paper.table3_rows(tau)
    assert (name, total, rates[0], rates[2]) == ("total", 164, 50.6, 41.5)
  assert paper.table3_rows(0.5) == []


def test_table3_pairs_retrained_with_phi1_on_each_set_against_brute_force(tmp_path):
  """Synthetic finished runs (six problems, three samples each; three of them similar
  at tau 0.95): each Table 3 row carries the paired difference retrained minus phi-1 on
  that row's problems, equal to a brute-force computation over every bootstrap
  resample, and table3.md renders it."""
  rng = np.random.default_rng(3)
  tasks = [f"HumanEval/{i}" for i in range(6)]
  similar = tasks[:3]
  passed = {model: {t: [bool(x) for x in rng.integers(0, 2, 3)] for t in tasks}
            for model in ("phi-1", "retrained")}

  def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(text)

  for model, run in (("phi-1", "base"), ("retrained", "tau_0.95")):
    write(str(tmp_path / run / "eval" / "humaneval" / "results.jsonl"),
          "".join(json.dumps({"task_id": t, "passed": p}) + "\n"
                  for t in tasks for p in passed[model][t]))
  write(str(tmp_path / "base" / "decontaminate" / "phi1_exercises" / "report.json"),
        json.dumps({"similar": {"humaneval": {"0.95": similar}}}))
  write(str(tmp_path / "tau_0.95" / "decontaminate" / "summary.json"),
        json.dumps({"corpora": {"phi1_exercises": {"removed": 3, "records": 9}}}))
  # in a process of its own: recipe.section5 and recipe.ablation both define --config
  result = subprocess.run(
      [sys.executable, "-c", "import sys; from recipe import section5; "
       "section5.write_table3(sys.argv[1], [0.95])", str(tmp_path)],
      cwd=conftest.REPO_ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / "table3.json") as f:
    table = json.load(f)
  rate = lambda model, ids: {t: sum(passed[model][t]) / 3 for t in ids}
  sets = {"similar": similar, "non-similar": tasks[3:], "total": tasks}
  assert [r["set"] for r in table["rows"]] == ["similar", "non-similar", "total"]
  for row in table["rows"]:
    ids = sets[row["set"]]
    assert_matches_exact(row["paired"], rate("phi-1", ids), rate("retrained", ids))
  md = open(tmp_path / "table3.md").read()
  total = table["rows"][-1]["paired"]
  assert "## Paired comparisons: retrained minus phi-1" in md
  assert (f"| 0.95 | total | 6 | {100 * total['difference']:+.2f} | "
          f"{100 * total['interval'][0]:+.2f} to {100 * total['interval'][1]:+.2f} |") in md
