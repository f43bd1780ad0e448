"""CRUXEval (Gu et al. 2024, "CRUXEval: A Benchmark for Code Reasoning, Understanding and
Execution"): 800 short Python functions `f`, each with one input and its output.

- `cruxeval-o` (output prediction): given `f` and the input, predict the output;
- `cruxeval-i` (input prediction): given `f` and the output, predict an input (any input
  for which f returns that output is right).

Data: the released `cruxeval.jsonl` (data/ of the public facebookresearch/cruxeval
repository, MIT licence), from the path the user gives; each line has `id`
(`sample_0`..`sample_799`), `code`, `input` (the argument list as Python source) and
`output` (the return value as Python source). A sample's `task_id` is the problem's
`id`; its `completion` is the predicted output (O) or input (I) as Python source, or the
paper's answer line `assert f(INPUT) == OUTPUT` (what the model writes after the prompt).

Prompts are the paper's direct (no chain-of-thought) two-shot prompts: the instruction,
two worked examples in `[PYTHON] ... [/PYTHON] [ANSWER] ... [/ANSWER]` blocks, then the
problem with `??` in place of the unknown, ending in `[ANSWER]\\n`. Generation stops at
`[/ANSWER]` (the paper's stop word) or at the end of the answer line.

Judging executes the prediction in the sandbox, never compares strings: the program runs
the problem's `f` and checks `f(input) == output` with the prediction in its place
(`_cruxeval_check.py`, embedded in every program). The reference solution (for bits per
byte) is the answer line with the released input and output.
"""

from __future__ import annotations

from eval.benchmarks.base import Benchmark, Problem, embedded_source, read_rows

FIELDS = ("id", "code", "input", "output")
SOURCE = ("cruxeval.jsonl (data/ of the public facebookresearch/cruxeval repository, "
          "800 problems)")

# The two examples and the instructions of the paper's direct prompts (its prompts.py,
# make_direct_output_prompt and make_direct_input_prompt).
OUTPUT_INSTRUCTION = (
    "You are given a Python function and an assertion containing an input to the "
    "function. Complete the assertion with a literal (no unsimplified expressions, no "
    "function calls) containing the output when executing the provided code on the given "
    "input, even if the function is incorrect or incomplete. Do NOT output any extra "
    "information. Provide the full assertion with the correct output in [ANSWER] and "
    "[/ANSWER] tags, following the examples.")
OUTPUT_EXAMPLES = (("def f(n):\n    return n", "17", "17"),
                   ('def f(s):\n    return s + "a"', '"x9j"', '"x9ja"'))
INPUT_INSTRUCTION = (
    "You will be given a function f and an output in the form f(??) == output. Find any "
    "input such that executing f on the input leads to the given output. There may be "
    "multiple answers, but you should only output one. In [ANSWER] and [/ANSWER] tags, "
    "complete the assertion with one such input that will produce the output when "
    "executing the function.")
INPUT_EXAMPLES = (
    ("def f(my_list):\n    count = 0\n    for i in my_list:\n        if len(i) % 2 == 0:\n"
     "            count += 1\n    return count", '["mq", "px", "zy"]', "3"),
    ("def f(s1, s2):\n    return s1 + s2", '"ba", "nana"', '"banana"'))


def answer_line(input_source: str, output_source: str) -> str:
  """The paper's answer: the completed assertion."""
  return f"assert f({input_source}) == {output_source}"


def _block(code: str, question: str, answer: str | None) -> str:
  text = f"[PYTHON]\n{code}\n{question}\n[/PYTHON]\n[ANSWER]\n"
  return text if answer is None else text + f"{answer}\n[/ANSWER]\n\n"


def output_prompt(code: str, input_source: str) -> str:
  """The direct output-prediction prompt of a function and its input."""
  shots = "".join(_block(c, f"assert f({i}) == ??", answer_line(i, o))
                  for c, i, o in OUTPUT_EXAMPLES)
  return (OUTPUT_INSTRUCTION + "\n\n" + shots
          + _block(code, f"assert f({input_source}) == ??", None))


def input_prompt(code: str, output_source: str) -> str:
  """The direct input-prediction prompt of a function and its output."""
  shots = "".join(_block(c, f"assert f(??) == {o}", answer_line(i, o))
                  for c, i, o in INPUT_EXAMPLES)
  return (INPUT_INSTRUCTION + "\n\n" + shots
          + _block(code, f"assert f(??) == {output_source}", None))


class _CRUXEval(Benchmark):
  """One direction of CRUXEval; `mode` is 'output' or 'input' (what is predicted)."""

  mode: str = ""
  stop = ("[/ANSWER]", "\n")

  def load(self, path: str | None = None) -> list[Problem]:
    problems = []
    for where, row in read_rows(self.name, path, FIELDS, SOURCE):
      if not all(isinstance(row[field], str) for field in FIELDS):
        raise ValueError(f"{where}: fields {list(FIELDS)} must be strings")
      given = row["input"] if self.mode == "output" else row["output"]
      prompt = (output_prompt(row["code"], row["input"]) if self.mode == "output"
                else input_prompt(row["code"], row["output"]))
      problems.append(Problem(task_id=row["id"], prompt=prompt, test=given, entry_point="f",
                              canonical_solution=answer_line(row["input"], row["output"]),
                              setup=row["code"]))
    if not problems:
      raise ValueError(f"{path}: no problems")
    ids = [p.task_id for p in problems]
    if len(set(ids)) != len(ids):
      raise ValueError(f"{path}: repeated ids")
    return problems

  def program(self, problem: Problem, completion: str) -> str:
    call = (f"check(code={problem.setup!r}, given={problem.test!r}, "
            f"prediction={completion!r}, mode={self.mode!r})\n")
    return embedded_source("_cruxeval_check.py") + "\n\n" + call


class CRUXEvalOutput(_CRUXEval):
  name = "cruxeval-o"
  mode = "output"


class CRUXEvalInput(_CRUXEval):
  name = "cruxeval-i"
  mode = "input"
