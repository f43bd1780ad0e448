"""Educational-value labels for code: an LLM judge, or an offline heuristic proxy.

phi-1's filter starts here: GPT-4 was asked to "determine the educational value" of
~100k code samples "for a student whose goal is to learn basic coding concepts"; a
classifier trained on those labels (data_pipeline.classifier) then judged the rest.

    subset = select_for_annotation(records, n=1000, seed=0)
    annotator = LLMAnnotator(LLMClient(LLMConfig(model="gpt-4o", cache_dir=...)))
    annotator = HeuristicAnnotator()          # offline, when no endpoint is configured
    annotator.annotate(subset, "workdir/quality/labels.jsonl")
    labels = load_labels("workdir/quality/labels.jsonl")     # {id: row}

Both annotators write the same JSONL, one row per record, in input order:

    {"id", "score": 0..1 or null, "label": 1 / 0 / null, "annotator", "reason"}

label = 1 when score >= `threshold` (default 0.5), 0 below; null (with score null)
when the record could not be labelled (the LLM's answer stayed malformed after its
retries, or the request was rejected): such a record is never guessed, and the
classifier ignores it. The labels file is written atomically once every record has a
row, so its existence marks a finished annotation.

`LLMAnnotator` asks through phi_jax's one LLM client (phi_jax.llm): concurrency,
retries with backoff, the response cache and resumable output are the client's. Each
snippet is cut to its first `max_chars` characters (default 4000, roughly 1000
tokens: the head of a file shows what it is about and keeps the cost per sample
bounded), and the prompt says so when it was cut. The model answers with a JSON object
{"reason": str, "educational_value": integer 0-10}; score = educational_value / 10.
Its raw answers (one line per request, resumable) are kept beside the labels as
`<labels minus .jsonl>.llm.jsonl`; a rerun asks only for what is missing there, and
the client's cache answers anything asked before.

`HeuristicAnnotator` is a proxy for the LLM's judgement, not a replacement: a weighted
sum of line-level features of the text (see `HeuristicWeights`), labelled
"heuristic-proxy" in every row.

Records are duck-typed: a mapping or an object with `id` and `text` (and optionally a
`meta` mapping holding the file's `path`, which the heuristic reads).
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from phi_jax import atomic
from phi_jax.jsonl import read_jsonl
from phi_jax.llm import LLMClient, map_jsonl, parse_scored_answer

HEURISTIC_ANNOTATOR = "heuristic-proxy"
DEFAULT_THRESHOLD = 0.5
DEFAULT_MAX_CHARS = 4000
MAX_VALUE = 10
LABEL_FIELDS = ("id", "score", "label", "annotator", "reason")

SYSTEM_PROMPT = """\
You are an experienced programming teacher. You judge code snippets taken from public \
repositories by their educational value for a student whose goal is to learn basic coding \
concepts: variables, control flow, functions, data structures, algorithms and clear program \
design.

High educational value: self-contained, readable code with meaningful logic (an algorithm, \
data processing, well-structured functions or classes), names that say what things are, \
docstrings or comments that explain the ideas.
Low educational value: configuration and settings, setup scripts, boilerplate, long tables \
of data or literals, generated code, files that mostly import or re-export other modules, \
test scaffolding, code that only makes sense with a large unseen context, code that is hard \
to follow.

Reply with only a JSON object, without code fences or any other text:
{"reason": "<one sentence>", "educational_value": <an integer from 0 to 10>}"""


class AnnotationError(ValueError):
  """Bad annotation input or a malformed labels file (the message names file:line)."""


# -- records ------------------------------------------------------------------------------


def _get(record: Any, name: str, default: Any = None) -> Any:
  if isinstance(record, Mapping):
    return record.get(name, default)
  return getattr(record, name, default)


def record_id(record: Any, where: str = "record") -> str | int:
  """The record's `id` (str or int); AnnotationError naming `where` otherwise."""
  rid = _get(record, "id")
  if isinstance(rid, bool) or not isinstance(rid, (str, int)) or rid == "":
    raise AnnotationError(f"{where}: field 'id' must be a non-empty str or an int, got "
                          f"{rid!r:.100}")
  return rid


def record_text(record: Any, where: str = "record") -> str:
  text = _get(record, "text")
  if not isinstance(text, str):
    raise AnnotationError(f"{where}: field 'text' must be a str, got {type(text).__name__}")
  return text


def record_path(record: Any) -> str | None:
  """The source file path of a record when it carries one (meta['path'] or 'path')."""
  meta = _get(record, "meta")
  path = meta.get("path") if isinstance(meta, Mapping) else None
  path = path or _get(record, "path")
  return path if isinstance(path, str) and path else None


