"""Memorisation attribution: a passing sample copied from a planted training document is
attributed to it (n-gram and AST) and left out of the clean pass@k; an original one is
not."""

import json

from data_pipeline.decontaminate import DecontConfig
from data_pipeline.decontaminate.attribution import Passing, attribute, clean_counts
from eval import passk

PROMPT = 'def count_vowels(word):\n    """How many vowels the word has."""\n'
COPIED = ("    total = 0\n    for letter in word.lower():\n        if letter in 'aeiou':\n"
          "            total = total + 1\n    return total\n")
ORIGINAL = "    return sum(map(word.lower().count, 'aeiou'))\n"
# The planted document: the copied solution under other names, inside other code.
PLANTED = ("import sys\n\n\ndef vowel_total(text):\n    total = 0\n    for letter in "
           "text.lower():\n        if letter in 'aeiou':\n            total = total + 1\n"
           "    return total\n\n\nprint(vowel_total(sys.argv[1]))\n")
UNRELATED = "def area(w, h):\n    return w * h\n\n\ndef perimeter(w, h):\n    return 2 * (w + h)\n"


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def test_a_copied_passing_sample_is_attributed_and_left_out_of_clean_pass_at_k(tmp_path):
  code = _jsonl(tmp_path / "code.jsonl", [{"id": "a.py", "text": UNRELATED},
                                          {"id": "planted.py", "text": PLANTED}])
  exercises = _jsonl(tmp_path / "ex.jsonl", [{"id": "ex1", "prompt": "def f(x):\n",
                                              "solution": "    return x + 1\n"}])
  passing = [Passing("P/0", 0, PROMPT, "count_vowels", COPIED),
             Passing("P/1", 0, PROMPT, "count_vowels", ORIGINAL)]
  config = DecontConfig(benchmarks=("humaneval",), ngram_n=8)
  result = attribute(passing, {"phi1_filtered_code": [code], "phi1_exercises": [exercises]},
                     config)
  assert result["records"] == {"phi1_filtered_code": 2, "phi1_exercises": 1}
  copied, original = result["samples"]
  assert copied["near_copy"] and copied["ast"]["id"] == "planted.py"
  assert copied["ast"]["tau"] == 1.0 and copied["ast"]["dataset"] == "phi1_filtered_code"
  assert copied["ngram"]["id"] == "planted.py" and copied["ngram"]["matches"] >= 1
  assert copied["ast"]["where"] == f"{code}:2"
  assert not original["near_copy"] and original["ngram"] is None
  # clean pass@k: the copied sample is not counted; the problem it solved is left out
  results = [{"task_id": "P/0", "sample_index": 0, "passed": True},
             {"task_id": "P/1", "sample_index": 0, "passed": True},
             {"task_id": "P/2", "sample_index": 0, "passed": False}]
  near = {(s["task_id"], s["sample_index"]) for s in result["samples"] if s["near_copy"]}
  counts = clean_counts(results, near)
  assert counts == {"P/1": (1, 1), "P/2": (1, 0)}
  assert passk.pass_at_k_report(counts, [1])["overall"]["pass@1"] == 0.5
  # the thresholds are the decontamination's, configurable: with tau 1 and n-gram
  # overlap off, the exact copy is still a near-copy, an edited copy no longer
  strict = DecontConfig(benchmarks=("humaneval",), ngram_n=8, ngram_min_matches=1000,
                        prune_tau=1.0, taus=(0.5,))
  assert attribute(passing[:1], {"phi1_filtered_code": [code]}, strict)["samples"][0][
      "near_copy"]
  edited = PLANTED.replace("total = total + 1", "total += 1")
  edited_file = _jsonl(tmp_path / "edited.jsonl", [{"id": "edited.py", "text": edited}])
  near_miss = attribute(passing[:1], {"phi1_filtered_code": [edited_file]}, strict)
  sample = near_miss["samples"][0]
  assert not sample["near_copy"] and 0.5 <= sample["ast"]["tau"] < 1.0
