"""Tests of eval/benchmarks/multipl_e.py: MultiPL-E's released per-language files, scored
through the evaluator with each language's toolchain in the sandbox.

The problems are written here in MultiPL-E's released format (its HumanEval
translations' prompt, tests and stop tokens per language, for two small problems): right
completions pass, wrong ones fail their tests (`runtime_error`), and ones that do not
compile fail to (`compile_error`). Compiling Java, Go, Rust and C++ takes seconds per
program, so the full set per language is slow; the fast suite runs JavaScript and Bash.
A missing toolchain is an error naming its Debian package, never a skip.
"""

import json

import pytest

from eval import run as eval_run
from eval.benchmarks import BENCHMARKS, get_benchmark
from eval.benchmarks.multipl_e import MultiPLE
from eval.sandbox import Sandbox, SandboxUnavailableError
from eval.settings import EvalSettings, SettingsError
from tests.eval.benchmarks.helpers import write_jsonl

JAVA_HEADER = ("import java.util.*;\nimport java.lang.reflect.*;\nimport org.javatuples.*;\n"
               "import java.security.*;\nimport java.math.*;\nimport java.io.*;\n"
               "import java.util.stream.*;\nclass Problem {\n")
GO_TEST = """func Test{Name}(t *testing.T) {{
  candidate := {name}
\ttype test struct {{
\t\tactual   interface{{}}
\t\texpected interface{{}}
\t}}
   tests := []test{{
{cases}
   }}

\tfor i, tc := range tests {{
\t\tt.Run(fmt.Sprintf("test num % d", i), func(t *testing.T) {{
\t\t\tif fmt.Sprintf("%v", tc.actual) != fmt.Sprintf("%v", tc.expected) {{
\t\t\t\tt.Errorf("expected '%s', got '%s'", tc.expected, tc.actual)
\t\t\t}}
\t\t}})
\t}}
}}
"""


def _go(name, signature, cases):
  prompt = (f"package {name}_test\n\nimport (\n    \"testing\"\n    \"fmt\"\n)\n\n"
            f"// {name}\n{signature} {{\n")
  return prompt, GO_TEST.format(Name=name.title(), name=name, cases=cases)


