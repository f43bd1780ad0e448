"""Compiling for accelerators this machine does not have: XLA's compilers, compile-only.

These run XLA's real CUDA pipeline (its own Triton for the Pallas kernels, buffer
assignment) for a described H100/H200/A100, and libtpu's (Mosaic for the kernels) for a
v5e slice, on the CPU-only CI machine. The plugins live in .venv/cuda-compile-only and
.venv/tpu-compile-only (`make test` installs them).
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import pytest

from configs import phi1 as phi1_config
from configs import tiny as tiny_config
from phi_jax import attention, compile_only, kernels, target
from phi_jax.config import PhiConfig
from phi_jax.model import count_params
from phi_jax.kernels.flash_attention import default_platform
from phi_jax.kernels import triton_aot
from tests.conftest import REPO_ROOT

needs_cuda_plugin = pytest.mark.skipif(
    not compile_only.plugin_available("h100"),
    reason=f"needs the CUDA PJRT plugin in {compile_only.CUDA_PLUGIN_DIR} (make test installs it)")
needs_libtpu = pytest.mark.skipif(
    not compile_only.plugin_available("v5e"),
    reason=f"needs libtpu in {compile_only.TPU_PLUGIN_DIR} (make test installs it)")

ATTENTION_KERNELS = ["phi_flash_attention_dkv", "phi_flash_attention_dq",
                     "phi_flash_attention_fwd"]


def test_compiling_for_sets_the_target_backend():
  assert target.backend() == "cpu"
  assert attention.resolve_implementation("auto") == "xla"
  with target.compiling_for("gpu"):
    assert target.backend() == "gpu"
    assert attention.resolve_implementation("auto") == "pallas"
    assert default_platform() == "gpu"
    with target.compiling_for("tpu"):
      assert default_platform() == "tpu"
    assert target.backend() == "gpu"
  assert target.backend() == "cpu"
  with pytest.raises(ValueError, match="'cuda' is not one of"):
    with target.compiling_for("cuda"):
      pass


@needs_cuda_plugin
@pytest.mark.parametrize("gpu", ["h100", "a100"])
def test_pallas_kernels_compile_with_xlas_triton(gpu):
  """phi-1's shapes with segment ids and dropout: XLA compiles all three kernels."""
  fn, args = triton_aot.flash_attention_gradient(segments=True, dropout=True)
  compiled = compile_only.compile_on(fn, *args, target=gpu)
  assert sorted(compile_only.kernel_names(compiled)) == ATTENTION_KERNELS
  assert compiled.memory_analysis().argument_size_in_bytes == 3 * 8 * 2048 * 32 * 64 * 2 + (
      8 * 2048 * 4)  # q, k, v in bf16 + the int32 segment ids


@needs_cuda_plugin
def test_tiles_that_overflow_shared_memory_are_rejected():
  """The check is real: XLA refuses a kernel that needs more shared memory than an SM."""
  fn, args = triton_aot.flash_attention_gradient(
      head_dim=128, block_sizes=kernels.BlockSizes.uniform(256, 256, num_stages=4))
  with pytest.raises(jax.errors.JaxRuntimeError, match="Shared memory size limit exceeded"):
    compile_only.compile_on(fn, *args)


@needs_cuda_plugin
def test_train_step_compiles_for_a_two_gpu_mesh():
  """configs/tiny.py with attention='auto': on a GPU target that is the Pallas kernel,
  run per shard over fsdp=2; the state XLA holds is AdamW's fp32 params + 2 moments."""
  config = tiny_config.get_config()
  config.model.attention = "auto"
  config.mesh.fsdp = 2
  compiled, report = compile_only.compile_train_step(config, num_devices=2)
  assert sorted(set(compile_only.kernel_names(compiled))) == ATTENTION_KERNELS
  params = count_params(PhiConfig.from_mapping(config.model))
  state_bytes = 3 * 4 * params  # params, mu, nu in fp32
  # Sharded over 2 devices, except the small replicated leaves (norms, biases).
  assert state_bytes / 2 <= report.arguments <= 0.75 * state_bytes, report
  assert report.aliased >= state_bytes / 2  # the donated state is updated in place
  assert report.fits and report.peak < report.device_memory / 100


