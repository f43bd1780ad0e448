"""The tiny run's report as a person opens it: report.html in headless Chromium (Debian
`chromium`, installed by `make test`'s set-up as root), a screenshot, and what the page
shows once loaded: every section, every image decoded, no raw nested-value cell; and
the Markdown carries the same content as the HTML."""

import html.parser
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from recipe import report
from tests import conftest

# Appended to a copy of the page: once it has loaded, writes what the browser shows
# into the DOM, which --dump-dom prints.
PROBE = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const cells = [...document.querySelectorAll('td')].map(td => td.textContent.trim());
  const probe = document.createElement('pre');
  probe.id = 'probe';
  probe.textContent = JSON.stringify({
    sections: [...document.querySelectorAll('h2')].map(h => h.textContent),
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt),
    nested: cells.filter(c => /^\\[\\d+ items\\]$|^\\{.*\\}$|^\\[.*\\]$/.test(c)),
    width: document.documentElement.scrollWidth,
  });
  document.body.appendChild(probe);
});
</script>"""


def _chromium() -> str:
  for name in ("chromium", "chromium-browser", "google-chrome"):
    path = shutil.which(name)
    if path:
      return path
  message = ("no Chromium: install the Debian package `chromium` (make test does as root)")
  if os.environ.get("CI"):
    pytest.fail(message)
  pytest.skip(message)


def _browser(*args, timeout=120):
  result = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                           "--hide-scrollbars", *args], capture_output=True, text=True,
                          timeout=timeout)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout


def test_report_in_a_browser_shows_every_section_and_image(tiny_run, tmp_path):
  workdir, _ = tiny_run
  page = os.path.join(workdir, "report", "report.html")
  probed = tmp_path / "probed.html"
  probed.write_text(open(page).read().replace("</body>", PROBE + "</body>"))
  dom = _browser("--virtual-time-budget=10000", "--dump-dom", f"file://{probed}")
  found = json.loads(html.unescape(re.search(r"<pre id=\"probe\">(.*?)</pre>", dom, re.S)[1]))
  assert found["sections"] == list(report.SECTIONS), found
  assert found["images"] >= 8 and not found["broken"], found
  assert not found["nested"], found
  assert found["width"] <= 1400  # nothing forces the page wider than a laptop screen
  shot = tmp_path / "report.png"
  _browser("--window-size=1200,2400", f"--screenshot={shot}", f"file://{page}")
  from matplotlib import image  # pylint: disable=g-import-not-at-top
  pixels = image.imread(str(shot))
  assert pixels.shape[:2] == (2400, 1200) and float(np.std(pixels)) > 0.05  # not blank


class _Text(html.parser.HTMLParser):
  """Headings and table cells of an HTML page, as text."""

  def __init__(self):
    super().__init__()
    self.items, self._tag, self._text = [], None, ""

  def handle_starttag(self, tag, attrs):
    if tag in ("h1", "h2", "h3", "td", "th"):
      self._tag, self._text = tag, ""

  def handle_endtag(self, tag):
    if tag == self._tag:
      self.items.append((tag[0] if tag[0] == "h" else "cell", self._text.strip()))
      self._tag = None

  def handle_data(self, data):
    if self._tag:
      self._text += data


def _markdown_items(md: str):
  items, in_code = [], False
  for line in md.splitlines():
    if line.startswith("```"):
      in_code = not in_code
    elif in_code:
      continue
    elif re.match(r"#{1,3} ", line):
      items.append(("h", re.sub(r"`([^`]*)`", r"\1", line.split(" ", 1)[1]).replace("**", "")))
    elif line.startswith("|") and not line.startswith("|---"):
      cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
      items += [("cell", re.sub(r"`([^`]*)`", r"\1", c).replace("**", "")) for c in cells]
  return items


def test_report_markdown_and_html_carry_the_same_content(tiny_run):
  workdir, _ = tiny_run
  md = open(os.path.join(workdir, "report", "report.md")).read()
  parser = _Text()
  parser.feed(open(os.path.join(workdir, "report", "report.html")).read())
  assert _markdown_items(md) == parser.items
  for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):  # every image exists
    assert os.path.isfile(os.path.join(workdir, "report", image)), image


def test_report_of_the_tiny_run_has_every_section_and_rebuilds_identically(tiny_run):
  workdir, _ = tiny_run
  paths = {name: os.path.join(workdir, "report", name) for name in ("report.md", "report.html")}
  before = {name: open(path, "rb").read() for name, path in paths.items()}
  md = before["report.md"].decode()
  assert [line[3:] for line in md.splitlines() if line.startswith("## ")] == list(report.SECTIONS)
  assert "### Code: from files to tokens" in md and "| quality classifier |" in md
  assert "### Table 3 layout: humaneval, similar vs non-similar problems" in md
  assert "![code funnel](data_funnel.png)" in md and "### evaluated model: humaneval" in md
  assert "/tmp/" not in md.split("## Config")[0]  # paths relative to the work directory
  result = conftest.run_py(f"--report={workdir}")
  assert result.returncode == 0, result.stderr[-2000:]
  after = {name: open(path, "rb").read() for name, path in paths.items()}
  # byte-identical apart from the timings (the report node was running when the stage
  # wrote the first one; it is complete now)
  assert _without_timings(after) == _without_timings(before)
  assert b"| report | started, not complete |" in before["report.md"]
  assert b"| report | complete |" in after["report.md"]


def _without_timings(files):
  cut = {"report.md": (b"\n## Timings\n", b"\n## Config\n"),
         "report.html": (b"<h2 id='timings'>", b"<h2 id='config'>")}
  out = {}
  for name, data in files.items():
    start, end = cut[name]
    out[name] = data[:data.index(start)] + data[data.index(end):]
  return out
