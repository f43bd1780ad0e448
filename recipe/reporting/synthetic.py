"""The report's Synthetic data section: each generator's requests through its gates as a
funnel, topic coverage as a chart, the teacher's usage, and a few accepted and rejected
records with their reasons.

Read from synthesize/summary.json, synthesize/diversity.json, the accepted records
(synthesize/<generator>.jsonl) and synthesize/rejected.jsonl."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from recipe.reporting import plots
from recipe.reporting.blocks import (Block, count, excerpt, fmt, percent, read_json,
                                     read_jsonl, scalar_rows)

GENERATORS = ("textbooks", "exercises")
EXAMPLES = 2  # accepted and rejected records shown per generator


def section(workdir: str, out_dir: str) -> list[Block]:
  summary = read_json(os.path.join(workdir, "synthesize", "summary.json"))
  blocks: list[Block] = [("h", 2, "Synthetic data")]
  if summary is None:
    return blocks + [("p", "No synthesize/summary.json: the synthesize stage has not run.")]
  diversity = (read_json(os.path.join(workdir, "synthesize", "diversity.json")) or {}).get(
      "generators") or {}
  sent = summary.get("sent") or {}
  cost = summary.get("sent_cost_usd")
  blocks.append(("p", f"Teacher `{summary.get('teacher')}`: {count(sent.get('requests'), 'requests')} "
                      f"sent, {fmt(sent.get('prompt_tokens'))} prompt and "
                      f"{fmt(sent.get('completion_tokens'))} completion tokens"
                      + (f", ${cost:.2f}." if isinstance(cost, (int, float)) else
                         " (no price configured).")))
  generators = [g for g in GENERATORS if g in summary] + sorted(
      g for g, v in summary.items() if g not in GENERATORS and isinstance(v, Mapping)
      and "accepted" in v)
  rows = []
  for name in generators:
    g = summary[name]
    rows.append((name, count(g.get("requests"), "requests"), count(g.get("accepted"), "records"),
                 percent((g.get("accepted") or 0) / g["requests"]) if g.get("requests") else "-"))
  blocks.append(("table", ("generator", "requested", "accepted", "acceptance"), rows))
  for name in generators:
    blocks += _generator(workdir, out_dir, name, summary[name], diversity.get(name) or {})
  return blocks


def gate_rows(generator: Mapping[str, Any]) -> list[tuple[str, int, int]]:
  """(gate, rejected there, remaining) from the requests to the accepted records, the
  gates in the order of their rejections (most first)."""
  remaining = int(generator.get("requests") or 0)
  rows = [("requests", 0, remaining)]
  for gate, n in sorted((generator.get("rejected_by_gate") or {}).items(), key=lambda kv: -kv[1]):
    remaining -= int(n)
    rows.append((gate, int(n), remaining))
  return rows


def _generator(workdir: str, out_dir: str, name: str, generator: Mapping[str, Any],
               diversity: Mapping[str, Any]) -> list[Block]:
  blocks: list[Block] = [("h", 3, f"Generator `{name}`")]
  rows = gate_rows(generator)
  blocks.append(("table", ("gate", "rejected", "remaining"),
                 [(gate, count(n, "records") if n else "-", count(left, "records"))
                  for gate, n, left in rows]))
  if plots.funnel(os.path.join(out_dir, f"synth_{name}_funnel.png"), [r[0] for r in rows],
                  [r[2] for r in rows], f"{name}: records remaining after each gate", "records"):
    blocks.append(("img", f"synth_{name}_funnel.png", f"{name} acceptance funnel"))
  topics = diversity.get("topics") or {}
  if topics:
    axes = sorted(topics)
    blocks.append(("table", ("topic axis", "values covered", "of", "most used", "least used"),
                   [(axis, fmt(topics[axis].get("covered")), fmt(topics[axis].get("of")),
                     _counted(topics[axis].get("most")), _counted(topics[axis].get("least")))
                    for axis in axes]))
    if plots.bars(os.path.join(out_dir, f"synth_{name}_topics.png"), axes,
                  [100 * (topics[a].get("covered") or 0) / max(topics[a].get("of") or 1, 1)
                   for a in axes], f"{name}: topic values covered by accepted records",
                  "% of the axis's values", ylim=(0, 100)):
      blocks.append(("img", f"synth_{name}_topics.png", f"{name} topic coverage"))
  scalars = scalar_rows(diversity, workdir, skip=("accepted", "rejected", "requests"))
  if scalars:
    blocks.append(("table", ("diversity measure", "value"), scalars))
  blocks += _examples(workdir, name)
  return blocks


def _counted(pairs: Any) -> str:
  """[[value, count], ...] (a topic axis's most or least used values) as text."""
  if not pairs:
    return "-"
  return "; ".join(f"{p[0]} ({p[1]})" if isinstance(p, (list, tuple)) and len(p) == 2
                   else str(p) for p in pairs[:3])


def _examples(workdir: str, name: str) -> list[Block]:
  blocks: list[Block] = []
  accepted = []
  for row in read_jsonl(os.path.join(workdir, "synthesize", f"{name}.jsonl")):
    accepted.append(row)
    if len(accepted) == EXAMPLES:
      break
  for row in accepted:
    text = row.get("text") or (str(row.get("prompt", "")) + str(row.get("solution", "")))
    blocks += [("p", f"Accepted `{row.get('id')}`:"), ("pre", excerpt(text, lines=8))]
  rejected = []
  for row in read_jsonl(os.path.join(workdir, "synthesize", "rejected.jsonl")):
    if row.get("generator") == name:
      rejected.append(row)
      if len(rejected) == EXAMPLES:
        break
  for row in rejected:
    blocks += [("p", f"Rejected `{row.get('id')}` at gate `{row.get('gate')}`: "
                     f"{row.get('reason')}"),
               ("pre", excerpt(row.get("raw"), lines=4))]
  return blocks