@needs_cuda_plugin
def test_phi1_step_memory_matches_the_parameter_count():
  """phi-1 (1.3B) on one H100, 8 sequences of 2048 per step, full remat: the inputs are
  AdamW's state, 12 bytes per parameter (the paper's 1.3B), and the step fits."""
  config = phi1_config.get_config()
  config.train.batch_size, config.train.microbatches = 8, 1
  config.model.remat = "full"
  _, report = compile_only.compile_train_step(config, target="h100")
  params = count_params(PhiConfig.from_mapping(config.model))
  assert 1.3e9 < params < 1.45e9
  batch_bytes = 2 * 8 * 2048 * 4  # tokens + loss_mask, int32
  assert abs(report.arguments - (12 * params + batch_bytes)) < 1e6, report
  assert report.fits, report.describe()


def test_memory_report_arithmetic(monkeypatch):
  report = compile_only.MemoryReport(target="h100", device_memory=100, arguments=40,
                                     outputs=40, aliased=40, temporaries=35,
                                     usable_fraction=0.75)
  assert report.peak == 75 and report.fits
  over = compile_only.MemoryReport(target="h100", device_memory=100, arguments=40,
                                   outputs=40, aliased=39, temporaries=35,
                                   usable_fraction=0.75)
  assert over.peak == 76 and not over.fits
  assert "DOES NOT FIT" in over.describe()
  # jax's GPU allocator takes XLA_PYTHON_CLIENT_MEM_FRACTION of the memory (0.75 unset).
  monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
  assert compile_only.usable_fraction("h100") == 0.75
  monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
  assert compile_only.usable_fraction("h100") == 0.9
  assert compile_only.usable_fraction("v5e") == 0.95


def test_unknown_targets_and_bad_slices_are_named():
  with pytest.raises(ValueError, match="unknown target 'v100'"):
    compile_only.devices("v100")
  with pytest.raises(ValueError, match="at least one device"):
    compile_only.devices("h100", 0)
  with pytest.raises(ValueError, match="power-of-two number of chips >= 4"):
    compile_only.devices("v5e", 6)


def test_tpu_topology_names():
  assert compile_only.tpu_topology_name("v5e", 4) == "v5e:2x2"
  assert compile_only.tpu_topology_name("v5e", 8) == "v5e:2x4"
  assert compile_only.tpu_topology_name("v6e", 256) == "v6e:16x16"
  assert compile_only.tpu_topology_name("v5p", 16) == "v5p:2x2x4"


@needs_libtpu
def test_pallas_kernels_compile_with_mosaic_for_a_v5e():
  """The TPU variant ([B, H, T, D] tiles) at phi-1's shapes through libtpu's compiler."""
  fn, args = triton_aot.flash_attention_gradient(segments=True, dropout=True,
                                                 platform="tpu")
  compiled = compile_only.compile_on(fn, *args, target="v5e")
  assert sorted(compile_only.kernel_names(compiled)) == ATTENTION_KERNELS


@needs_libtpu
def test_train_step_compiles_for_a_v5e_slice():
  """configs/tiny.py with attention='auto' on 4 v5e chips (fsdp=4): the Mosaic kernel,
  per shard; AdamW's state split four ways."""
  config = tiny_config.get_config()
  config.model.attention = "auto"
  config.mesh.fsdp = 4
  compiled, report = compile_only.compile_train_step(config, target="v5e", num_devices=4)
  assert sorted(set(compile_only.kernel_names(compiled))) == ATTENTION_KERNELS
  state_bytes = 3 * 4 * count_params(PhiConfig.from_mapping(config.model))
  assert state_bytes / 4 <= report.arguments <= 0.5 * state_bytes, report
  assert report.fits


