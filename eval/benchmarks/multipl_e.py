"""MultiPL-E (Cassano et al. 2023): HumanEval and MBPP translated into other languages.

The user passes one of MultiPL-E's released per-language JSONL files (the Hugging Face
dataset nuprl/MultiPL-E, e.g. `humaneval-js`, or the repository's prompts/ files): one
row per problem with `name` (the sample's task_id), `language`, `prompt` (signature and
doc comment, continued by the model), `tests` (appended after the completion) and
`stop_tokens`. The program is prompt + completion + "\\n" + tests, as MultiPL-E builds
it; it is compiled and run in the sandbox with that language's toolchain
(eval/languages.py) and passes when every compile and run step exits 0 (MultiPL-E's
rule: a compiler error or a non-zero exit fails; its `tests` fail by a failed assertion
or, in Go, a failed test).

Benchmarks: `multipl-e-<lang>` for lang in js, cpp, java, go, rs (Rust), sh (Bash). A
file's `language` must be that language's (Go's is 'go_test.go'), and every row must
carry the same stop tokens, which end each completion (MultiPL-E's per-language stops).
There is no reference solution in the release: no bits per byte, no AST check in
decontamination (n-gram checks only).
"""

from __future__ import annotations

from collections.abc import Sequence

from eval.benchmarks.base import Benchmark, Problem, read_rows

FIELDS = ("name", "language", "prompt", "tests", "stop_tokens")
# Wall clock of one program: MultiPL-E's 15 s limit per compile and per run (its
# safe_subprocess default), 30 s for Go's `go test`; these are sums of both steps.
COMPILE_S = 15.0
RUN_S = 15.0


class MultiPLE(Benchmark):
  """One language of MultiPL-E; `stop` comes from the file (set by `load`)."""

  language = ""  # eval/languages.py's name, which is MultiPL-E's file extension
  file_languages: tuple[str, ...] = ()  # the `language` field of its released rows
  compiled = True
  reference_solutions = False

  def __init__(self):
    self.stop: tuple[str, ...] = ()

  def load(self, path: str | None = None) -> list[Problem]:
    problems, stops = [], None
    source = (f"MultiPL-E's released {self.language} file (e.g. the Hugging Face dataset "
              f"nuprl/MultiPL-E, config humaneval-{self.language}, as JSONL)")
    for where, row in read_rows(self.name, path, FIELDS, source):
      if row["language"] not in self.file_languages:
        raise ValueError(f"{where}: language {row['language']!r}, but {self.name} reads "
                         f"{' or '.join(map(repr, self.file_languages))} problems")
      for field in ("name", "prompt", "tests"):
        if not isinstance(row[field], str) or (field == "name" and not row[field]):
          raise ValueError(f"{where}: {field} must be a{' non-empty' * (field == 'name')} "
                           f"string")
      row_stops = row["stop_tokens"]
      if (not isinstance(row_stops, list) or not row_stops
          or not all(isinstance(s, str) and s for s in row_stops)):
        raise ValueError(f"{where}: stop_tokens must be a non-empty list of strings")
      if stops is None:
        stops = tuple(row_stops)
      elif tuple(row_stops) != stops:
        raise ValueError(f"{where}: stop_tokens {row_stops!r} differ from the file's first "
                         f"row's {list(stops)!r}; {self.name} ends every completion at the "
                         "same stops")
      problems.append(Problem(task_id=row["name"], prompt=row["prompt"], test=row["tests"]))
    if not problems:
      raise ValueError(f"{path}: no problems")
    ids = [p.task_id for p in problems]
    if len(set(ids)) != len(ids):
      duplicate = next(i for i in ids if ids.count(i) > 1)
      raise ValueError(f"{path}: the name {duplicate!r} appears more than once")
    self.stop = stops
    return problems

  def program(self, problem: Problem, completion: str) -> str:
    return problem.prompt + completion + "\n" + problem.test

  def timeout_s(self, problem: Problem) -> float:
    del problem
    return COMPILE_S * self.compiled + RUN_S


def _language(name: str, language: str, file_languages: Sequence[str],
              compiled: bool) -> type[MultiPLE]:
  return type(f"MultiPLE_{language}", (MultiPLE,), {
      "name": name, "language": language, "file_languages": tuple(file_languages),
      "compiled": compiled, "__doc__": f"MultiPL-E in {language}."})


MultiPLEJs = _language("multipl-e-js", "js", ("js", "javascript"), False)
MultiPLECpp = _language("multipl-e-cpp", "cpp", ("cpp",), True)
MultiPLEJava = _language("multipl-e-java", "java", ("java",), True)
MultiPLEGo = _language("multipl-e-go", "go", ("go_test.go", "go"), True)
MultiPLERust = _language("multipl-e-rs", "rs", ("rs", "rust"), True)
MultiPLESh = _language("multipl-e-sh", "sh", ("sh", "bash"), False)
BENCHMARKS = (MultiPLEJs, MultiPLECpp, MultiPLEJava, MultiPLEGo, MultiPLERust, MultiPLESh)
