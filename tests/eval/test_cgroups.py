"""Tests of eval/_cgroups.py: finding a hierarchy that can cap memory, and its leaves.

The kernel's own cgroup files are tested through the sandbox (tests/eval/test_sandbox.py,
test_a_memory_hog_is_stopped_by_the_cap); here fake trees of plain files stand in for
cgroupfs, so that both versions' rules are checked on any machine.
"""

import os
import subprocess

import pytest

from eval import _cgroups

V2_MOUNTS = [("/sys/fs/cgroup", "cgroup2", "rw")]
V1_MOUNTS = [("/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
             ("/sys/fs/cgroup/unified", "cgroup2", "rw")]


def fake_v2(root, controllers="cpu memory pids", subtree="") -> str:
  directory = root / "user.slice" / "eval"
  directory.mkdir(parents=True)
  (directory / "cgroup.controllers").write_text(controllers + "\n")
  (directory / "cgroup.subtree_control").write_text(subtree + "\n")
  return str(directory)


def test_v2_enables_memory_for_children(tmp_path):
  directory = fake_v2(tmp_path)
  hierarchy, reason = _cgroups._find_v2([(str(tmp_path), "cgroup2", "rw")],
                                        {"": "/user.slice/eval"})
  assert (hierarchy, reason) == (_cgroups.Hierarchy(2, directory), "")
  with open(os.path.join(directory, "cgroup.subtree_control")) as f:
    assert f.read() == "+memory"
  assert hierarchy.name == "cgroup v2"


def test_v2_without_the_memory_controller(tmp_path):
  fake_v2(tmp_path, controllers="cpu pids")
  hierarchy, reason = _cgroups._find_v2([(str(tmp_path), "cgroup2", "rw")],
                                        {"": "/user.slice/eval"})
  assert hierarchy is None
  assert "does not offer the memory controller" in reason


def test_v2_that_refuses_to_enable_memory(tmp_path, monkeypatch):
  fake_v2(tmp_path)
  real_open = open

  def refusing_open(path, mode="r", *args, **kwargs):
    if "w" in mode and str(path).endswith("cgroup.subtree_control"):
      raise OSError(16, "Device or resource busy")  # EBUSY: processes in the cgroup
    return real_open(path, mode, *args, **kwargs)

  monkeypatch.setattr("builtins.open", refusing_open)
  hierarchy, reason = _cgroups._find_v2([(str(tmp_path), "cgroup2", "rw")],
                                        {"": "/user.slice/eval"})
  assert hierarchy is None and "cannot enable the memory controller" in reason


def test_no_hierarchy_says_why():
  assert _cgroups._find_v2([], {})[1] == "no cgroup v2 hierarchy is mounted"
  assert _cgroups._find_v1(V2_MOUNTS, {"": "/"})[1] == "no cgroup v1 memory hierarchy is mounted"


def test_v1_memory_hierarchy(tmp_path):
  (tmp_path / "job").mkdir()
  hierarchy, reason = _cgroups._find_v1([(str(tmp_path), "cgroup", "rw,memory")],
                                        {"memory": "/job", "": "/"})
  assert (hierarchy, reason) == (_cgroups.Hierarchy(1, str(tmp_path / "job")), "")


@pytest.mark.parametrize("version, limit_file, events_file, events", [
    (2, "memory.max", "memory.events", "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\n"),
    (1, "memory.limit_in_bytes", "memory.oom_control",
     "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
])
def test_leaf_limit_counter_and_removal(tmp_path, monkeypatch, version, limit_file,
                                       events_file, events):
  real_mkdir = os.mkdir

  def mkdir_with_procs(path, *args):  # cgroupfs makes cgroup.procs with the directory
    real_mkdir(path, *args)
    with open(os.path.join(path, "cgroup.procs"), "w"):
      pass

  monkeypatch.setattr(_cgroups.os, "mkdir", mkdir_with_procs)
  leaf = _cgroups.Leaf(_cgroups.Hierarchy(version, str(tmp_path)), limit_mb=256)
  with open(os.path.join(leaf.path, limit_file)) as f:
    assert f.read() == str(256 << 20)
  with open(os.path.join(leaf.path, events_file), "w") as f:
    f.write(events)
  assert leaf.oom_kills() == 2
  assert leaf.pids() == []
  assert os.path.basename(leaf.path).startswith(f"phi_sandbox.{os.getpid()}.")
  real_rmdir = os.rmdir

  def rmdir_with_files(path):  # cgroupfs removes the files with the directory
    for name in os.listdir(path):
      os.remove(os.path.join(path, name))
    real_rmdir(path)

  monkeypatch.setattr(_cgroups.os, "rmdir", rmdir_with_files)
  leaf.close()
  assert not os.path.exists(leaf.path)


def test_find_on_this_machine_answers():
  hierarchy, reason = _cgroups.find()
  assert (hierarchy is None) == bool(reason)


def test_stale_leaves_of_dead_evaluators_are_removed(tmp_path):
  dead = subprocess.Popen(["true"])
  dead.wait()
  for name in (f"phi_sandbox.{dead.pid}.0", f"phi_sandbox.{os.getpid()}.0", "other.1.0"):
    (tmp_path / name).mkdir()
  _cgroups.remove_stale_leaves(_cgroups.Hierarchy(2, str(tmp_path)))
  assert sorted(os.listdir(tmp_path)) == sorted([f"phi_sandbox.{os.getpid()}.0", "other.1.0"])
