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


def truncate_largest_file(directory, keep: float = 0.5) -> str:
  """Cuts the largest data file of an Orbax item (the array chunks under
  ocdbt.process_*/d/; any file for JSON items) to `keep` of its size, as a full disk or
  an interrupted copy leaves it; returns its path."""
  files = [os.path.join(d, n) for d, _, names in os.walk(directory) for n in names]
  chunks = [f for f in files if os.sep + "ocdbt.process_" in f and f"{os.sep}d{os.sep}" in f]
  largest = max(chunks or files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(int(os.path.getsize(largest) * keep))
  return largest
