"""File helpers for tests of bad input: snapshot a directory, damage a checkpoint."""

import hashlib
import os


def tree_hashes(root) -> dict[str, str]:
  """{relative path: sha256 of the bytes} of every file under root (symlinks followed)."""
  hashes = {}
  for directory, _, names in os.walk(root):
    for name in names:
      path = os.path.join(directory, name)
      with open(path, "rb") as f:
        hashes[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return hashes


def truncate_item_files(directory, keep: float = 0.5) -> list[str]:
  """Cuts the data files of an Orbax item to `keep` of their size, as a full disk or an
  interrupted copy leaves them: every array-chunk file (under ocdbt.process_*/d/; which
  of them a restore reads depends on how the async writer split the arrays), or the
  largest file of an item without chunks (JSON items). Returns their paths."""
  files = [os.path.join(d, n) for d, _, names in os.walk(directory) for n in names]
  chunks = [f for f in files if os.sep + "ocdbt.process_" in f and f"{os.sep}d{os.sep}" in f]
  cut = chunks or [max(files, key=os.path.getsize)]
  for path in cut:
    with open(path, "r+b") as f:
      f.truncate(int(os.path.getsize(path) * keep))
  return cut


def collect(procs, logs, timeout=480):
  """Waits for subprocesses whose output goes to (stdout, stderr) temporary files;
  returns their (returncode, stdout, stderr) in order, killing any still running and
  closing the files."""
  results = []
  try:
    for p, (out, err) in zip(procs, logs):
      p.wait(timeout=timeout)
      out.seek(0)
      err.seek(0)
      results.append((p.returncode, out.read(), err.read()))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
    for out, err in logs:
      out.close()
      err.close()
  return results
