"""MBPP (Austin et al. 2021): the 500 test problems (task ids 11-510) of the standard split.

Prompt formats (`MBPP(prompt_format=...)`, config.eval.mbpp_prompt): the model sees a
docstring and writes the function after it.

    one_test   (default) the description and the first test assert:
               a docstring holding text and test_list[0] -- the zero-shot format of
               bigcode-evaluation-harness's `mbpp` task, the common harness by which
               code models (StarCoder, WizardCoder, ...) report MBPP pass@1; the one
               assert shows the function's name and signature
    all_tests  the description and all three test asserts in the same docstring, as
               the MBPP paper's prompt shows all three tests (Austin et al. 2021 use a
               few-shot natural-language template; this is its zero-shot docstring form)

The phi-1 paper does not publish its MBPP prompt, and neither format is the Codex
paper's (Codex was not evaluated on MBPP): scores are comparable only across the same
format. The program is the setup code, the prompt, the completion and all three
asserts in both formats. Data: a local copy of the original `mbpp.jsonl`
(fields text, code, task_id, test_setup_code, test_list), or the Hugging Face dataset
`google-research-datasets/mbpp` when online and the `datasets` package is installed.
"""

from __future__ import annotations

import os

from eval.benchmarks.base import Benchmark, Problem
from phi_jax.jsonl import read_jsonl

TEST_TASK_IDS = range(11, 511)
PROMPT_FORMATS = ("one_test", "all_tests")
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


def prompt_of(text: str, tests: list[str], prompt_format: str = "one_test") -> str:
  """The prompt of a problem with description `text` and asserts `tests` (see above)."""
  if prompt_format not in PROMPT_FORMATS:
    raise ValueError(f"MBPP prompt format {prompt_format!r}: expected one of {PROMPT_FORMATS}")
  shown = tests[:1] if prompt_format == "one_test" else tests
  return '"""\n' + text.strip() + "\n" + "\n".join(shown) + '\n"""\n'


class MBPP(Benchmark):
  name = "mbpp"
  stop = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n```")

  def __init__(self, prompt_format: str = "one_test"):
    if prompt_format not in PROMPT_FORMATS:
      raise ValueError(f"MBPP prompt format {prompt_format!r}: expected one of "
                       f"{PROMPT_FORMATS}")
    self.prompt_format = prompt_format

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
      prompt = prompt_of(row["text"], list(row["test_list"]), self.prompt_format)
      problems.append(Problem(task_id=f"MBPP/{row['task_id']}", prompt=prompt, test=tests,
                              canonical_solution=row.get("code"),
                              setup=row.get("test_setup_code") or ""))
    if path and len(problems) != len(TEST_TASK_IDS):
      raise ValueError(f"{where}: expected the {len(TEST_TASK_IDS)} test problems "
                       f"(task ids 11-510), found {len(problems)}")
    return problems

  def program(self, problem: Problem, completion: str) -> str:
    return problem.setup + "\n" + problem.prompt + completion + "\n\n" + problem.test + "\n"
