"""MBPP (Austin et al. 2021): the 500 test problems (task ids 11-510) of the standard split.

Prompt, as in the Codex / phi-1 evaluations: the description and the problem's three
test asserts in a docstring; the model writes the function. The program is the setup
code, the completion and the asserts. Data: a local copy of the original `mbpp.jsonl`
(fields text, code, task_id, test_setup_code, test_list), or the Hugging Face dataset
`google-research-datasets/mbpp` when online and the `datasets` package is installed.
"""

from __future__ import annotations

import os

from eval.benchmarks.base import Benchmark, Problem
from phi_jax.jsonl import read_jsonl

TEST_TASK_IDS = range(11, 511)
HF_DATASET = "google-research-datasets/mbpp"


def _rows_from_hub() -> list[dict]:
  try:
    import datasets  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise FileNotFoundError(
        "MBPP data: pass a local mbpp.jsonl (the original google-research file), or "
        "install `datasets` to read the Hugging Face dataset when online") from e
  try:
    return list(datasets.load_dataset(HF_DATASET, "full", split="test"))
  except Exception as e:  # offline, hub unreachable, dataset moved
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    raise FileNotFoundError(
        f"MBPP data: loading the Hugging Face dataset {HF_DATASET} needs network access "
        f"to huggingface.co ({reason}); pass a local copy of the original mbpp.jsonl "
        "instead (eval.run --data=PATH, or the run config's eval.mbpp_path)") from e


class MBPP(Benchmark):
  name = "mbpp"
  stop = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n```")

  def load(self, path: str | None = None) -> list[Problem]:
    if path is not None and not os.path.isfile(path):
      raise FileNotFoundError(f"MBPP data: no file {path}")
    rows = [row for _, row in read_jsonl(path)] if path else _rows_from_hub()
    where = path or HF_DATASET
    problems = []
    for i, row in enumerate(rows, 1):
      missing = {"task_id", "text", "test_list"} - set(row)
      if missing:
        raise ValueError(f"{where}:{i}: missing field(s) {sorted(missing)}")
      if int(row["task_id"]) not in TEST_TASK_IDS:
        continue
      tests = "\n".join(row["test_list"])
      prompt = f'"""\n{row["text"].strip()}\n{tests}\n"""\n'
      problems.append(Problem(task_id=f"MBPP/{row['task_id']}", prompt=prompt, test=tests,
                              canonical_solution=row.get("code"),
                              setup=row.get("test_setup_code") or ""))
    if path and len(problems) != len(TEST_TASK_IDS):
      raise ValueError(f"{where}: expected the {len(TEST_TASK_IDS)} test problems "
                       f"(task ids 11-510), found {len(problems)}")
    return problems

  def program(self, problem: Problem, completion: str) -> str:
    return problem.setup + "\n" + problem.prompt + completion + "\n\n" + problem.test + "\n"
