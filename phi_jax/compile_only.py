"""Compile phi_jax programs for GPUs this machine does not have: XLA compile-only devices.

The CUDA PJRT plugin (`jax-cuda12-pjrt`) can describe a GPU it is not attached to, from a
target description (compute capability, SMs, shared memory, device memory), and hand out
compile-only devices for it. `jax.jit(...).lower(...).compile()` on arrays sharded over
them runs XLA's whole GPU pipeline, including XLA's own Triton for the Pallas kernels and
buffer assignment, and stops before there is anything to run. From a laptop or CI this
answers: does the train step compile for an H100, do the Pallas kernels fit its shared
memory (XLA rejects a kernel that does not), and how much device memory a step needs at
a given batch, mesh and remat setting.

    python -m phi_jax.compile_only --config=configs/phi1.py --target=h100 --devices=8

The plugin is not a runtime dependency: `make test` installs it, with no dependencies,
into .venv/cuda-compile-only (`PLUGIN_DIR`; override with PHI_JAX_CUDA_PLUGIN_DIR), and
this module registers it on first use. Tracing happens under
`phi_jax.target.compiling_for('gpu')`, so `attention='auto'` resolves to the Pallas kernel
and the kernel to its Triton variant, as on a real GPU.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN_DIR = os.environ.get("PHI_JAX_CUDA_PLUGIN_DIR",
                            os.path.join(REPO_ROOT, ".venv", "cuda-compile-only"))
_PLUGIN_MODULE = "jax_plugins.xla_cuda12"


@dataclasses.dataclass(frozen=True)
class GpuTarget:
  """What XLA needs to know of a GPU to compile for it (its GpuDeviceInfo fields)."""

  name: str
  compute_capability: tuple[int, int]
  sm_count: int
  memory_bytes: int
  memory_bandwidth: int  # bytes/s
  shared_memory_per_sm: int
  shared_memory_per_block_optin: int
  l2_cache_bytes: int
  clock_ghz: float

  def target_config(self) -> str:
    """The stream_executor.GpuTargetConfigProto text XLA's compile-only topology takes."""
    major, minor = self.compute_capability
    return f"""gpu_device_info {{
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_core: {self.shared_memory_per_sm}
  threads_per_core_limit: 2048
  core_count: {self.sm_count}
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: {self.memory_bandwidth}
  l2_cache_size: {self.l2_cache_bytes}
  clock_rate_ghz: {self.clock_ghz}
  device_memory_size: {self.memory_bytes}
  shared_memory_per_block_optin: {self.shared_memory_per_block_optin}
  cuda_compute_capability {{
    major: {major}
    minor: {minor}
    {"feature_extension: ACCELERATED_FEATURES" if major >= 9 else ""}
  }}
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
  thread_dim_limit_x: 1024
  thread_dim_limit_y: 1024
  thread_dim_limit_z: 64
  device_vendor: "NVIDIA Corporation"
  platform_version: "Compute Capability {major}.{minor}{"a" if major >= 9 else ""}"
  device_address_bits: 64
  name: "{self.name}"
}}
platform_name: "CUDA"
dnn_version_info {{
  major: 9
  minor: 10
  patch: 0
}}
device_description_str: "{self.name}"
"""


# NVIDIA's published figures (SXM parts); shared memory per SM / per block opt-in from
# the CUDA programming guide's compute-capability table.
GPU_TARGETS = {
    "h100": GpuTarget("NVIDIA H100 80GB HBM3", (9, 0), sm_count=132,
                      memory_bytes=84942979072, memory_bandwidth=3352320000000,
                      shared_memory_per_sm=233472, shared_memory_per_block_optin=232448,
                      l2_cache_bytes=52428800, clock_ghz=1.98),
    "h200": GpuTarget("NVIDIA H200 141GB HBM3e", (9, 0), sm_count=132,
                      memory_bytes=151397597184, memory_bandwidth=4800000000000,
                      shared_memory_per_sm=233472, shared_memory_per_block_optin=232448,
                      l2_cache_bytes=52428800, clock_ghz=1.98),
    "a100": GpuTarget("NVIDIA A100-SXM4-80GB", (8, 0), sm_count=108,
                      memory_bytes=85031714816, memory_bandwidth=2039000000000,
                      shared_memory_per_sm=167936, shared_memory_per_block_optin=166912,
                      l2_cache_bytes=41943040, clock_ghz=1.41),
}