def _checked_records(records: Iterable[Any]) -> list[tuple[str | int, str, Any]]:
  """(id, text, record) of each record; ids must be unique."""
  checked, first = [], {}
  for index, record in enumerate(records):
    where = f"records[{index}]"
    rid = record_id(record, where)
    if rid in first:
      raise AnnotationError(f"{where}: duplicate id {rid!r} (first at records[{first[rid]}])")
    first[rid] = index
    checked.append((rid, record_text(record, where), record))
  return checked


def select_for_annotation(records: Iterable[Any], n: int, seed: int = 0) -> list[Any]:
  """A seeded sample of `n` records to annotate (all of them when there are fewer).

  Record r is ranked by sha256(seed, id) and the n lowest ranks are kept, returned in
  input order: the sample depends on the ids only (not their order), streams through
  any number of records with O(n) memory, and a larger n keeps every record of a
  smaller one.
  """
  if isinstance(n, bool) or not isinstance(n, int) or n < 0:
    raise AnnotationError(f"select_for_annotation: n must be an integer >= 0, got {n!r}")
  ranked = []
  for index, record in enumerate(records):
    rid = record_id(record, f"records[{index}]")
    digest = hashlib.sha256(f"{seed}\0{type(rid).__name__}:{rid}".encode()).hexdigest()
    ranked.append((digest, index, record))
  chosen = heapq.nsmallest(n, ranked, key=lambda item: item[:2])
  return [record for _, _, record in sorted(chosen, key=lambda item: item[1])]


# -- the labels file ----------------------------------------------------------------------


def label_for(score: float | None, threshold: float) -> int | None:
  """1 when score >= threshold, 0 below, None when there is no score."""
  return None if score is None else int(score >= threshold)


def _check_threshold(threshold: float, where: str) -> float:
  if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not (
      0.0 <= threshold <= 1.0):
    raise AnnotationError(f"{where}: threshold must be a number in [0, 1], got {threshold!r}")
  return float(threshold)


def write_labels(rows: Sequence[Mapping[str, Any]], path: str) -> None:
  """Writes label rows as JSONL, atomically."""
  atomic.write_jsonl([dict(row) for row in rows], path)


def load_labels(path: str) -> dict[str | int, dict[str, Any]]:
  """The rows of a labels file as {id: row}, in file order; validated line by line."""
  rows: dict[str | int, dict[str, Any]] = {}
  for lineno, row in read_jsonl(path, error=AnnotationError):
    where = f"{path}:{lineno}"
    missing = [field for field in ("id", "score", "label", "annotator") if field not in row]
    if missing:
      raise AnnotationError(f"{where}: missing field(s) {missing}; a labels row is "
                            f"{{{', '.join(LABEL_FIELDS)}}}")
    rid = record_id(row, where)
    score, label = row["score"], row["label"]
    if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))
                              or not 0.0 <= score <= 1.0):
      raise AnnotationError(f"{where}: field 'score' must be a number in [0, 1] or null, "
                            f"got {score!r}")
    if label not in (0, 1, None) or isinstance(label, bool):
      raise AnnotationError(f"{where}: field 'label' must be 1, 0 or null, got {label!r}")
    if (score is None) != (label is None):
      raise AnnotationError(f"{where}: 'score' and 'label' must both be null or both set")
    if rid in rows:
      raise AnnotationError(f"{where}: duplicate id {rid!r}")
    rows[rid] = row
  return rows


