from __future__ import annotations

import json

from data_pipeline.decontaminate.samples import code_blocks, read_samples, sample_of


def test_code_of_documents_and_exercises():
  textbook = ("Lists are ordered.\n\n```python\ndef f(x):\n    return x[0]\n```\n\nShell:\n"
              "```bash\nls -l\n```\n\n```\ny = 2\n```\n")
  blocks, fenced = code_blocks(textbook)
  assert fenced and blocks == ["def f(x):\n    return x[0]\n", "y = 2\n"]
  code_file = sample_of({"id": "c", "text": "import os\nprint(os.sep)\n"}, "f:1")
  assert code_file.code == ["import os\nprint(os.sep)\n"] and len(code_file.modules) == 1
  prose = sample_of({"id": "p", "text": "Recursion is a function calling itself."}, "f:2")
  assert prose.code == [] and prose.unparsable == []
  exercise = sample_of({"id": "e", "prompt": "def g(a):\n", "solution": "    return a\n"}, "f:3")
  assert exercise.text == "def g(a):\n    return a\n" and exercise.modules


def test_unparsable_code_is_recorded_not_fatal():
  broken = sample_of({"id": "e", "prompt": "def g(a:\n", "solution": "  pass\n"}, "f:1")
  assert broken.modules == [] and "SyntaxError" in broken.unparsable[0]
  fenced = sample_of({"id": "t", "text": "```python\nfor\n```\n```python\nx = 1\n```\n"}, "f:2")
  assert len(fenced.modules) == 1 and fenced.unparsable[0].startswith("block 1: SyntaxError")
  assert fenced.code == ["x = 1\n"]  # the programs that parse, aligned with the modules
  for body in ("[" * 300 + "]" * 300, "-" * 100_000 + "1"):  # nesting the parser refuses
    deep = sample_of({"id": "d", "prompt": "def f():\n", "solution": f"    return {body}\n"},
                     "f:3")
    assert deep.modules == [] and deep.unparsable and deep.unparsable[0].split(":")[1].strip()


def test_bad_lines_and_records_are_named_and_skipped(tmp_path):
  path = tmp_path / "in.jsonl"
  path.write_text("\n".join([json.dumps({"id": "1", "text": "x = 1"}), "{not json",
                             json.dumps(["a list"]), json.dumps({"id": "4", "text": 5}),
                             json.dumps({"id": "5", "prompt": "def f():\n"}),
                             json.dumps({"id": "6", "solution": "    pass\n"})]) + "\n")
  bad = []
  samples = list(read_samples([str(path), {"id": "d", "text": "y = 2"}],
                              lambda *args: bad.append(args)))
  assert [s.id for s in samples] == ["1", "6", "d"]
  assert [s.where for s in samples] == [f"{path}:1", f"{path}:6", "<records>:1"]
  assert [(reason, where) for reason, where, _ in bad] == [
      ("invalid_json", f"{path}:2"), ("not_an_object", f"{path}:3"), ("no_text", f"{path}:4"),
      ("no_text", f"{path}:5")]