def plugin_available(plugin_dir: str | None = None) -> bool:
  """Whether the CUDA PJRT plugin is importable (installed in the venv or in plugin_dir)."""
  if _PLUGIN_MODULE in sys.modules:
    return True
  directory = plugin_dir or PLUGIN_DIR
  return (os.path.isdir(os.path.join(directory, "jax_plugins", "xla_cuda12"))
          or importlib.util.find_spec("jax_plugins") is not None
          and importlib.util.find_spec(_PLUGIN_MODULE) is not None)


def register_cuda_plugin(plugin_dir: str | None = None) -> None:
  """Registers the CUDA PJRT plugin with jax (once) without starting a CUDA backend.

  Safe after jax's CPU backend is up: jax.devices() stays what it was. Raises
  ImportError naming the install command when the plugin is missing.
  """
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

  if "cuda" in xla_bridge._backend_factories:  # pylint: disable=protected-access
    return
  directory = plugin_dir or PLUGIN_DIR
  if os.path.isdir(directory) and directory not in sys.path:
    sys.path.append(directory)
    importlib.invalidate_caches()
  # The plugin checks the local CUDA installation before a CUDA backend may start;
  # there is none here, and none is needed to compile.
  os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")
  # jax registers the plugins it finds on sys.path once per process; when that has not
  # happened yet, let it (it now finds this one), else register the plugin here.
  xla_bridge._discover_and_register_pjrt_plugins()  # pylint: disable=protected-access
  if "cuda" in xla_bridge._backend_factories:  # pylint: disable=protected-access
    return
  try:
    plugin = importlib.import_module(_PLUGIN_MODULE)
  except ImportError as e:
    raise ImportError(
        f"compiling for a GPU without one needs the CUDA PJRT plugin: `make test` installs "
        f"it into {directory}, or run `pip install --no-deps --target {directory} "
        f"jax-cuda12-pjrt=={jax.__version__} jax-cuda12-plugin=={jax.__version__}`") from e
  plugin.initialize()


def gpu_devices(target: str = "h100", count: int = 1,
                plugin_dir: str | None = None) -> list[jax.Device]:
  """`count` compile-only devices of `target` (GPU_TARGETS) in one host."""
  if target not in GPU_TARGETS:
    raise ValueError(f"compile_only: unknown GPU target {target!r}; known: {sorted(GPU_TARGETS)}")
  if count < 1:
    raise ValueError(f"compile_only: need at least one device, got {count}")
  register_cuda_plugin(plugin_dir)
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  topology = topologies.get_topology_desc(
      "", "cuda", topology=f"1x1x{count}", target_config=GPU_TARGETS[target].target_config())
  return list(topology.devices)


@dataclasses.dataclass(frozen=True)
class MemoryReport:
  """Device memory of one compiled program, per device (bytes).

  arguments: inputs (train state and batch); outputs; aliased: outputs written into
  donated inputs; temporaries: activations, gradients and workspace. peak = arguments +
  outputs - aliased + temporaries, XLA's static upper bound for the program's live set.
  """

  target: str
  device_memory: int
  arguments: int
  outputs: int
  aliased: int
  temporaries: int

  @property
  def peak(self) -> int:
    return self.arguments + self.outputs - self.aliased + self.temporaries

  @property
  def fits(self) -> bool:
    """Whether the peak fits in the device memory XLA may use (its default 75% pool
    fraction does not apply to a single program; 95% leaves room for the runtime)."""
    return self.peak <= 0.95 * self.device_memory

  def describe(self) -> str:
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    return (f"per {self.target} device: state+batch {gib(self.arguments)}, temporaries "
            f"{gib(self.temporaries)}, outputs {gib(self.outputs)} ({gib(self.aliased)} "
            f"donated), peak {gib(self.peak)} of {gib(self.device_memory)}: "
            + ("fits" if self.fits else "DOES NOT FIT"))


def memory_report(compiled: jax.stages.Compiled, target: str) -> MemoryReport:
  stats = compiled.memory_analysis()
  return MemoryReport(target=target, device_memory=GPU_TARGETS[target].memory_bytes,
                      arguments=stats.argument_size_in_bytes,
                      outputs=stats.output_size_in_bytes, aliased=stats.alias_size_in_bytes,
                      temporaries=stats.temp_size_in_bytes)


