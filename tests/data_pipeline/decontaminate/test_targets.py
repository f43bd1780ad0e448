from __future__ import annotations

import ast
import json
import os

import pytest

from data_pipeline.decontaminate.targets import load_targets
from tests.data_pipeline.decontaminate.conftest import MBPP_PATH


def test_humaneval_targets(humaneval_targets):
  target = next(t for t in humaneval_targets if t.task_id == "HumanEval/0")
  assert target.docstring.startswith("Check if in given list of numbers")
  assert isinstance(target.unit, ast.FunctionDef) and target.unit.name == "has_close_elements"
  assert target.program == target.prompt + target.solution
  assert '"""' not in target.code and "for idx, elem in enumerate(numbers)" in target.code
  assert all(t.unit is not None for t in humaneval_targets)


@pytest.mark.skipif(not os.path.isfile(MBPP_PATH), reason="no local MBPP data")
def test_mbpp_targets_from_a_local_file():
  targets, unavailable = load_targets(["humaneval", "mbpp"], {"mbpp": MBPP_PATH})
  mbpp = [t for t in targets if t.benchmark == "mbpp"]
  assert not unavailable and len(mbpp) == 500
  first = mbpp[0]
  assert first.task_id == "MBPP/11" and "first and last occurrence" in first.docstring
  functions = [t for t in mbpp if isinstance(t.unit, ast.FunctionDef)]
  assert len(functions) >= 480  # the function the first assert calls
  assert first.unit.name == "remove_Occ"


def test_an_unavailable_benchmark_is_skipped_with_a_warning(tmp_path):
  warnings = []
  targets, unavailable = load_targets(["humaneval", "mbpp"],
                                      {"mbpp": str(tmp_path / "none.jsonl")},
                                      warn=warnings.append)
  assert len(targets) == 164 and list(unavailable) == ["mbpp"]
  assert "mbpp is unavailable" in warnings[0]
  with pytest.raises(ValueError, match="unknown benchmark"):
    load_targets(["apps"])


def test_multipl_e_targets_are_checked_by_ngrams(tmp_path):
  # pylint: disable=g-import-not-at-top
  from data_pipeline.decontaminate.ngram import NgramIndex
  from tests.eval.benchmarks.test_multipl_e import PROBLEMS, write_release
  targets, unavailable = load_targets(["multipl-e-java"],
                                      {"multipl-e-java": write_release(tmp_path, "java")})
  assert not unavailable and [t.task_id for t in targets] == list(PROBLEMS["java"][2])
  add = targets[0]
  assert add.benchmark == "multipl-e-java" and add.unit is None and add.solution == ""
  assert add.docstring.startswith("Add two numbers x and y\n>>> add((2l), (3l))")
  assert "import java.util" not in add.docstring
  index = NgramIndex(targets, n=8)
  leaked = "// copied from somewhere\n" + add.prompt + "        return x + y;\n    }\n"
  overlap = index.overlap(leaked)
  assert targets[overlap.target].task_id == "HumanEval_0_add" and "prompt" in overlap.fields
  assert index.overlap("class Other { int f() { return 1; } }").target == -1


def test_training_code_copying_a_multipl_e_problem_is_removed(tmp_path):
  # pylint: disable=g-import-not-at-top
  from data_pipeline.decontaminate.prune import decontaminate
  from tests.eval.benchmarks.test_multipl_e import PROBLEMS, write_release
  prompt, _, right, *_ = PROBLEMS["rs"][2]["HumanEval_0_add"]
  records = [{"id": "copy", "text": "// found online\n" + prompt + right + "\n}\n"},
             {"id": "other", "text": "fn main() {\n    println!(\"hello, world\");\n}\n"}]
  summary = decontaminate(records, ["multipl-e-rs"], {"checks": ("ngram",), "ngram_n": 8},
                          str(tmp_path / "out"),
                          benchmark_paths={"multipl-e-rs": write_release(tmp_path, "rs")},
                          progress=False)
  assert (summary["records"], summary["kept"], summary["removed"]) == (2, 1, 1)
  with open(tmp_path / "out" / "removed.jsonl") as f:
    assert [json.loads(line)["id"] for line in f] == ["copy"]


