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
    the name it was asked for.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping
from typing import Any

from data_pipeline.synth import topics

OPENING_WORDS = 5
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
TOP = 10


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
    if self.generator == "textbooks":
      report["openings"] = _ranked(self.firsts, TOP)
      report["distinct_openings"] = len(self.firsts)
    else:
      report["function_names"] = _ranked(self.firsts, TOP)
      report["distinct_function_names"] = len(self.firsts)
      report["asked_name_used"] = round(self.asked_name_used / accepted, 4) if accepted else 0.0
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
    if generator == "textbooks":
      out += ["", f"Most frequent openings ({g['distinct_openings']} distinct):", ""]
      out += [f"- `{text}`: {n}" for text, n in g["openings"]]
    else:
      out += ["", f"Most frequent function names ({g['distinct_function_names']} distinct; "
              f"the asked name used in {100 * g['asked_name_used']:.1f}%):", ""]
      out += [f"- `{name}`: {n}" for name, n in g["function_names"]]
  return "\n".join(out) + "\n"