# language -> (file's `language`, stop tokens, {name: (prompt, tests, right, wrong,
# not compiling)}), as MultiPL-E's humaneval-<lang> files write them.
PROBLEMS = {
    "js": ("js", ["\nfunction ", "\n/*", "\n//", "\nconsole.log"], {
        "HumanEval_0_add": (
            "//Add two numbers x and y\n// >>> add(2, 3)\n// 5\nfunction add(x, y){\n",
            "const assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = "
            "add;\n  assert.deepEqual(candidate(0, 1),1);\n  assert.deepEqual(candidate(5, 7)"
            ",12);\n}\n\ntest();",
            "  return x + y;\n}\n", "  return x - y;\n}\n", "  return x + ;\n}\n"),
        "HumanEval_1_sum_list": (
            "//Sum of a list\nfunction sum_list(l){\n",
            "const assert = require('node:assert');\n\n\nfunction test() {\n  let candidate = "
            "sum_list;\n  assert.deepEqual(candidate([1, 2, 3]),6);\n  assert.deepEqual("
            "candidate([]),0);\n}\n\ntest();",
            "  return l.reduce((a, b) => a + b, 0);\n}\n", "  return l.length;\n}\n",
            "  return l.reduce((a, b) => a + b, 0;\n}\n")}),
    "sh": ("sh", ["\n}"], {
        "HumanEval_0_add": (
            "#!/bin/bash\n# Add two numbers x and y\n# >>> $(add \"2\" \"3\")\n# \"5\"\n#\n"
            "# $1 is an integer\n# $2 is an integer\nadd() {\n",
            "}\n\ncandidate() {\n    add \"$@\"\n}\n\nset -e\nrun_test() {\n    [[ $(candidate "
            "\"0\" \"1\") = \"1\" ]]\n    [[ $(candidate \"5\" \"7\") = \"12\" ]]\n}\n\nrun_test",
            "    echo $(( $1 + $2 ))", "    echo $(( $1 - $2 ))", "    if then echo $1"),
        "HumanEval_1_sum_list": (
            "#!/bin/bash\n# Sum of a list\n#\n# $1 is a space-separated list\nsum_list() {\n",
            "}\n\ncandidate() {\n    sum_list \"$@\"\n}\n\nset -e\nrun_test() {\n    [[ "
            "$(candidate \"1 2 3\") = \"6\" ]]\n    [[ $(candidate \"\") = \"0\" ]]\n}\n\n"
            "run_test",
            "    local s=0\n    for x in $1; do s=$((s + x)); done\n    echo $s",
            "    echo 6", "    for x in $1; do\n    echo $x")}),
    "cpp": ("cpp", ["\n}"], {
        "HumanEval_0_add": (
            "#include<assert.h>\n#include<bits/stdc++.h>\n// Add two numbers x and y\n"
            "// >>> add((2), (3))\n// (5)\nlong add(long x, long y) {\n",
            "}\nint main() {\n    auto candidate = add;\n    assert(candidate((0), (1)) == "
            "(1));\n    assert(candidate((5), (7)) == (12));\n}\n",
            "    return x + y;", "    return x - y;", "    return x + ;"),
        "HumanEval_1_sum_list": (
            "#include<assert.h>\n#include<bits/stdc++.h>\n// Sum of a list\n"
            "long sum_list(std::vector<long> l) {\n",
            "}\nint main() {\n    auto candidate = sum_list;\n    assert(candidate((std::vector"
            "<long>({(long)1, (long)2, (long)3}))) == (6));\n    assert(candidate((std::vector"
            "<long>())) == (0));\n}\n",
            "    return std::accumulate(l.begin(), l.end(), 0L);", "    return l.size();",
            "    return std::accumulate(l.begin(), l.end(), 0L)")}),
    "java": ("java", ["\n    }\n"], {
        "HumanEval_0_add": (
            JAVA_HEADER + "    // Add two numbers x and y\n    // >>> add((2l), (3l))\n"
            "    // (5l)\n    public static long add(long x, long y) {\n",
            "    }\n    public static void main(String[] args) {\n    assert(add((0l), (1l)) == "
            "(1l));\n    assert(add((5l), (7l)) == (12l));\n    }\n\n}\n",
            "        return x + y;", "        return x - y;", "        return x + ;"),
        "HumanEval_8_sum_product": (
            JAVA_HEADER + "    // Sum and product of a list\n    public static Pair<Long, Long> "
            "sumProduct(ArrayList<Long> numbers) {\n",
            "    }\n    public static void main(String[] args) {\n    assert(sumProduct((new "
            "ArrayList<Long>(Arrays.asList((long)1l, (long)2l, (long)3l, (long)4l)))).equals("
            "(Pair.with(10l, 24l))));\n    assert(sumProduct((new ArrayList<Long>(Arrays.asList("
            ")))).equals((Pair.with(0l, 1l))));\n    }\n\n}\n",
            "        long s = 0, p = 1;\n        for (long n : numbers) { s += n; p *= n; }\n"
            "        return Pair.with(s, p);",
            "        return Pair.with(0l, 1l);",
            "        return Pair.with(numbers.size());")}),
    "go": ("go_test.go", ["\nfunc", "struct", "\n// "], {
        "HumanEval_0_add": (
            *_go("add", "func add(x int, y int) int",
                 "     { actual: candidate(0, 1), expected: 1 },\n"
                 "     { actual: candidate(5, 7), expected: 12 },"),
            "    return x + y\n}\n", "    return x - y\n}\n", "    return x +\n}\n"),
        "HumanEval_1_sum_list": (
            *_go("sum_list", "func sum_list(l []int) int",
                 "     { actual: candidate([]int{1, 2, 3}), expected: 6 },\n"
                 "     { actual: candidate([]int{}), expected: 0 },"),
            "    s := 0\n    for _, x := range l {\n        s += x\n    }\n    return s\n}\n",
            "    return len(l)\n}\n", "    s := 0\n    return\n}\n")}),
    "rs": ("rs", ["\n}"], {
        "HumanEval_0_add": (
            "/// Add two numbers x and y\n/// >>> add(2, 3)\n/// 5\n"
            "fn add(x: isize, y: isize) -> isize {\n",
            "}\n\nfn main() {\n    let candidate = add;\n    assert_eq!(candidate(0, 1), 1);\n"
            "    assert_eq!(candidate(5, 7), 12);\n}\n",
            "    x + y", "    x - y", "    x +"),
        "HumanEval_1_sum_list": (
            "/// Sum of a list\nfn sum_list(l: Vec<isize>) -> isize {\n",
            "}\n\nfn main() {\n    let candidate = sum_list;\n    assert_eq!(candidate(vec![1, 2,"
            " 3]), 6);\n    assert_eq!(candidate(Vec::<isize>::new()), 0);\n}\n",
            "    l.iter().sum()", "    l.len() as isize", "    l.iter().sum::<String>()")}),
}
VERDICTS = {"right": (True, None), "wrong": (False, "runtime_error"),
            "not compiling": (False, "compile_error")}