CRUXEVAL_PATH = os.path.join(os.path.dirname(os.path.dirname(MBPP_PATH)), "cruxeval",
                             "cruxeval.jsonl")


def _flags(tmp_path, records, benchmarks, paths):
  """{record id: the checks that flagged it} after an n-gram and AST check."""
  import json  # pylint: disable=g-import-not-at-top
  from data_pipeline.decontaminate.prune import decontaminate  # pylint: disable=g-import-not-at-top
  config = {"checks": ("ngram", "ast"), "benchmarks": tuple(benchmarks), "taus": (0.9,),
            "prune_tau": 0.9}
  out = tmp_path / "_".join(benchmarks)
  decontaminate(records, list(benchmarks), config, str(out), benchmark_paths=paths,
                progress=False)
  with open(out / "matches.jsonl") as f:
    return {row["id"]: row["flags"] for row in map(json.loads, f)}


# CI has ../shared beside the checkout: there a missing file fails the test
@pytest.mark.skipif(not os.path.isfile(CRUXEVAL_PATH) and not os.environ.get("CI"),
                    reason="no local CRUXEval data")
def test_cruxeval_is_checked_by_ngrams_and_ast(tmp_path):
  """A training record holding a CRUXEval function (renamed) is flagged by the AST
  check, one quoting a function and its answer by the n-gram check; an unrelated record
  is not."""
  targets, unavailable = load_targets(["cruxeval-o"], {"cruxeval-o": CRUXEVAL_PATH})
  assert not unavailable and len(targets) == 800
  first = targets[0]
  assert first.unit.name == "f" and first.solution.startswith("assert f([1, 1, 3")
  assert "[PYTHON]" not in first.prompt  # the few-shot text all problems share is not indexed
  renamed = first.prompt.replace("nums", "values").replace("output", "pairs")
  records = [{"id": "crux", "text": renamed.replace("def f(", "def count_pairs(")},
             {"id": "quoted", "text": "# a puzzle\n" + first.program},
             {"id": "other", "text": "import os\n\nprint(os.getcwd())\n"}]
  flags = _flags(tmp_path, records, ["cruxeval-o"], {"cruxeval-o": CRUXEVAL_PATH})
  assert "ast" in flags["crux"] and "ngram" in flags["quoted"]
  assert not flags.get("other")


@pytest.mark.slow
def test_long_context_is_checked_by_ast(tmp_path):
  """The function a long-context file must call, renamed, in a training record is
  flagged by the AST check (the default files: the index takes a while)."""
  from eval.benchmarks.long_context import LongContext  # pylint: disable=g-import-not-at-top
  problem = LongContext().load()[0]
  targets, _ = load_targets(["long-context"])
  target = next(t for t in targets if t.task_id == problem.task_id)
  assert target.unit.name == problem.entry_point and len(targets) == 100
  function = ast.get_source_segment(problem.prompt + "None", target.unit)
  records = [{"id": "long", "text": function.replace(problem.entry_point, "helper")},
             {"id": "other", "text": "import os\n\nprint(os.getcwd())\n"}]
  flags = _flags(tmp_path, records, ["long-context"], None)
  assert "ast" in flags["long"] and not flags.get("other")


def test_benchmark_options_build_the_targets():
  """Options build each benchmark as the evaluator does (long-context: the given files,
  not the defaults); options for a benchmark not checked are refused."""
  from eval.benchmarks.long_context import LongContext  # pylint: disable=g-import-not-at-top
  options = {"lengths": (1200,), "depths": (0.0, 1.0), "per_cell": 1, "seed": 5}
  targets, _ = load_targets(["long-context"], options={"long-context": options})
  problems = LongContext(**options).load()
  assert [(t.task_id, t.prompt) for t in targets] == [(p.task_id, p.prompt) for p in problems]
  with pytest.raises(ValueError, match="not checked"):
    load_targets(["humaneval"], options={"long-context": options})
