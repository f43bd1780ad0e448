"""phi_jax's Pallas GPU kernels compiled for real by Triton, on a machine without a GPU.

The interpret-mode tests (test_flash_attention.py) check what the kernels compute; these
check that Triton's compiler accepts them at phi-1's shapes and that the default block
sizes fit an H100 (sm_90): no register spills, shared memory within the per-program
limit (and compile for an A100, sm_80). `triton` is pinned in requirements-test.txt.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import pytest

from phi_jax import kernels
from phi_jax.kernels import triton_aot


def _has_triton() -> bool:
  try:
    triton_aot.triton_version()
  except ImportError:
    return False
  return True


pytestmark = pytest.mark.skipif(not _has_triton(), reason="ahead-of-time compilation needs "
                                f"`triton` in {triton_aot.TRITON_DIR} (make test installs it)")

KERNEL_NAMES = ["phi_flash_attention_fwd", "phi_flash_attention_dkv", "phi_flash_attention_dq"]


def attention_grad(seq=2048, head_dim=64, dtype="bfloat16", **kwargs):
  """(fn, args): the gradient of phi_jax's GPU flash attention at phi-1's batch x heads."""
  return triton_aot.flash_attention_gradient(seq=seq, head_dim=head_dim, dtype=dtype,
                                             **kwargs)


def test_extracts_every_kernel_with_its_launch_parameters():
  blocks = kernels.BlockSizes(warps_fwd=2, warps_dkv=16, warps_dq=4, num_stages=3)
  fn, args = attention_grad(seq=256, block_sizes=blocks)
  found = triton_aot.triton_kernels(fn, *args)
  assert [k.name for k in found] == KERNEL_NAMES
  assert [k.num_warps for k in found] == [2, 16, 4]
  assert {k.num_stages for k in found} == {3}
  for kernel in found:
    assert f"tt.func public @{kernel.name}" in kernel.ir
  # The defaults: warps per kernel from the head_dim's entry.
  fn, args = attention_grad(seq=256, head_dim=128)
  defaults = kernels.default_block_sizes("gpu", 128)
  assert [k.num_warps for k in triton_aot.triton_kernels(fn, *args)] == [
      defaults.warps_fwd, defaults.warps_dkv, defaults.warps_dq]


@pytest.mark.parametrize("head_dim,segments,dropout", [
    (64, False, False),  # phi-1 without dropout (finetuning, inference prefill)
    (64, False, True),   # phi-1 pretraining: attention dropout 0.1
    (64, True, True),    # the heaviest variant: packed documents and dropout
    (128, True, True),
], ids=["d64-plain", "d64-dropout", "d64-segments-dropout", "d128-segments-dropout"])
def test_default_blocks_fit_an_h100_without_spills(head_dim, segments, dropout):
  fn, args = attention_grad(head_dim=head_dim, segments=segments, dropout=dropout)
  results = triton_aot.compile_all(fn, *args, capabilities=(90,))
  assert [r.name for r in results] == KERNEL_NAMES
  problems = [p for r in results for p in r.problems()]
  assert not problems, problems
  for r in results:
    assert 0 < r.registers <= 255 and r.shared_bytes > 0 and r.programs_per_sm >= 1


def test_default_blocks_compile_for_an_a100():
  """sm_80 (no wgmma) needs more registers: the defaults, tuned for sm_90, compile and
  fit its shared memory; the dK/dV kernel may spill there (docs/attention.md)."""
  fn, args = attention_grad(segments=True, dropout=True)
  results = triton_aot.compile_all(fn, *args, capabilities=(80,))
  assert [r.name for r in results] == KERNEL_NAMES
  for r in results:
    assert r.shared_bytes <= triton_aot.SM_LIMITS[80]["shared_per_program"], r
    assert r.programs_per_sm >= 1, r


def test_odd_lengths_and_fp32_compile():
  """Length 300 (padded inside to the tiles) and fp32 inputs (full-precision dots)."""
  fn, args = attention_grad(seq=300, dtype="float32", segments=True)
  for r in triton_aot.compile_all(fn, *args):
    limit = triton_aot.SM_LIMITS[90]["shared_per_program"]
    assert r.shared_bytes <= limit, r


def test_spilling_tiles_are_reported():
  """Tiles too large for the register file: compiled, and flagged as spilling."""
  blocks = kernels.BlockSizes(block_q_dkv=64, block_kv_dkv=128, warps_dkv=4)
  fn, args = attention_grad(segments=True, dropout=True, block_sizes=blocks)
  dkv = triton_aot.compile_kernel(triton_aot.triton_kernels(fn, *args)[1])
  assert dkv.name == "phi_flash_attention_dkv"
  assert dkv.spill_store_bytes > 0 and dkv.registers == 255
  assert any("spills registers" in p for p in dkv.problems())


def test_programs_per_sm_follows_the_occupancy_rules():
  # 255 registers x 32 threads rounds up to 8192 per warp: 4 warps use half the file.
  assert triton_aot._programs_per_sm(90, num_warps=4, registers=255, shared=0) == 2
  # 128 registers, 8 warps: 65536 / (4096 * 8) = 2; threads allow 2048 / 256 = 8.
  assert triton_aot._programs_per_sm(90, num_warps=8, registers=128, shared=0) == 2
  # 32 registers, 4 warps: threads bind first (2048 / 128 = 16 on sm_90, 1536/128 on sm_86).
  assert triton_aot._programs_per_sm(90, num_warps=4, registers=32, shared=0) == 16
  assert triton_aot._programs_per_sm(86, num_warps=4, registers=32, shared=0) == 12
  # Shared memory binds: 100 KiB per program, 228 KiB per SM.
  assert triton_aot._programs_per_sm(90, num_warps=4, registers=64,
                                     shared=100 * 1024) == 2


def test_problems_name_the_kernel_and_the_limit():
  too_big = triton_aot.KernelResources(
      name="k", capability=80, num_warps=4, num_stages=2, registers=255,
      spill_store_bytes=8, spill_load_bytes=4, shared_bytes=200 * 1024, programs_per_sm=0)
  problems = too_big.problems()
  assert any("204800 B" in p and "sm_80's 166912 B" in p for p in problems)
  assert any("8 B stored, 4 B loaded" in p for p in problems)
  assert any("not even one program" in p for p in problems)


def test_rejected_ir_and_kernel_free_functions_raise():
  with pytest.raises(ValueError, match="no Triton kernel"):
    triton_aot.compile_all(lambda x: x * 2, jax.ShapeDtypeStruct((4,), jnp.float32))
  broken = triton_aot.TritonKernel(name="broken", ir="module { tt.func @broken( }",
                                   num_warps=4, num_stages=2)
  with pytest.raises(RuntimeError, match="Triton could not compile broken for sm_90"):
    triton_aot.compile_kernel(broken)
  with pytest.raises(ValueError, match="capability 75"):
    triton_aot.compile_kernel(broken, capability=75)


def test_resources_benchmark_records_rows(monkeypatch, tmp_path):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))))
  from bench import record, triton_resources  # pylint: disable=g-import-not-at-top
  path = tmp_path / "BENCHMARKS.md"
  monkeypatch.setattr(record, "BENCHMARKS_FILE", str(path))
  rows = triton_resources.main(["--variants=plain", "--seq=256"])
  assert [r.kernel for r in rows] == ["fwd", "dkv", "dq"] and all(r.default for r in rows)
  text = path.read_text()
  assert triton_resources.SECTION in text
  table = [line for line in text.splitlines() if line.startswith("| 20")]
  assert len(table) == 3 and all("| sm_90 |" in line and "| plain |" in line
                                 for line in table)