def summarize_labels(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """Counts of a set of label rows: total, labelled, unlabelled, positives, negatives."""
  labels = [row["label"] for row in rows]
  positives = sum(1 for label in labels if label == 1)
  negatives = sum(1 for label in labels if label == 0)
  return {"total": len(rows), "labelled": positives + negatives,
          "unlabelled": len(rows) - positives - negatives, "positives": positives,
          "negatives": negatives}


# -- the LLM annotator --------------------------------------------------------------------


def truncate_snippet(text: str, max_chars: int) -> tuple[str, bool]:
  """The first `max_chars` characters of `text`, and whether it was cut."""
  if len(text) <= max_chars:
    return text, False
  return text[:max_chars], True


def annotation_messages(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[dict]:
  """The chat messages asking for the educational value of one snippet."""
  snippet, cut = truncate_snippet(text, max_chars)
  note = (f"\n\n(The snippet is the first {max_chars} characters of a longer file.)"
          if cut else "")
  user = ("Determine the educational value of this code snippet for a student whose goal "
          f"is to learn basic coding concepts.{note}\n\n```python\n{snippet.rstrip()}\n```\n\n"
          'Reply with only {"reason": "...", "educational_value": <0-10>}.')
  return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_answer(text: str) -> dict[str, Any]:
  """{"educational_value": int 0-10, "reason": str} from an answer; ValueError otherwise.

  Strict: the answer must be exactly that JSON object (one enclosing ```json fence is
  tolerated); a number is never read out of prose.
  """
  value, reason = parse_scored_answer(text, "educational_value", MAX_VALUE)
  return {"educational_value": value, "reason": reason}


def raw_path_for(labels_path: str) -> str:
  """Where LLMAnnotator keeps its raw answers: labels.jsonl -> labels.llm.jsonl."""
  root, ext = os.path.splitext(labels_path)
  return (root if ext == ".jsonl" else labels_path) + ".llm.jsonl"


class LLMAnnotator:
  """Labels records by asking an LLM (through phi_jax.llm) for their educational value.

  Args:
    client: the LLMClient (its config: model, endpoint, key variable, concurrency,
      retries, cache directory, parse_retries).
    threshold: label = 1 when educational_value / 10 >= threshold.
    max_chars: snippets are cut to their first max_chars characters.
    json_mode: ask the server for a JSON answer (response_format json_object; OpenAI
      and vLLM support it).
    parse_retries: a malformed answer is asked again this many times (bypassing the
      cache) before the record is recorded unlabelled; default: the client config's.
  """

  def __init__(self, client: LLMClient, *, threshold: float = DEFAULT_THRESHOLD,
               max_chars: int = DEFAULT_MAX_CHARS, json_mode: bool = False,
               parse_retries: int | None = None):
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
      raise AnnotationError(f"LLMAnnotator: max_chars must be a positive integer, got "
                            f"{max_chars!r}")
    self.client = client
    self.threshold = _check_threshold(threshold, "LLMAnnotator")
    self.max_chars = max_chars
    self.json_mode = json_mode
    self.parse_retries = parse_retries
    self.name = f"llm:{client.config.model}"

  def annotate(self, records: Iterable[Any], out_path: str, *, progress: bool = True,
               retry_unlabelled: bool = False) -> dict[str, Any]:
    """Labels every record; writes the labels file `out_path`; returns its summary.

    Resumable: answers land in raw_path_for(out_path) as they arrive, and a rerun
    asks only for records missing there (a record whose prompt or model changed is
    asked afresh: its request id carries a digest of both). With `retry_unlabelled`,
    the records left unlabelled by an earlier run are asked again too.

    Raises:
      AnnotationError: bad records (missing/duplicate id, text not a str).
      LLMError: the endpoint failed for good (auth, unknown model, retries exhausted);
        the answers so far are kept for the rerun.
    """
    checked = _checked_records(records)
    requests = []
    for rid, text, _ in checked:
      messages = annotation_messages(text, self.max_chars)
      digest = hashlib.sha256(json.dumps([self.client.config.model, messages]).encode())
      requests.append({"id": f"{rid}#{digest.hexdigest()[:16]}", "record_id": rid,
                       "messages": messages})
    overrides = {"response_format": {"type": "json_object"}} if self.json_mode else {}

    def build(request):
      return {"messages": request["messages"], **overrides}

    def parse(text, request):
      del request
      return parse_answer(text)

    raw_path = raw_path_for(out_path)
    map_jsonl(self.client, requests, raw_path, build=build, parse=parse, keep=("record_id",),
              parse_retries=self.parse_retries, retry_errors=retry_unlabelled,
              progress=progress, desc="annotate")
    answers = {}
    for _, line in read_jsonl(raw_path, error=AnnotationError):
      answers[line["id"]] = line
    rows = []
    for request in requests:
      answer = answers.get(request["id"])
      if answer is None:
        raise AnnotationError(f"{raw_path}: no answer for request {request['id']!r} after "
                              f"map_jsonl finished")
      rows.append(self._row(request["record_id"], answer))
    write_labels(rows, out_path)
    return {**summarize_labels(rows), "annotator": self.name, "threshold": self.threshold,
            "out_path": out_path, "raw_path": raw_path}

  def _row(self, rid: str | int, answer: Mapping[str, Any]) -> dict[str, Any]:
    if "error" in answer:
      return {"id": rid, "score": None, "label": None, "annotator": self.name,
              "reason": f"unlabelled: {answer['error']}"}
    score = answer["result"]["educational_value"] / MAX_VALUE
    return {"id": rid, "score": score, "label": label_for(score, self.threshold),
            "annotator": self.name, "reason": answer["result"]["reason"]}


# -- the heuristic proxy ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HeuristicWeights:
  """Feature weights of the heuristic: score = clip(sum(w * bonus) - sum(w * penalty), 0, 1).

  Bonuses (each feature in [0, 1]; their weights sum to 1, so a snippet with every
  bonus and no penalty scores 1):
    docs: documentation lines (comments after the leading header block, and
      docstrings; a code line with an inline comment counts half) over non-blank
      lines, full marks at 25%.
    definitions: `def` / `class` statements, full marks at 3.
    logic: control-flow lines (if/for/while/try/with/return/yield/raise/...) over
      code lines, full marks at 20%: meaningful computation.
    self_contained: 1 - third-party or relative imports / 4 (stdlib imports are free).
  Penalties (each in [0, 1]):
    literal_data: the share of code lines that are only literals (table rows) or
      top-level constant assignments (settings).
    import_heavy: the share of code lines that are imports (re-export modules).
    boilerplate_file: 1 for setup.py, settings/config modules, conf.py, manage.py,
      wsgi/asgi.py, __init__.py, migrations, or a top-level `setup(` call.
    test_scaffolding: 1 for test_*.py / *_test.py / conftest.py, else test functions,
      TestCase classes and pytest fixtures / 3.
    tiny: 1 when there are fewer than 5 code lines.
  """

  docs: float = 0.25
  definitions: float = 0.20
  logic: float = 0.30
  self_contained: float = 0.25
  literal_data: float = 0.60
  import_heavy: float = 0.50
  boilerplate_file: float = 0.35
  test_scaffolding: float = 0.35
  tiny: float = 0.40

  BONUSES = ("docs", "definitions", "logic", "self_contained")
  PENALTIES = ("literal_data", "import_heavy", "boilerplate_file", "test_scaffolding", "tiny")


_TRIPLE = re.compile(r"""^[rRbBuUfF]{0,2}("{3}|'{3})""")
_DEF = re.compile(r"^\s*(async\s+def|def|class)\s+\w")
_CONTROL = re.compile(r"^\s*(if|elif|else|for|while|try|except|finally|with|return|yield|"
                      r"raise|break|continue|match|case|async\s+for|async\s+with)\b")
_IMPORT = re.compile(r"^\s*(?:import\s+([\w.]+(?:\s*,\s*[\w.]+)*)|from\s+(\.*)([\w.]*)\s+import)\b")
_STRING = re.compile(r"""[rRbBuUfF]{0,2}(?:"[^"\\]*(?:\\.[^"\\]*)*"|'[^'\\]*(?:\\.[^'\\]*)*')""")
_SCALAR = re.compile(r"(?<![\w.])-?\d[\w.]*|\b(?:True|False|None)\b")
_CONSTANT = re.compile(r"^[A-Za-z_][\w.]*\s*(?::\s*[\w\[\], .]+)?=\s*"
                       r"""(?:[rRbBuUfF]{0,2}["']|-?\d|True\b|False\b|None\b|[\[{(])""")
_TEST_DEF = re.compile(r"^\s*(?:async\s+)?def\s+test_\w*|^\s*class\s+\w*Test\w*\s*[(:]|"
                       r"^\s*@pytest\.fixture|unittest\.TestCase")
_BOILERPLATE_NAMES = {"setup.py", "settings.py", "config.py", "conf.py", "manage.py",
                      "wsgi.py", "asgi.py", "__init__.py", "configuration.py", "_version.py",
                      "version.py"}
_MIN_CODE_LINES = 5


def _imported_modules(match: re.Match) -> list[str]:
  """The top-level module names of one import statement ('.' for a relative import)."""
  if match.group(1):
    return [name.strip().split(".")[0] for name in match.group(1).split(",")]
  return ["."] if match.group(2) else [match.group(3).split(".")[0]]


def _is_literal_line(stripped: str) -> bool:
  """Whether a line holds only literals (strings, numbers, True/False/None) and the
  brackets, commas and colons between them: a row of a data table."""
  rest, strings = _STRING.subn("", stripped)
  rest, scalars = _SCALAR.subn("", rest)
  return strings + scalars > 0 and not rest.strip(" \t[]{}(),:")


def heuristic_features(text: str, path: str | None = None) -> dict[str, float]:
  """The HeuristicWeights features of a snippet, each in [0, 1] (see there)."""
  nonblank = code = docs = defs = control = imports = third_party = data = tests = 0
  in_string: str | None = None  # the closing quotes of a docstring block we are inside
  header = True  # the leading comment block (shebang, license) is not documentation
  for line in text.splitlines():
    stripped = line.strip()
    if not stripped:
      continue
    nonblank += 1
    if in_string is not None:
      docs += 1
      if in_string in stripped:
        in_string = None
      continue
    if stripped.startswith("#"):
      docs += 0 if header else 1
      continue
    header = False
    opening = _TRIPLE.match(stripped)
    if opening:  # a string statement: a docstring
      docs += 1
      quotes = opening.group(1)
      if quotes not in stripped[opening.end():]:
        in_string = quotes
      continue
    code += 1
    if "#" in stripped:  # an inline comment documents its line
      docs += 0.5
    defs += bool(_DEF.match(line))
    control += bool(_CONTROL.match(line)) or (" for " in stripped and " in " in stripped)
    imported = _IMPORT.match(line)
    if imported:
      imports += 1
      third_party += sum(1 for name in _imported_modules(imported)
                         if name == "." or name not in sys.stdlib_module_names)
    data += _is_literal_line(stripped) or bool(_CONSTANT.match(line))
    tests += bool(_TEST_DEF.search(line))
  name = os.path.basename(path) if path else ""
  parts = set(re.split(r"[\\/]", path)) if path else set()
  boilerplate = (name in _BOILERPLATE_NAMES or "migrations" in parts or
                 re.search(r"^setup\(", text, re.MULTILINE) is not None)
  test_file = (name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py")
  return {
      "docs": min(1.0, docs / max(nonblank, 1) / 0.25),
      "definitions": min(1.0, defs / 3),
      "logic": min(1.0, control / max(code, 1) / 0.20),
      "self_contained": 1.0 - min(1.0, third_party / 4),
      "literal_data": data / max(code, 1),
      "import_heavy": imports / max(code, 1),
      "boilerplate_file": float(boilerplate),
      "test_scaffolding": 1.0 if test_file else min(1.0, tests / 3),
      "tiny": float(code < _MIN_CODE_LINES),
  }


class HeuristicAnnotator:
  """The offline proxy annotator: a documented heuristic score in [0, 1].

  NOT the paper's judgement: a hand-weighted score of surface features (see
  HeuristicWeights) standing in for an LLM when no endpoint is configured. Its rows
  say "annotator": "heuristic-proxy".
  """

  name = HEURISTIC_ANNOTATOR

  def __init__(self, *, threshold: float = DEFAULT_THRESHOLD,
               weights: HeuristicWeights = HeuristicWeights()):
    self.threshold = _check_threshold(threshold, "HeuristicAnnotator")
    self.weights = weights

  def score(self, text: str, path: str | None = None) -> tuple[float, dict[str, float]]:
    """(score in [0, 1], features) of one snippet."""
    features = heuristic_features(text, path)
    w = self.weights
    total = (sum(getattr(w, k) * features[k] for k in w.BONUSES) -
             sum(getattr(w, k) * features[k] for k in w.PENALTIES))
    return min(1.0, max(0.0, total)), features

  def row(self, record: Any, where: str = "record") -> dict[str, Any]:
    """The labels row of one record."""
    score, features = self.score(record_text(record, where), record_path(record))
    shown = ", ".join(f"{k} {features[k]:.2f}" for k in self.weights.BONUSES)
    penalties = ", ".join(f"{k} {features[k]:.2f}" for k in self.weights.PENALTIES
                          if features[k] > 0)
    reason = f"heuristic proxy: {shown}; penalties: {penalties or 'none'}"
    return {"id": record_id(record, where), "score": round(score, 6),
            "label": label_for(score, self.threshold), "annotator": self.name,
            "reason": reason}

  def annotate(self, records: Iterable[Any], out_path: str, *,
               progress: bool = False) -> dict[str, Any]:
    """Labels every record; writes the labels file `out_path`; returns its summary."""
    del progress  # fast: thousands of records a second
    rows = [self.row(record, f"records[{index}]")
            for index, (_, _, record) in enumerate(_checked_records(records))]
    write_labels(rows, out_path)
    return {**summarize_labels(rows), "annotator": self.name, "threshold": self.threshold,
            "out_path": out_path}


def make_annotator(client: LLMClient | None, *, threshold: float = DEFAULT_THRESHOLD,
                   max_chars: int = DEFAULT_MAX_CHARS,
                   json_mode: bool = False) -> LLMAnnotator | HeuristicAnnotator:
  """The LLM annotator when a client is given, else the heuristic proxy."""
  if client is None:
    return HeuristicAnnotator(threshold=threshold)
  return LLMAnnotator(client, threshold=threshold, max_chars=max_chars, json_mode=json_mode)
