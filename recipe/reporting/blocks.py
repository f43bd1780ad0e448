"""The report's building blocks, the values in them, and their rendering as Markdown and
as self-contained HTML (the same content in both).

A block is a tuple:
    ("h", level, text)          a heading
    ("p", text)                 a paragraph (`code` and **bold** marks only)
    ("table", header, rows)     a table of text cells
    ("img", file, alt)          a PNG in the report directory
    ("pre", text)               preformatted text (code excerpts)
    ("details", summary, blocks)  collapsed in HTML; in Markdown its blocks as they are
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

Block = tuple


# --------------------------------------------------------------------------- reading
def read_json(path: str) -> Any:
  """A JSON file's value; None when the file does not exist."""
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def read_jsonl(path: str) -> Iterator[dict]:
  """The rows of a JSONL file (none when it does not exist)."""
  if not os.path.isfile(path):
    return
  with open(path, encoding="utf-8") as f:
    for line in f:
      if line.strip():
        yield json.loads(line)


# --------------------------------------------------------------------------- values
def fmt(value: Any) -> str:
  """A scalar as a table cell: thousands separators for large counts, 4 significant
  digits for floats, '-' for a missing value."""
  if value is None:
    return "-"
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, float):
    if not math.isfinite(value):
      return str(value)
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
  if isinstance(value, int):
    return f"{value:,}" if abs(value) >= 10_000 else str(value)
  return str(value)


def count(value: Any, unit: str) -> str:
  """A count with its unit ('1,500 files'); '-' when missing."""
  if value is None:
    return "-"
  value = int(value)
  return f"{value:,} {unit[:-1] if value == 1 and unit.endswith('s') else unit}"


def tokens(value: Any) -> str:
  """A token count, abbreviated ('3.75M tokens')."""
  if value is None:
    return "-"
  value = int(value)
  for suffix, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
    if value >= scale:
      return f"{value / scale:.3g}{suffix} tokens"
  return f"{value} tokens"


def percent(value: Any, digits: int = 1) -> str:
  """A fraction in [0, 1] as a percentage; '-' when missing."""
  if value is None:
    return "-"
  return f"{100 * float(value):.{digits}f}%"


def seconds(value: Any) -> str:
  return "-" if value is None else f"{float(value):.1f} s"


def rel(path: Any, workdir: str) -> str:
  """A path as the report shows it: relative to the work directory when inside it; a
  relative path outside it as written (where the report is built says nothing about it);
  an absolute one as its last three components after '…/' (source files of the machine
  that ran it)."""
  if not path:
    return "-"
  path = str(path)
  root = os.path.abspath(workdir)
  full = os.path.abspath(path)
  if full == root or full.startswith(root + os.sep):
    return os.path.relpath(full, root)
  if not os.path.isabs(path):
    return path
  parts = full.strip(os.sep).split(os.sep)
  return path if len(parts) <= 3 else "…/" + "/".join(parts[-3:])


def where(value: Any, workdir: str) -> str:
  """A 'path:line' location with its path made relative (rel)."""
  text = str(value or "")
  path, sep, line = text.rpartition(":")
  if sep and line.isdigit():
    return f"{rel(path, workdir)}:{line}"
  return rel(text, workdir)


def excerpt(text: Any, lines: int = 6, width: int = 100, skip_comments: bool = False) -> str:
  """The first `lines` non-blank lines of a text (with skip_comments, after its leading
  comment lines: a file's licence header), each cut to `width` characters, with control
  characters shown as escapes (a random teacher's output is not text)."""
  out = []
  for line in str(text or "").splitlines():
    if not line.strip() or (skip_comments and not out and line.lstrip().startswith("#")):
      continue
    line = "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in line)
    out.append(line if len(line) <= width else line[:width - 1] + "…")
    if len(out) == lines:
      break
  return "\n".join(out) if out else "(empty)"


def first_line(text: Any, width: int = 80) -> str:
  return excerpt(text, lines=1, width=width)


def scalar_rows(value: Mapping[str, Any], workdir: str, skip: Iterable[str] = ()) -> list[tuple[str, str]]:
  """(field, value) rows of a mapping's scalar fields (paths made relative); nested
  values are left to the section that knows them."""
  skip = set(skip)
  rows = []
  for key in sorted(value):
    v = value[key]
    if key in skip or isinstance(v, (Mapping, list, tuple)):
      continue
    if isinstance(v, str) and os.path.isabs(v):
      v = rel(v, workdir)
    rows.append((key, fmt(v)))
  return rows


