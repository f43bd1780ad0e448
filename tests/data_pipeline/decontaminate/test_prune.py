from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from data_pipeline.decontaminate import DecontConfig, DecontConfigError, decontaminate, prune
from tests.data_pipeline.decontaminate.conftest import NEAR_COPY_37, REPO, UNRELATED

# two statements more than the near copy: tau 0.889 with HumanEval/37
FARTHER_COPY_37 = NEAR_COPY_37.replace("    even_items.sort()\n",
                                       "    even_items.sort()\n    values = list(values)\n")
TEXTBOOK = ("## Reading files\n\nA dictionary collects the settings:\n\n```python\n" + UNRELATED
            + "```\n\nEach line is split once.\n")


def _prompt_solution(source: str) -> dict:
  """An exercise record: the def line and docstring, then the body."""
  lines = source.splitlines(keepends=True)
  return {"prompt": "".join(lines[:2]), "solution": "".join(lines[2:])}


@pytest.fixture()
def corpus(tmp_path, humaneval_targets):
  docstring_12 = next(t for t in humaneval_targets if t.task_id == "HumanEval/12").docstring
  lines = [
      json.dumps({"id": "near-copy", **_prompt_solution(NEAR_COPY_37), "origin": "x"}),
      json.dumps({"id": "docstring", "text": "Task: " + docstring_12 + "\n"}),
      "this line is not JSON",
      json.dumps({"id": "unrelated", "text": UNRELATED}),
      json.dumps({"id": "nothing", "meta": {}}),
      json.dumps({"id": "textbook", "text": TEXTBOOK}),
      json.dumps({"id": "broken", "prompt": "def f(x:\n", "solution": "    return x\n"}),
      json.dumps({"id": "farther", **_prompt_solution(FARTHER_COPY_37)}),
  ]
  path = tmp_path / "corpus.jsonl"
  path.write_text("\n".join(lines) + "\n")
  return str(path)


@pytest.fixture()
def results(tmp_path, humaneval_targets):
  """Two evaluations in eval/run.py's results.jsonl format: 2 samples per problem."""
  paths = {}
  for label, passes in (("base", {"HumanEval/37": 2, "HumanEval/0": 1}),
                        ("pruned", {"HumanEval/37": 1})):
    rows = [{"task_id": t.task_id, "sample_index": i, "completion": "", "passed":
             i < passes.get(t.task_id, 0), "failure": None}
            for t in humaneval_targets for i in range(2)]
    path = tmp_path / label / "results.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths[label] = str(path)
  return paths