def write_release(tmp_path, language):
  """MultiPL-E's released JSONL for `language` with PROBLEMS' rows."""
  file_language, stops, problems = PROBLEMS[language]
  rows = [{"name": name, "language": file_language, "prompt": prompt, "doctests":
           "transform", "original": f"../HumanEval_{name}.py", "prompt_terminology":
           "reworded", "tests": tests, "stop_tokens": stops}
          for name, (prompt, tests, *_) in problems.items()]
  return write_jsonl(tmp_path / f"humaneval-{language}-reworded.jsonl", rows)


def check_verdicts(tmp_path, language):
  """Each problem's right, wrong and non-compiling completion gets its verdict through
  eval.run (the stop tokens cut nothing from them: they are whole completions)."""
  data = write_release(tmp_path, language)
  name = f"multipl-e-{language}"
  samples = [{"task_id": task_id, "completion": completion}
             for task_id, (_, _, *completions) in PROBLEMS[language][2].items()
             for completion in completions]
  samples_path = write_jsonl(tmp_path / "samples.jsonl", samples)
  report = eval_run.evaluate(name, str(tmp_path / "out"), EvalSettings(k=(1,), workers=2),
                             data_path=data, samples_path=samples_path)
  with open(tmp_path / "out" / "results.jsonl") as f:
    results = [json.loads(line) for line in f]
  expected = list(VERDICTS.values()) * len(PROBLEMS[language][2])
  assert [(r["passed"], r["failure"]) for r in results] == expected, [
      (r["task_id"], r["failure"], r["stderr_tail"][-300:]) for r in results]
  assert report["num_correct"] == len(PROBLEMS[language][2])
  assert report["benchmark"] == name and report["sandbox"]["in_force"].startswith(language)


@pytest.mark.parametrize("language", ["js", "sh"])
def test_verdicts_of_the_scripted_languages(tmp_path, language):
  check_verdicts(tmp_path, language)


@pytest.mark.slow
@pytest.mark.parametrize("language", ["cpp", "java", "go", "rs"])
def test_verdicts_of_the_compiled_languages(tmp_path, language):
  check_verdicts(tmp_path, language)


def test_every_language_is_a_benchmark_with_its_stops(tmp_path):
  for language, (_, stops, problems) in PROBLEMS.items():
    benchmark = get_benchmark(f"multipl-e-{language}")
    assert isinstance(benchmark, MultiPLE) and benchmark.language == language
    loaded = benchmark.load(write_release(tmp_path, language))
    assert [p.task_id for p in loaded] == list(problems)
    assert benchmark.stop == tuple(stops)
    prompt, tests, right, *_ = problems[loaded[0].task_id]
    assert benchmark.program(loaded[0], right) == prompt + right + "\n" + tests
    assert benchmark.timeout_s(loaded[0]) >= 15
  assert {n for n in BENCHMARKS if n.startswith("multipl-e-")} == {
      f"multipl-e-{language}" for language in PROBLEMS}


