"""The diversity report of a synthesis run: what was asked, what came back, how varied.

Per generator:
  - counts: requests, accepted, rejected by gate (the rejection table);
  - topics covered: for each dimension of the topic space (topics.py), how many of its
    values the accepted samples cover, and the most / least frequent ones;
  - near-duplicate rate: the share of samples reaching the duplicate gate that were
    duplicates (of an earlier sample, or of the curated data);
  - openings (textbooks): the most frequent first words: teachers repeat their openers
    ("In this section, we will ...", the Cosmopedia lesson);
  - function names (exercises): the most frequent names, and how often the teacher used
    the name it was asked for;
  - test adequacy (exercises, with config.synth.exercises.mutants): of the exercises that
    passed their own tests and were mutation-tested, how many were measured, their mean
    and median mutation score, how many fall in each score band, and the mutants' fates
    (killed, survived, timeout, memory, crashed);
  - benchmark proximity (with config.synth.proximity.checks): per topic value, how many
    samples were checked, how many were rejected as benchmark_proximity, the most n-grams
    shared with one benchmark problem and the highest AST match rate at or above the
    threshold: the topics to weight down when the teacher keeps landing near a benchmark.
"""

from __future__ import annotations

import collections
import re
import statistics
from collections.abc import Mapping
from typing import Any

from data_pipeline.synth import topics

OPENING_WORDS = 5
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
TOP = 10
SCORE_BANDS = (0.0, 0.25, 0.5, 0.75, 1.0)  # lower edges of the mutation-score bands


def opening(text: str, words: int = OPENING_WORDS) -> str:
  """The first `words` words of `text`, lower-cased, without punctuation or markdown:
  the opener a reader sees first ('## In this section, we' = 'in this section we')."""
  return " ".join(_WORD.findall(text.lower())[:words])


def _ranked(counts: collections.Counter, n: int) -> list[tuple[str, int]]:
  return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


class Tally:
  """Counts one generator's outcomes as records are written (streamed: it keeps
  counters, not records), then gives its report.

  Args:
    generator: 'textbooks' or 'exercises'.
    requests: how many requests the run made for it.
  """

  def __init__(self, generator: str, requests: int):
    self.generator, self.requests = generator, requests
    self.dimensions = (topics.TEXTBOOK_DIMENSIONS if generator == "textbooks"
                       else topics.EXERCISE_DIMENSIONS)
    self.topic_counts = {name: collections.Counter() for name in self.dimensions}
    self.gates: collections.Counter = collections.Counter()
    self.firsts: collections.Counter = collections.Counter()  # openings or function names
    self.accepted_count = 0
    self.asked_name_used = 0
    self.scores: list[float] = []
    self.unmeasured = 0
    self.mutant_fates: collections.Counter = collections.Counter()
    # (dimension, value) -> [checked, rejected, most shared n-grams, highest tau]
    self.near: dict[tuple[str, str], list] = {}

  def accepted(self, record: Mapping[str, Any]) -> None:
    """An accepted Record / Exercise (JSON, with meta['topic'])."""
    self.accepted_count += 1
    topic = record["meta"]["topic"]
    for name, counts in self.topic_counts.items():
      value = topic[name]
      counts.update(value if isinstance(value, list) else [value])
    if self.generator == "textbooks":
      self.firsts[opening(record["text"])] += 1
    else:
      name = record["meta"]["function"]
      self.firsts[name] += 1
      self.asked_name_used += name == topic["function_name"]

  def rejected(self, gate: str) -> None:
    self.gates[gate] += 1

  def mutation(self, result: Mapping[str, Any]) -> None:
    """An exercise's mutation result (adequacy.MutationResult.to_json())."""
    if result["score"] is None:
      self.unmeasured += 1
    else:
      self.scores.append(result["score"])
    for fate in ("killed", "survived", "timeout", "memory", "crashed"):
      self.mutant_fates[fate] += result.get(fate, 0)

  def proximity(self, topic: Mapping[str, Any], scores: Mapping[str, Any],
                rejected: bool) -> None:
    """A sample the proximity gate checked: its topic, scores and whether it was near."""
    for name in self.dimensions:
      values = topic[name] if isinstance(topic[name], list) else [topic[name]]
      for value in values:
        row = self.near.setdefault((name, value), [0, 0, 0, None])
        row[0] += 1
        row[1] += rejected
        row[2] = max(row[2], scores.get("ngram", {}).get("matches", 0))
        tau = scores.get("ast", {}).get("tau")
        if tau is not None:
          row[3] = tau if row[3] is None else max(row[3], tau)

  def proximity_report(self) -> dict[str, Any]:
    checked = {}
    for (name, value), (n, rejected, ngrams, tau) in self.near.items():
      checked.setdefault(name, []).append(
          {"value": value, "checked": n, "rejected": rejected,
           "rate": round(rejected / n, 4), "max_ngram_matches": ngrams, "max_tau": tau})
    for rows in checked.values():
      rows.sort(key=lambda r: (-r["rate"], -r["rejected"], r["value"]))
    return {"rejected": self.gates.get("benchmark_proximity", 0), "by_topic": checked}

  def adequacy(self) -> dict[str, Any]:
    bands = collections.Counter()
    for score in self.scores:
      bands[max(b for b in SCORE_BANDS if score >= b)] += 1
    return {
        "tested": len(self.scores) + self.unmeasured, "measured": len(self.scores),
        "unmeasured": self.unmeasured,
        "mean_score": round(statistics.fmean(self.scores), 4) if self.scores else None,
        "median_score": round(statistics.median(self.scores), 4) if self.scores else None,
        "score_bands": {f"{b:g}": bands.get(b, 0) for b in SCORE_BANDS},
        "mutants": dict(self.mutant_fates), "weak_tests": self.gates.get("weak_tests", 0)}

  def report(self) -> dict[str, Any]:
    accepted, duplicates = self.accepted_count, self.gates.get("duplicate", 0)
    reached_dedup = accepted + duplicates
    coverage = {}
    for name, counts in self.topic_counts.items():
      ranked = _ranked(counts, len(counts))
      coverage[name] = {"covered": len(counts), "of": len(self.dimensions[name]),
                        "most": ranked[:3], "least": ranked[::-1][:3]}
    report: dict[str, Any] = {
        "requests": self.requests,
        "accepted": accepted,
        "rejected": sum(self.gates.values()),
        "acceptance_rate": round(accepted / self.requests, 4) if self.requests else 0.0,
        "rejected_by_gate": dict(_ranked(self.gates, len(self.gates))),
        "near_duplicate_rate": round(duplicates / reached_dedup, 4) if reached_dedup else 0.0,
        "topics": coverage,
        "topic_space_size": topics.space_size(self.generator),
    }
    if self.near:
      report["benchmark_proximity"] = self.proximity_report()
    if self.generator == "textbooks":
      report["openings"] = _ranked(self.firsts, TOP)
      report["distinct_openings"] = len(self.firsts)
    else:
      report["function_names"] = _ranked(self.firsts, TOP)
      report["distinct_function_names"] = len(self.firsts)
      report["asked_name_used"] = round(self.asked_name_used / accepted, 4) if accepted else 0.0
      if self.scores or self.unmeasured:
        report["test_adequacy"] = self.adequacy()
    return report