def _read(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_small_run(tmp_path, corpus, results, structure_embedder):
  out = str(tmp_path / "out")
  config = DecontConfig(embed_threshold=0.05, embed_max_len=256)
  summary = decontaminate([corpus], ["humaneval"], config, out, results=results,
                          embedder=structure_embedder, progress=False)
  removed = {r["id"]: r for r in _read(os.path.join(out, "removed.jsonl"))}
  kept = _read(os.path.join(out, "kept.jsonl"))
  assert set(removed) == {"near-copy", "docstring", "farther"}
  assert [r["id"] for r in kept] == ["unrelated", "textbook", "broken"]
  assert kept[0] == {"id": "unrelated", "text": UNRELATED}  # records pass through unchanged

  near = removed["near-copy"]
  assert sorted(near["removed_by"]) == ["ast", "embedding"]
  assert near["nearest"] == {"benchmark": "humaneval", "task_id": "HumanEval/37", "by": "ast"}
  assert 0.95 <= near["scores"]["ast"]["tau"] < 1.0
  assert near["scores"]["embedding"]["task_id"] == "HumanEval/37"
  assert near["scores"]["ngram"]["matches"] == 0
  assert near["record"]["origin"] == "x"
  # below the pruning tau, but the (informative, deciding) embedding check catches it
  farther = removed["farther"]
  assert farther["removed_by"] == ["embedding"]
  assert farther["nearest"] == {"benchmark": "humaneval", "task_id": "HumanEval/37",
                                "by": "embedding"}
  assert farther["scores"]["ast"]["tau"] == pytest.approx(0.8889, abs=1e-4)
  doc = removed["docstring"]
  assert doc["removed_by"] == ["ngram"] and doc["scores"]["ngram"]["task_id"] == "HumanEval/12"

  assert summary["records"] == 6 and summary["kept"] == 3 and summary["removed"] == 3
  assert summary["removed_by"] == {"ast": 1, "embedding": 2, "ngram": 1}
  assert summary["deciding_checks"] == ["ngram", "ast", "embedding"]
  assert summary["bad_input"] == {"invalid_json": 1, "no_text": 1}
  assert summary["unparsable"] == 1
  assert summary["similar_problems"]["humaneval"] == {"0.95": 1, "0.9": 1, "0.85": 1, "0.8": 1}
  assert summary["removed_at_tau"] == {"0.95": 3, "0.9": 3, "0.85": 3, "0.8": 3}
  assert summary["ast_within_tau"] == {"0.95": 1, "0.9": 1, "0.85": 2, "0.8": 2}

  report = json.load(open(os.path.join(out, "report.json")))
  assert report["similar"]["humaneval"]["0.95"] == ["HumanEval/37"]
  rows = report["table3"]["humaneval"]
  first = rows[:3]
  assert [(r["tau"], r["set"], r["problems"]) for r in first] == [
      (0.95, "similar", 1), (0.95, "non-similar", 163), (0.95, "total", 164)]
  # pass rates by hand: base passes 2/2 of HumanEval/37 and 1/2 of HumanEval/0
  assert first[0]["pass_rate"] == {"base": 1.0, "pruned": 0.5}
  assert first[1]["pass_rate"]["base"] == pytest.approx(0.5 / 163)
  assert first[2]["pass_rate"]["base"] == pytest.approx(1.5 / 164)
  assert first[2]["pass_rate"]["pruned"] == pytest.approx(0.5 / 164)

  md = open(os.path.join(out, "report.md")).read()
  assert "| tau | | problem count | base | pruned |" in md
  assert "| 0.95 | similar | 1 | 100.0% | 50.0% |" in md
  assert "|  | non-similar | 163 | 0.3% | 0.0% |" in md
  assert "|  | total | 164 | 0.9% | 0.3% |" in md
  assert "### tau 0.966 (band >= 0.95): record near-copy" in md  # an Appendix C pair
  assert f"{corpus}:3: invalid_json" in md and f"{corpus}:5: no_text" in md
  assert f"{corpus}:7: SyntaxError" in md
  assert sorted(os.listdir(out)) == ["kept.jsonl", "matches.jsonl", "removed.jsonl",
                                     "report.json", "report.md"]


def test_random_init_embedding_is_reported_not_deciding(tmp_path, random_embedder):
  out = str(tmp_path / "out")
  warnings = []
  summary = decontaminate([{"id": "a", "text": UNRELATED}], ["humaneval"],
                          {"embed_threshold": 2.0, "embed_max_len": 256}, out,
                          embedder=random_embedder, progress=False, warn=warnings.append)
  # every record is within distance 2, but an uninformative check does not remove it
  assert summary["kept"] == 1 and summary["removed_by"] == {}
  assert summary["flagged_by"] == {"embedding": 1}
  assert summary["embedding"]["informative"] is False
  assert any("uninformative" in w for w in warnings)
  assert "UNINFORMATIVE" in open(os.path.join(out, "report.md")).read()
  asked = decontaminate([{"id": "a", "text": UNRELATED}], ["humaneval"],
                        {"embed_threshold": 2.0, "embed_max_len": 256, "embed_decides": "yes"},
                        str(tmp_path / "out2"), embedder=random_embedder, progress=False,
                        warn=warnings.append)
  assert asked["removed"] == 1


def test_failure_midway_leaves_no_output(tmp_path, corpus, monkeypatch):
  out = tmp_path / "out"
  calls = []

  def failing_check(self, samples):
    calls.append(len(samples))
    if len(calls) == 2:
      raise RuntimeError("embedder crashed")
    return original(self, samples)

  original = prune.Decontaminator.check
  monkeypatch.setattr(prune.Decontaminator, "check", failing_check)
  monkeypatch.setattr(prune, "BATCH", 1)
  with pytest.raises(RuntimeError, match="embedder crashed"):
    decontaminate([corpus], ["humaneval"], {"checks": ("ngram", "ast")}, str(out),
                  progress=False)
  assert os.listdir(out) == []  # no kept/removed half-written, no temp files


def test_bad_config_and_results_fail_before_any_work(tmp_path, corpus):
  with pytest.raises(DecontConfigError, match="prune_tau"):
    DecontConfig(prune_tau=1.5)
  with pytest.raises(DecontConfigError, match="unknown field"):
    decontaminate([corpus], ["humaneval"], {"tau": 0.9}, str(tmp_path / "o"))
  bad = tmp_path / "results.jsonl"
  bad.write_text('{"task_id": "HumanEval/0", "passed": "yes"}\n')
  with pytest.raises(ValueError, match=f"{bad}:1"):
    decontaminate([corpus], ["humaneval"], {"checks": "ngram"}, str(tmp_path / "o"),
                  results={"x": str(bad)})
  assert not (tmp_path / "o").exists()


def test_command_line(tmp_path, corpus, results):
  out = tmp_path / "out"
  env = dict(os.environ, PYTHONPATH=REPO)
  command = [sys.executable, "-m", "data_pipeline.decontaminate", f"--input={corpus}",
             f"--out={out}", "--benchmarks=humaneval", "--checks=ngram,ast", "--quiet",
             f"--results=base={results['base']},{results['pruned']}"]
  done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert "6 records: 4 kept, 2 removed" in done.stdout
  # matches.jsonl: what a pruning at each tau removes, kept records included
  matches = {r["id"]: r for r in _read(str(out / "matches.jsonl"))}
  assert set(matches) == {"near-copy", "docstring", "farther"}
  assert matches["farther"]["removed"] is False
  assert matches["farther"]["removed_at_tau"] == [0.85, 0.8]
  assert matches["farther"]["ast_similar"] == {"HumanEval/37": pytest.approx(0.8889, abs=1e-4)}
  assert matches["near-copy"]["removed_at_tau"] == [0.95, 0.9, 0.85, 0.8]
  assert matches["docstring"]["removed_at_tau"] == [0.95, 0.9, 0.85, 0.8]
  summary = json.loads((out / "report.json").read_text())["summary"]
  assert summary["removed_at_tau"] == {"0.95": 2, "0.9": 2, "0.85": 3, "0.8": 3}
  assert f"{corpus}:3" in done.stderr  # the bad line is named
  md = (out / "report.md").read_text()
  assert "| tau | | problem count | base | pruned |" in md
  usage = subprocess.run(command[:-1] + ["--taus=0.9,high"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
  assert usage.returncode == 2 and "--taus" in usage.stderr


def test_one_index_serves_several_corpora(tmp_path, corpus):
  config = {"checks": ("ngram", "ast")}
  decontaminator = prune.Decontaminator.load(["humaneval"], config)
  first = decontaminate([corpus], ["humaneval"], config, str(tmp_path / "a"),
                        decontaminator=decontaminator, progress=False)
  second = decontaminate([{"id": "u", "text": UNRELATED}], ["humaneval"], config,
                         str(tmp_path / "b"), decontaminator=decontaminator, progress=False)
  again = decontaminate([corpus], ["humaneval"], config, str(tmp_path / "c"), progress=False)
  assert second["records"] == 1 and second["removed"] == 0
  for key in ("kept", "removed", "removed_by", "similar_problems", "ast"):
    assert first[key] == again[key]
  assert open(tmp_path / "a" / "removed.jsonl").read() == open(
      tmp_path / "c" / "removed.jsonl").read()