def compile_train_step(config: Any, section: str = "train", target: str = "h100",
                       num_devices: int = 1, plugin_dir: str | None = None
                       ) -> tuple[jax.stages.Compiled, MemoryReport]:
  """Compiles one train step of `config` (config.model, config.<section>, config.mesh)
  for `num_devices` GPUs of `target`, without the GPUs. Returns the compiled step and
  its per-device memory."""
  from phi_jax import target as target_lib  # pylint: disable=g-import-not-at-top
  from phi_jax.config import PhiConfig  # pylint: disable=g-import-not-at-top
  from phi_jax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from phi_jax.train.step import Trainer  # pylint: disable=g-import-not-at-top

  devices = gpu_devices(target, num_devices, plugin_dir)
  train_cfg = config[section]
  model_config = PhiConfig.from_mapping(config.model)
  mesh = mesh_lib.make_mesh(config.mesh, devices=devices)
  trainer = Trainer(model_config, train_cfg, mesh, mesh_lib.parse_rules(config.mesh.rules),
                    total_steps=int(train_cfg.steps))
  shape = (int(train_cfg.batch_size), int(train_cfg.seq_len))
  keys = ["tokens", "loss_mask"]
  if train_cfg.get("segment_ids", False):
    keys += ["segment_ids", "positions"]
  batch = {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=trainer.batch_sharding)
           for k in keys}
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=mesh_lib.replicated(mesh))
  with target_lib.compiling_for("gpu"):
    compiled = trainer.trace_train_step(trainer.abstract_state(), batch, rng).lower().compile()
  return compiled, memory_report(compiled, target)


def compile_on(fn, *args: jax.ShapeDtypeStruct, target: str = "h100",
               plugin_dir: str | None = None) -> jax.stages.Compiled:
  """Compiles `fn(*args)` for one GPU of `target` (args: shapes and dtypes; placed on the
  compile-only device), traced as for a GPU."""
  from phi_jax import target as target_lib  # pylint: disable=g-import-not-at-top

  [device] = gpu_devices(target, 1, plugin_dir)
  placed = jax.sharding.SingleDeviceSharding(device)
  args = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=placed) for a in args]
  with target_lib.compiling_for("gpu"):
    return jax.jit(fn).lower(*args).compile()


def triton_kernel_names(compiled: jax.stages.Compiled) -> list[str]:
  """Names of the Pallas (Triton) kernels in a compiled GPU program, in program order:
  the `pallas_call(name=...)` that jax records in each custom call's op_name."""
  names = []
  for line in compiled.as_text().splitlines():
    if 'custom_call_target="__gpu$xla.gpu.triton"' not in line:
      continue
    op_name = re.search(r'op_name="([^"]*)/pallas_call"', line)
    name = op_name.group(1).rsplit("/", 1)[-1] if op_name else "pallas_call"
    while unwrapped := re.fullmatch(r"\w+\((.+)\)", name):  # jvp(name), transpose(...)
      name = unwrapped.group(1)
    names.append(name)
  return names


def main(argv: Sequence[str]) -> None:
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  args = flags.FLAGS
  print(f"compiling one config.{args.section} step of {args['config'].config_filename} for "
        f"{args.devices} x {GPU_TARGETS[args.target].name} (no GPU needed)")
  compiled, report = compile_train_step(args.config, args.section, args.target, args.devices)
  print(report.describe())
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  if cost and cost.get("flops"):
    print(f"XLA's FLOP count per device and step: {cost['flops'] / 1e12:.2f} TFLOP")
  kernels = triton_kernel_names(compiled)
  print(f"Pallas/Triton kernels compiled by XLA: {len(kernels)} ({', '.join(sorted(set(kernels)))})")


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", os.path.join(REPO_ROOT, "configs", "tiny.py"),
                                  "config file (configs/*.py); --config.X=... overrides")
  flags.DEFINE_enum("target", "h100", sorted(GPU_TARGETS), "GPU to compile for")
  flags.DEFINE_integer("devices", 1, "GPUs in the mesh (config.mesh shapes them)", lower_bound=1)
  flags.DEFINE_enum("section", "train", ["train", "finetune"], "which training section")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