def markdown(report: Mapping[str, Any]) -> str:
  """The report as markdown (diversity.md)."""
  out = ["# Synthetic data: diversity report", ""]
  out.append(f"Teacher: `{report['teacher']}`, seed {report['seed']}. The data is only as "
             "good as the teacher: a weak or random model's samples fail the gates below.")
  for generator in topics.GENERATORS:
    if generator not in report["generators"]:
      continue
    g = report["generators"][generator]
    out += ["", f"## {generator}", "",
            f"{g['accepted']} accepted of {g['requests']} requests "
            f"({100 * g['acceptance_rate']:.1f}%), near-duplicate rate "
            f"{100 * g['near_duplicate_rate']:.1f}%.", ""]
    if g["rejected_by_gate"]:
      out += ["| rejected by gate | samples |", "| --- | ---: |"]
      out += [f"| {gate} | {n} |" for gate, n in g["rejected_by_gate"].items()]
      out.append("")
    out += ["| topic dimension | covered | most frequent | least frequent |",
            "| --- | ---: | --- | --- |"]
    for name, c in g["topics"].items():
      most = ", ".join(f"{v} ({n})" for v, n in c["most"])
      least = ", ".join(f"{v} ({n})" for v, n in c["least"])
      out.append(f"| {name} | {c['covered']}/{c['of']} | {most} | {least} |")
    if "benchmark_proximity" in g:
      out += _proximity_markdown(g["benchmark_proximity"])
    if generator == "textbooks":
      out += ["", f"Most frequent openings ({g['distinct_openings']} distinct):", ""]
      out += [f"- `{text}`: {n}" for text, n in g["openings"]]
    else:
      out += ["", f"Most frequent function names ({g['distinct_function_names']} distinct; "
              f"the asked name used in {100 * g['asked_name_used']:.1f}%):", ""]
      out += [f"- `{name}`: {n}" for name, n in g["function_names"]]
      if "test_adequacy" in g:
        out += _adequacy_markdown(g["test_adequacy"])
  return "\n".join(out) + "\n"


def _adequacy_markdown(a: Mapping[str, Any]) -> list[str]:
  mean = "n/a" if a["mean_score"] is None else f"{100 * a['mean_score']:.1f}%"
  median = "n/a" if a["median_score"] is None else f"{100 * a['median_score']:.1f}%"
  out = ["", f"Test adequacy: {a['tested']} exercises mutation-tested, {a['measured']} "
         f"measured ({a['unmeasured']} not: no mutant ran to a verdict, or the unmutated "
         f"tests failed in the driver); mean mutation score {mean}, median {median}; "
         f"{a['weak_tests']} rejected as weak_tests.", "",
         "| mutation score | exercises |", "| --- | ---: |"]
  edges = list(a["score_bands"])
  for i, edge in enumerate(edges):
    label = f">= {edge}" if i == len(edges) - 1 else f"[{edge}, {edges[i + 1]})"
    out.append(f"| {label} | {a['score_bands'][edge]} |")
  fates = ", ".join(f"{fate} {n}" for fate, n in a["mutants"].items())
  out += ["", f"Mutants: {fates or 'none'}."]
  return out


def _proximity_markdown(p: Mapping[str, Any]) -> list[str]:
  out = ["", f"Benchmark proximity: {p['rejected']} rejected as benchmark_proximity. The "
         f"topic values whose samples came nearest to a benchmark (per dimension, the "
         f"{TOP} highest rejection rates):", "",
         "| dimension | value | checked | rejected | rate | most shared n-grams | "
         "highest tau |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
  for name, rows in p["by_topic"].items():
    for r in rows[:TOP]:
      tau = "-" if r["max_tau"] is None else f"{r['max_tau']:.2f}"
      out.append(f"| {name} | {r['value']} | {r['checked']} | {r['rejected']} | "
                 f"{100 * r['rate']:.1f}% | {r['max_ngram_matches']} | {tau} |")
  return out