def test_bad_files_are_refused_naming_the_line(tmp_path):
  benchmark = get_benchmark("multipl-e-js")
  with pytest.raises(FileNotFoundError, match="pass the path"):
    benchmark.load(None)
  java = write_release(tmp_path, "java")
  with pytest.raises(ValueError, match=r"jsonl:1: language 'java', but multipl-e-js"):
    benchmark.load(java)
  row = {"name": "a", "language": "js", "prompt": "p", "tests": "t", "stop_tokens": ["\n}"]}
  cases = {
      "missing field": [{k: v for k, v in row.items() if k != "tests"}],
      "stop_tokens must be a non-empty list": [{**row, "stop_tokens": []}],
      r"stop_tokens \['x'\] differ": [row, {**row, "name": "b", "stop_tokens": ["x"]}],
      "appears more than once": [row, row],
  }
  for message, rows in cases.items():
    with pytest.raises(ValueError, match=message):
      benchmark.load(write_jsonl(tmp_path / "bad.jsonl", rows))


def test_a_missing_toolchain_is_an_error_naming_its_package(monkeypatch):
  monkeypatch.setattr("shutil.which", lambda tool, path=None: None)
  with pytest.raises(SandboxUnavailableError, match=r"node \(Debian package nodejs\)"):
    Sandbox(language="js")
  monkeypatch.setattr("os.path.isfile", lambda path: False)
  with pytest.raises(SandboxUnavailableError,
                     match=r"javatuples.jar \(Debian package libjavatuples-java\)"):
    Sandbox(language="java")


def test_no_bits_per_byte_for_multipl_e():
  EvalSettings(benchmarks=("multipl-e-js",)).consistent("config.eval")
  with pytest.raises(SettingsError, match="bpb_benchmarks.*no reference solutions"):
    EvalSettings(bpb_benchmarks=("humaneval", "multipl-e-go")).consistent("config.eval")


def test_off_in_the_paper_config():
  from configs import phi1  # pylint: disable=g-import-not-at-top
  config = phi1.get_config()
  used = set(config.eval.benchmarks) | set(config.eval.bpb_benchmarks)
  assert used and not any(name.startswith("multipl-e-") for name in used)


@pytest.mark.slow
def test_the_eval_stage_scores_a_model_on_multipl_e(tmp_path, hf_phi_dir):
  """config.eval.benchmarks with MultiPL-E: the eval stage generates with a model
  (stopping at the file's stop tokens), runs the programs and summarizes them."""
  # pylint: disable=g-import-not-at-top
  from phi_jax.tokenizer import byte_level
  from recipe.stages import evaluate as eval_stage
  directory, _ = hf_phi_dir(vocab_size=320)
  byte_level().save(directory)
  data = write_release(tmp_path, "js")
  cfg = EvalSettings(benchmarks=("multipl-e-js",), data_paths=(f"multipl-e-js={data}",),
                     bpb_benchmarks=(), max_new_tokens=24, k=(1,)).check("config.eval.")
  cfg.consistent("config.eval")
  summary = eval_stage._evaluate_model(cfg, directory, str(tmp_path / "eval"))
  assert list(summary) == ["multipl-e-js"] and "bpb" not in summary["multipl-e-js"]
  assert summary["multipl-e-js"]["num_problems"] == 2
  with open(tmp_path / "eval" / "multipl-e-js" / "results.jsonl") as f:
    results = [json.loads(line) for line in f]
  stops = PROBLEMS["js"][1]
  assert len(results) == 2
  for row in results:
    assert not any(stop in row["completion"] for stop in stops)
    assert row["failure"] in (None, "compile_error", "runtime_error", "timeout", "memory")
