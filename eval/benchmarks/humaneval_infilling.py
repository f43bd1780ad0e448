"""HumanEval infilling (Bavarian et al. 2022): fill a gap cut out of a HumanEval solution.

Three benchmarks over the 164 HumanEval problems, from the public files of
openai/human-eval-infilling (`data/`, MIT licence); the user passes the file's path:

- `humaneval-infill-single`: one line of the canonical solution removed
  (HumanEval-SingleLineInfilling.jsonl.gz, 1,033 problems);
- `humaneval-infill-multi`: a block of consecutive lines removed
  (HumanEval-MultiLineInfilling.jsonl.gz, 5,815 problems);
- `humaneval-infill-span`: a random character span removed
  (HumanEval-RandomSpanInfilling.jsonl.gz, 1,640 problems).

Each line: task_id, entry_point, prompt (the text before the gap), suffix (the text after
it), canonical_solution (the removed middle) and test. A sample's `completion` is the
middle; the program is prompt + middle + suffix, the test code and `check(entry_point)`,
as in the human-eval-infilling package. Generating (`eval.run --checkpoint`) prompts the
model with prefix and suffix in the fill-in-the-middle format (`phi_jax.fim`, PSM order;
the model must have been trained with FIM); the model ends the middle with its
end-of-text token; single-line infilling also stops at the end of the line, and the
newline the stop sequence removes is put back.
"""

from __future__ import annotations

from eval.benchmarks.base import Benchmark, Problem, read_rows

FIELDS = ("task_id", "entry_point", "prompt", "suffix", "canonical_solution", "test")


class _HumanEvalInfilling(Benchmark):
  """One of the three infilling files; `file_name` is its name in the public repository."""

  file_name: str = ""
  infilling = True

  def load(self, path: str | None = None) -> list[Problem]:
    source = f"{self.file_name} (data/ of the public openai/human-eval-infilling repository)"
    problems = []
    for _, row in read_rows(self.name, path, FIELDS, source):
      problems.append(Problem(task_id=row["task_id"], prompt=row["prompt"], suffix=row["suffix"],
                              test=row["test"], entry_point=row["entry_point"],
                              canonical_solution=row["canonical_solution"]))
    if not problems:
      raise ValueError(f"{path}: no problems")
    return problems

  def middle(self, completion: str) -> str:
    """The text that goes into the gap."""
    return completion

  def program(self, problem: Problem, completion: str) -> str:
    return (problem.prompt + self.middle(completion) + problem.suffix + "\n\n" + problem.test
            + "\n\n" + f"check({problem.entry_point})\n")


class HumanEvalInfillSingle(_HumanEvalInfilling):
  name = "humaneval-infill-single"
  file_name = "HumanEval-SingleLineInfilling.jsonl.gz"
  stop = ("\n",)

  def middle(self, completion: str) -> str:
    # the gap is one whole line: its newline is part of the middle, and the stop removes it
    return completion if completion.endswith("\n") else completion + "\n"


class HumanEvalInfillMulti(_HumanEvalInfilling):
  name = "humaneval-infill-multi"
  file_name = "HumanEval-MultiLineInfilling.jsonl.gz"


class HumanEvalInfillSpan(_HumanEvalInfilling):
  name = "humaneval-infill-span"
  file_name = "HumanEval-RandomSpanInfilling.jsonl.gz"
