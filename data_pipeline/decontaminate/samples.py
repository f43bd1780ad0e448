"""Training samples to check: the project's record kinds read from JSONL, with their code.

A record is `{"id", "text", ...}` (a document: code file, textbook section) or
`{"id", "prompt", "solution", ...}` (an exercise; its text is prompt + solution). The
code the AST check parses is an exercise's prompt + solution, and a document's fenced
code blocks (```python / ```py / untagged), or the whole document when it has no fenced
block and parses as Python (a code file); prose without code has no code.

Bad input never stops a run: a line that is not a JSON object, or a record with
neither a string `text` nor a string `solution`, is reported through `on_bad(reason,
where, detail)` with `where` = "file:line" and skipped; code that does not parse is
recorded on the sample (`unparsable`) and only the AST check skips it.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Callable, Iterable, Iterator

from phi_jax.jsonl import read_jsonl

_FENCE = re.compile(r"^```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)
_PYTHON_TAGS = frozenset({"", "python", "py", "python3"})

# reasons a record is skipped (on_bad's first argument), besides phi_jax.jsonl's
BAD_RECORD_REASONS = ("no_text",)


@dataclasses.dataclass
class Sample:
  """One training record as the checks see it.

  Attributes:
    id: the record's id (or its file:line when it has none).
    where: "file:line" of the record.
    record: the record as read (written back unchanged to kept/removed).
    text: what the n-gram and embedding checks read.
    code: the record's Python programs that parse (may be empty).
    modules: the parsed `code`, one module per program.
    unparsable: "block N: error" for each code block that does not parse.
  """
  id: str
  where: str
  record: dict
  text: str
  code: list[str]
  modules: list[ast.Module] = dataclasses.field(default_factory=list)
  unparsable: list[str] = dataclasses.field(default_factory=list)


def code_blocks(text: str) -> tuple[list[str], bool]:
  """(Python code of a document, fenced): its fenced Python blocks, or [text] when it
  has no fenced block at all (the caller keeps it only if it parses)."""
  blocks = [body for tag, body in _FENCE.findall(text) if tag.lower() in _PYTHON_TAGS]
  if blocks or _FENCE.search(text):
    return blocks, True
  return [text], False


def _parse(source: str) -> tuple[ast.Module | None, str]:
  try:
    return ast.parse(source), ""
  except (SyntaxError, ValueError, RecursionError, MemoryError) as e:  # null bytes, nesting
    line = f" (line {e.lineno})" if isinstance(e, SyntaxError) and e.lineno else ""
    detail = getattr(e, "msg", None) or str(e) or "nested too deeply to parse"
    return None, f"{type(e).__name__}: {detail}{line}"


def sample_of(record: dict, where: str) -> Sample | None:
  """The Sample of one record, or None when it has neither text nor solution."""
  text, solution = record.get("text"), record.get("solution")
  ident = record.get("id")
  ident = str(ident) if isinstance(ident, (str, int)) else where
  if isinstance(solution, str):
    prompt = record.get("prompt") if isinstance(record.get("prompt"), str) else ""
    program = prompt + solution
    sample = Sample(ident, where, record, program, [program])
    must_parse = True
  elif isinstance(text, str):
    blocks, must_parse = code_blocks(text)
    sample = Sample(ident, where, record, text, blocks)
  else:
    return None
  parsed = []
  for number, source in enumerate(sample.code, 1):
    module, error = _parse(source)
    if module is not None:
      sample.modules.append(module)
      parsed.append(source)
    elif must_parse:
      sample.unparsable.append(f"block {number}: {error}" if len(sample.code) > 1 else error)
  sample.code = parsed  # aligned with modules; a document that is not Python has no code
  return sample


def read_samples(sources: Iterable[str | dict],
                 on_bad: Callable[[str, str, str], None]) -> Iterator[Sample]:
  """Samples from JSONL paths, or from records given directly (dicts).

  Args:
    sources: paths of JSONL files, or record dicts (their `where` is "<records>:N"),
      in any mix.
    on_bad: on_bad(reason, where, detail) for each skipped line or record.
  """
  index = 0
  for source in sources:
    if isinstance(source, dict):
      index += 1
      rows: Iterable[tuple[str, dict]] = [(f"<records>:{index}", source)]
    elif isinstance(source, str):
      rows = ((f"{source}:{n}", row) for n, row in read_jsonl(source, on_error=on_bad))
    else:
      raise TypeError(f"decontaminate: a source must be a path or a record dict, got "
                      f"{type(source).__name__}")
    for where, row in rows:
      sample = sample_of(row, where)
      if sample is None:
        on_bad("no_text", where, "a record needs a string 'text' or a string 'solution' "
               f"(fields: {sorted(row)[:8]})")
        continue
      yield sample