def nested_cells(blocks: Iterable[Block]) -> list[str]:
  """The table cells that show a nested value instead of a table of it (the report
  never has one; tests use this)."""
  bad = re.compile(r"^\[\d+ items\]$|^\{.*\}$|^\[.*\]$")
  return [str(c) for b in walk(blocks) if b[0] == "table" for row in b[2] for c in row
          if bad.match(str(c).strip())]


def walk(blocks: Iterable[Block]) -> Iterator[Block]:
  """Every block, the blocks inside `details` included."""
  for block in blocks:
    yield block
    if block[0] == "details":
      yield from walk(block[2])


# --------------------------------------------------------------------------- rendering
def cell(value: Any) -> str:
  """A table cell's text: one line (a line break shows as the two characters \\n, in
  Markdown and HTML alike)."""
  return str(value).replace("\r", "\\r").replace("\n", "\\n")


def markdown(blocks: Iterable[Block]) -> str:
  out: list[str] = []
  for block in blocks:
    kind = block[0]
    if kind == "h":
      out += ["#" * block[1] + " " + block[2], ""]
    elif kind == "p":
      out += [block[1], ""]
    elif kind == "table":
      header, rows = block[1], block[2]
      out.append("| " + " | ".join(header) + " |")
      out.append("|" + "---|" * len(header))
      out += ["| " + " | ".join(cell(c).replace("|", "\\|") for c in row) + " |" for row in rows]
      out.append("")
    elif kind == "img":
      out += [f"![{block[2]}]({block[1]})", ""]
    elif kind == "pre":
      out += ["```", block[1], "```", ""]
    elif kind == "details":
      out += [f"*{block[1]}*", "", markdown(block[2])]
  return "\n".join(out)


def _inline(text: str) -> str:
  """`code` and **bold** of a Markdown line as HTML (the only inline marks used)."""
  text = html.escape(text)
  text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
  return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def _anchor(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


STYLE = ("body{font-family:sans-serif;max-width:64em;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
         "padding:2px 8px;text-align:left;vertical-align:top}td{font-variant-numeric:"
         "tabular-nums}pre{background:#f6f6f6;padding:.6em 1em;overflow:auto}"
         "img{max-width:100%}summary{cursor:pointer;font-weight:bold}")


def html_page(blocks: Iterable[Block], out_dir: str, title: str) -> str:
  """A self-contained page: the PNGs embedded as base64, a table of contents of the
  second-level headings."""
  blocks = list(blocks)
  sections = [b[2] for b in blocks if b[0] == "h" and b[1] == 2]
  out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>",
         f"<title>{html.escape(title)}</title>", f"<style>{STYLE}</style></head><body>"]
  toc = "<nav><p>" + " · ".join(f"<a href='#{_anchor(s)}'>{html.escape(s)}</a>"
                                for s in sections) + "</p></nav>"
  first = True
  for part in _html_blocks(blocks, out_dir):
    out.append(part)
    if first and part.startswith("<h1"):
      out.append(toc)
      first = False
  out.append("</body></html>")
  return "\n".join(out) + "\n"


def _html_blocks(blocks: Iterable[Block], out_dir: str) -> Iterator[str]:
  for block in blocks:
    kind = block[0]
    if kind == "h":
      yield (f"<h{block[1]} id='{_anchor(block[2])}'>{_inline(block[2])}</h{block[1]}>")
    elif kind == "p":
      yield f"<p>{_inline(block[1])}</p>"
    elif kind == "table":
      yield ("<table><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in block[1]) + "</tr>")
      for row in block[2]:
        yield "<tr>" + "".join(f"<td>{html.escape(cell(c))}</td>" for c in row) + "</tr>"
      yield "</table>"
    elif kind == "img":
      with open(os.path.join(out_dir, block[1]), "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
      yield (f"<p><img alt='{html.escape(block[2])}' data-file='{html.escape(block[1])}' "
             f"src='data:image/png;base64,{data}'></p>")
    elif kind == "pre":
      yield f"<pre>{html.escape(block[1])}</pre>"
    elif kind == "details":
      yield f"<details><summary>{_inline(block[1])}</summary>"
      yield from _html_blocks(block[2], out_dir)
      yield "</details>"