@needs_cuda_plugin
def test_command_line_reports_memory_and_kernels():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_PYTHON_CLIENT_MEM_FRACTION", None)
  result = subprocess.run(
      [sys.executable, "-m", "phi_jax.compile_only", "--config=configs/tiny.py",
       "--config.model.attention=auto", "--target=h200"],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "1 x NVIDIA H200 141GB HBM3e" in result.stdout
  assert "fits" in result.stdout and "(75% of 141.00 GiB)" in result.stdout
  assert "Pallas kernels compiled by XLA: 3" in result.stdout


@needs_cuda_plugin
def test_fit_for_a_target_checks_the_tiny_step_and_the_table_names_recomputation():
  """One compile: the tiny config's step (remat 'none', 1 micro-batch) on one H100 is
  checked against the H100's budget; the table's FLOPs come from the traced step."""
  config = tiny_config.get_config()
  fit = compile_only.fit_for(config, target="h100")
  usable = compile_only.usable_fraction("h100") * compile_only.TARGETS["h100"].memory_bytes
  assert (fit.remat, fit.microbatches, fit.chosen) == ("none", 1, False)
  assert fit.budget == int(int(usable) * (1 - config.train.memory_headroom))
  assert 0 < fit.peak < fit.budget
  assert "1 x NVIDIA H100" in fit.describe()


def test_the_table_reads_a_compilers_out_of_memory_refusal_as_a_peak_that_does_not_fit(
    monkeypatch):
  """XLA:TPU refuses a program over HBM while compiling: the table's cell then shows the
  bytes the refusal names and does not fit, instead of the table stopping."""
  def refuse(self):
    raise jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
        "temporaries (134.00G) exceeds available HBM (95.74G).")
  monkeypatch.setattr(jax.stages.Lowered, "compile", refuse)
  [row] = compile_only.memory_table(tiny_config.get_config(), target="h100",
                                    remats=["none"], microbatches=[1])
  assert row.report.peak == int(134.0 * 2**30) + 1 and not row.report.fits


def test_matmul_flops_counts_scans_and_recomputation():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def layers(x, w, policy):
    def body(c, _):
      return jnp.tanh(c @ w), None
    if policy:
      body = jax.checkpoint(body)
    return jax.lax.scan(body, x, None, length=5)[0].sum()

  x = jnp.ones((8, 16))
  w = jnp.ones((16, 16))
  one = 2 * 8 * 16 * 16
  forward = compile_only.matmul_flops(jax.make_jaxpr(lambda x: layers(x, w, False))(x))
  assert forward == 5 * one
  plain = compile_only.matmul_flops(jax.make_jaxpr(jax.grad(lambda x: layers(x, w, False)))(x))
  remat = compile_only.matmul_flops(jax.make_jaxpr(jax.grad(lambda x: layers(x, w, True)))(x))
  assert plain == 5 * one * 2  # forward + the input gradient's matmul
  assert remat == plain + 5 * one  # the forward's matmul once more per layer


@pytest.mark.slow
@needs_cuda_plugin
@pytest.mark.parametrize("target,devices", [("h100", 8), ("h100", 1), ("a100_40gb", 8),
                                            ("a100", 8), ("v5p", 4)])
def test_phi1_fits_each_target_by_construction(target, devices):
  """configs/phi1.py as it is (remat 'auto', microbatches 0) chooses, on each target, a
  remat and micro-batch count whose step fits, the first fitting one in the order."""
  if target in compile_only.TPU_TARGETS and not compile_only.plugin_available(target):
    pytest.skip("libtpu not installed")
  config = phi1_config.get_config()
  fit = compile_only.fit_for(config, target=target, num_devices=devices)
  assert fit.chosen and fit.peak <= fit.budget, fit.describe()
  config.model.remat, config.train.microbatches = fit.remat, fit.microbatches
  _, report = compile_only.compile_train_step(config, target=target, num_devices=devices)
  assert report.fits and report.peak == fit.peak, report.describe()
