"""Compile phi_jax programs for accelerators this machine does not have.

XLA can compile for a described device without one attached. For GPUs the CUDA PJRT
plugin (`jax-cuda12-pjrt`) builds compile-only devices from a target description
(compute capability, SMs, shared memory, device memory); for TPUs libtpu builds them from
a slice topology ("v5e:2x2"). `jax.jit(...).lower(...).compile()` on arrays sharded over
them runs XLA's whole pipeline for that device, including XLA's own Triton (GPU) or
Mosaic (TPU) compiler for the Pallas kernels and buffer assignment, and stops before
there is anything to run. From a laptop or CI this answers: does the train step
compile for an H100 or a v5e slice, do the Pallas kernels fit the chip (XLA rejects a
kernel that does not), and how much device memory a step needs at a given batch, mesh
and remat setting.

    python -m phi_jax.compile_only --config=configs/phi1.py --target=h100 --devices=8
    python -m phi_jax.compile_only --config=configs/phi1.py --target=v5p --devices=16

Neither plugin is a runtime dependency: `make test` installs them, with no dependencies,
into .venv/cuda-compile-only and .venv/tpu-compile-only (`CUDA_PLUGIN_DIR`,
`TPU_PLUGIN_DIR`; override with PHI_JAX_CUDA_PLUGIN_DIR / PHI_JAX_TPU_PLUGIN_DIR), off the
venv's path, and this module registers them on first use. Tracing happens under
`phi_jax.target.compiling_for('gpu' or 'tpu')`, so `attention='auto'` resolves to the
Pallas kernel and the kernel to its Triton or Mosaic variant, as on the real device.
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

from phi_jax.kernels.triton_aot import SM_LIMITS

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_PLUGIN_DIR = os.environ.get("PHI_JAX_CUDA_PLUGIN_DIR",
                                 os.path.join(REPO_ROOT, ".venv", "cuda-compile-only"))
TPU_PLUGIN_DIR = os.environ.get("PHI_JAX_TPU_PLUGIN_DIR",
                                os.path.join(REPO_ROOT, ".venv", "tpu-compile-only"))
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


def _gpu(name: str, capability: tuple[int, int], **figures) -> GpuTarget:
  """A GpuTarget whose shared-memory limits come from the one table of them."""
  limits = SM_LIMITS[capability[0] * 10 + capability[1]]
  return GpuTarget(name, capability, shared_memory_per_sm=limits["shared_per_sm"],
                   shared_memory_per_block_optin=limits["shared_per_program"], **figures)


# NVIDIA's published figures for the SXM parts.
GPU_TARGETS = {
    "h100": _gpu("NVIDIA H100 80GB HBM3", (9, 0), sm_count=132, memory_bytes=84942979072,
                 memory_bandwidth=3352320000000, l2_cache_bytes=52428800, clock_ghz=1.98),
    "h200": _gpu("NVIDIA H200 141GB HBM3e", (9, 0), sm_count=132, memory_bytes=151397597184,
                 memory_bandwidth=4800000000000, l2_cache_bytes=52428800, clock_ghz=1.98),
    "a100": _gpu("NVIDIA A100-SXM4-80GB", (8, 0), sm_count=108, memory_bytes=85031714816,
                 memory_bandwidth=2039000000000, l2_cache_bytes=41943040, clock_ghz=1.41),
    "a100_40gb": _gpu("NVIDIA A100-SXM4-40GB", (8, 0), sm_count=108,
                      memory_bytes=42505273344, memory_bandwidth=1555000000000,
                      l2_cache_bytes=41943040, clock_ghz=1.41),
}


@dataclasses.dataclass(frozen=True)
class TpuTarget:
  """A TPU generation: libtpu's topology prefix, HBM per chip, torus dimensions."""

  name: str
  generation: str  # "v5e" -> topologies "v5e:2x2", ...
  memory_bytes: int
  torus_dims: int  # 2 (v5e, v6e: "AxB") or 3 (v4, v5p: "AxBxC")


# HBM per chip from Google's Cloud TPU system architecture pages.
TPU_TARGETS = {
    "v4": TpuTarget("TPU v4", "v4", memory_bytes=32 * 2**30, torus_dims=3),
    "v5e": TpuTarget("TPU v5e", "v5e", memory_bytes=16 * 2**30, torus_dims=2),
    "v5p": TpuTarget("TPU v5p", "v5p", memory_bytes=95 * 2**30, torus_dims=3),
    "v6e": TpuTarget("TPU v6e", "v6e", memory_bytes=32 * 2**30, torus_dims=2),
}
TARGETS = {**GPU_TARGETS, **TPU_TARGETS}


def tpu_topology_name(target: str, count: int) -> str:
  """libtpu's name for a slice of `count` chips (a power of two >= 4: one host holds 4),
  e.g. ('v5e', 8) -> 'v5e:2x4', ('v5p', 16) -> 'v5p:2x2x4'."""
  if count < 4 or count & (count - 1):
    raise ValueError(f"compile_only: a TPU slice needs a power-of-two number of chips >= 4 "
                     f"(one host has 4), got {count}")
  spec = TPU_TARGETS[target]
  if spec.torus_dims == 3:
    return f"{spec.generation}:2x2x{count // 4}"
  side = 2 ** ((count.bit_length() - 1) // 2)
  return f"{spec.generation}:{side}x{count // side}"


def plugin_available(target: str = "h100") -> bool:
  """Whether the compiler plugin for `target` (a GPU or TPU name) is installed."""
  if target in TPU_TARGETS:
    return os.path.isfile(_libtpu_path())
  if _PLUGIN_MODULE in sys.modules:
    return True
  return (os.path.isdir(os.path.join(CUDA_PLUGIN_DIR, "jax_plugins", "xla_cuda12"))
          or importlib.util.find_spec("jax_plugins") is not None
          and importlib.util.find_spec(_PLUGIN_MODULE) is not None)


def _libtpu_path() -> str:
  return os.path.join(TPU_PLUGIN_DIR, "libtpu", "libtpu.so")


def register_cuda_plugin() -> None:
  """Registers the CUDA PJRT plugin with jax (once) without starting a CUDA backend.

  Safe after jax's CPU backend is up: jax.devices() stays what it was. Raises
  ImportError naming the install command when the plugin is missing.
  """
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

  if "cuda" in xla_bridge._backend_factories:  # pylint: disable=protected-access
    return
  directory = CUDA_PLUGIN_DIR
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


def devices(target: str = "h100", count: int = 1) -> list[jax.Device]:
  """`count` compile-only devices of `target` (a GPU_TARGETS or TPU_TARGETS name).

  GPUs: one host with `count` GPUs. TPUs: a slice of `count` chips (a power of two >= 4),
  over as many hosts as it takes. jax's own devices (jax.devices()) are unchanged.
  """
  if target not in TARGETS:
    raise ValueError(f"compile_only: unknown target {target!r}; known: {sorted(TARGETS)}")
  if count < 1:
    raise ValueError(f"compile_only: need at least one device, got {count}")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  if target in TPU_TARGETS:
    name = tpu_topology_name(target, count)
    if not plugin_available(target):
      raise ImportError(f"compiling for a TPU without one needs libtpu: `make test` installs "
                        f"it into {TPU_PLUGIN_DIR}, or `pip install --no-deps --target "
                        f"{TPU_PLUGIN_DIR} -r requirements-tpu-compile-only.txt`")
    # jax loads libtpu from here when no TPU backend is up; no TPU is touched.
    os.environ.setdefault("TPU_LIBRARY_PATH", _libtpu_path())
    return list(topologies.get_topology_desc(name, "tpu").devices)
  register_cuda_plugin()
  topology = topologies.get_topology_desc(
      "", "cuda", topology=f"1x1x{count}", target_config=GPU_TARGETS[target].target_config())
  return list(topology.devices)


def backend_of(target: str) -> str:
  """'gpu' or 'tpu': the backend a target's programs are traced for."""
  return "tpu" if target in TPU_TARGETS else "gpu"


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
  usable_fraction: float  # of device_memory that jax will give the program

  @property
  def peak(self) -> int:
    return self.arguments + self.outputs - self.aliased + self.temporaries

  @property
  def usable(self) -> int:
    return int(self.usable_fraction * self.device_memory)

  @property
  def fits(self) -> bool:
    """Whether the peak fits in the memory jax's allocator will hand out."""
    return self.peak <= self.usable

  def describe(self) -> str:
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    return (f"per {self.target} device: state+batch {gib(self.arguments)}, temporaries "
            f"{gib(self.temporaries)}, outputs {gib(self.outputs)} ({gib(self.aliased)} "
            f"donated), peak {gib(self.peak)} of {gib(self.usable)} usable "
            f"({self.usable_fraction:.0%} of {gib(self.device_memory)}): "
            + ("fits" if self.fits else "DOES NOT FIT"))


def usable_fraction(target: str) -> float:
  """The share of a device's memory jax will give a program. GPU: jax preallocates
  XLA_PYTHON_CLIENT_MEM_FRACTION of it (0.75 unless set). TPU: all but what the
  runtime keeps (taken as 5%)."""
  if target in TPU_TARGETS:
    return 0.95
  return float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75"))


def memory_report(compiled: jax.stages.Compiled | int, target: str) -> MemoryReport:
  """The memory of a compiled program, or of one the compiler refused, given as the
  bytes it needs (`fit.compile_or_required`): all of them counted as temporaries."""
  if isinstance(compiled, int):
    return MemoryReport(target=target, device_memory=TARGETS[target].memory_bytes,
                        usable_fraction=usable_fraction(target), arguments=0, outputs=0,
                        aliased=0, temporaries=compiled)
  stats = compiled.memory_analysis()
  return MemoryReport(target=target, device_memory=TARGETS[target].memory_bytes,
                      usable_fraction=usable_fraction(target),
                      arguments=stats.argument_size_in_bytes,
                      outputs=stats.output_size_in_bytes, aliased=stats.alias_size_in_bytes,
                      temporaries=stats.temp_size_in_bytes)


def _target_mesh(config: Any, target: str, num_devices: int):
  from phi_jax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  mesh = mesh_lib.make_mesh(config.mesh, devices=devices(target, num_devices))
  return mesh, mesh_lib.parse_rules(config.mesh.rules)


def compile_train_step(config: Any, section: str = "train", target: str = "h100",
                       num_devices: int = 1) -> tuple[jax.stages.Compiled, MemoryReport]:
  """Compiles one train step of `config` (config.model, config.<section>, config.mesh)
  for `num_devices` devices of `target`, without them. Returns the compiled step and
  its per-device memory. remat 'auto' / microbatches 0 must be resolved first
  (`fit_for`)."""
  from phi_jax import target as target_lib  # pylint: disable=g-import-not-at-top
  from phi_jax.config import PhiConfig  # pylint: disable=g-import-not-at-top
  from phi_jax.train import fit as fit_lib  # pylint: disable=g-import-not-at-top

  train_cfg = config[section]
  mesh, rules = _target_mesh(config, target, num_devices)
  with target_lib.compiling_for(backend_of(target), TARGETS[target].name):
    compiled = fit_lib.compile_step(PhiConfig.from_mapping(config.model), train_cfg, mesh,
                                    rules, int(train_cfg.microbatches))
  return compiled, memory_report(compiled, target)


def _budget_config(train_cfg: Any, target: str) -> Any:
  """`train_cfg` with device_memory_gib set to what jax will give a program on one
  `target` device (when the config leaves it at 0: the device's own limit)."""
  train_cfg = train_cfg.copy_and_resolve_references()
  if not float(train_cfg.device_memory_gib):
    usable = usable_fraction(target) * TARGETS[target].memory_bytes
    train_cfg.device_memory_gib = usable / 2**30
  return train_cfg


def fit_for(config: Any, section: str = "train", target: str = "h100",
            num_devices: int = 1):
  """The remat policy and micro-batch count `run.py` would train `config` with on
  `num_devices` of `target` (phi_jax.train.fit: 'auto' chosen, given values checked),
  compiled for them here. Returns a fit.Fit."""
  from phi_jax import target as target_lib  # pylint: disable=g-import-not-at-top
  from phi_jax.config import PhiConfig  # pylint: disable=g-import-not-at-top
  from phi_jax.train import fit as fit_lib  # pylint: disable=g-import-not-at-top

  mesh, rules = _target_mesh(config, target, num_devices)
  with target_lib.compiling_for(backend_of(target), TARGETS[target].name):
    return fit_lib.resolve(PhiConfig.from_mapping(config.model),
                           _budget_config(config[section], target), mesh, rules,
                           where=section)


@dataclasses.dataclass(frozen=True)
class TableRow:
  """One (remat, microbatches) cell of `memory_table`."""
  remat: str
  microbatches: int
  rows_per_device: int
  report: MemoryReport
  flops: float  # matmul FLOPs of the whole step (matmul_flops), over all devices
  recomputed: float | None  # of which remat's recomputation (vs 'none' at this count)


def matmul_flops(jaxpr: Any) -> float:
  """FLOPs of the matmuls (dot_general) in a jaxpr, each scan body counted `length`
  times and remat's recomputation (in the backward's checkpoint bodies) included; a
  while loop's body is counted once and Pallas kernels (attention) not at all.

  This stands in for XLA's cost analysis, which compile-only GPU devices do not give
  (`Compiled.cost_analysis()` is None there) and which counts every loop body once."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0.0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, _), _ = eqn.params["dimension_numbers"]
      lhs_shape = eqn.invars[0].aval.shape
      contracted = 1
      for d in lhs_contract:
        contracted *= lhs_shape[d]
      out = 1
      for d in eqn.outvars[0].aval.shape:
        out *= d
      total += 2.0 * out * contracted
      continue
    times = eqn.params.get("length", 1) if eqn.primitive.name == "scan" else 1
    inner = []
    for value in eqn.params.values():
      for item in (value if isinstance(value, (tuple, list)) else (value,)):
        if hasattr(item, "eqns") or hasattr(getattr(item, "jaxpr", None), "eqns"):
          inner.append(matmul_flops(item))
    if eqn.primitive.name == "cond":
      total += max(inner, default=0.0)
    else:
      total += times * sum(inner)
  return total


def memory_table(config: Any, section: str = "train", target: str = "h100",
                 num_devices: int = 1, remats: Sequence[str] | None = None,
                 microbatches: Sequence[int] | None = None) -> list[TableRow]:
  """The step compiled for each remat policy x micro-batch count: peak memory per
  device, whether it fits (`memory_report`), and the FLOPs remat recomputes per step
  (`matmul_flops` of the policy's step minus 'none''s at the same count, when 'none'
  is among `remats`). Default counts: those that split the batch over the
  batch-parallel devices with 1, 2, 4, ... up to 32 rows each."""
  from phi_jax import target as target_lib  # pylint: disable=g-import-not-at-top
  from phi_jax.config import PhiConfig  # pylint: disable=g-import-not-at-top
  from phi_jax.train import fit as fit_lib  # pylint: disable=g-import-not-at-top
  from phi_jax.train import mesh as mesh_lib  # pylint: disable=g-import-not-at-top

  train_cfg = config[section]
  model_config = PhiConfig.from_mapping(config.model)
  mesh, rules = _target_mesh(config, target, num_devices)
  batch = int(train_cfg.batch_size)
  parallel = mesh_lib.batch_parallelism(mesh, tuple(rules))
  if microbatches is None:
    microbatches = [k for k in fit_lib.microbatch_counts(batch, parallel)
                    if batch // (k * parallel) in (1, 2, 4, 8, 16, 32)]
  remats = list(remats or fit_lib.REMAT_ORDER)
  rows, flops_of = [], {}
  for k in microbatches:
    for remat in remats:
      with target_lib.compiling_for(backend_of(target), TARGETS[target].name):
        traced = fit_lib.trace_step(model_config.replace(remat=remat), train_cfg, mesh,
                                    rules, k)
        compiled = fit_lib.compile_or_required(traced.lower().compile)
      flops_of[remat, k] = matmul_flops(traced.jaxpr)
      base = flops_of.get(("none", k))
      recomputed = None if base is None else flops_of[remat, k] - base
      rows.append(TableRow(remat, k, batch // (k * parallel),
                           memory_report(compiled, target), flops_of[remat, k], recomputed))
  return rows


def format_table(rows: Sequence[TableRow]) -> str:
  """`memory_table`'s rows as a Markdown table (recomputation: TFLOPs per step over all
  devices, and its share of the step's matmul FLOPs)."""
  lines = ["| remat | microbatches | rows/device | peak GiB | usable GiB | fits | "
           "recomputed TFLOPs/step |", "|---|---|---|---|---|---|---|"]
  for row in rows:
    recomputed = "" if row.recomputed is None else f"{row.recomputed / 1e12:.1f}"
    if row.recomputed is not None and row.flops:
      recomputed += f" ({row.recomputed / (row.flops - row.recomputed):.0%})"
    lines.append(f"| {row.remat} | {row.microbatches} | {row.rows_per_device} | "
                 f"{row.report.peak / 2**30:.2f} | {row.report.usable / 2**30:.2f} | "
                 f"{'yes' if row.report.fits else 'no'} | {recomputed} |")
  return "\n".join(lines)


def compile_on(fn, *args: jax.ShapeDtypeStruct, target: str = "h100") -> jax.stages.Compiled:
  """Compiles `fn(*args)` for one device of `target` (args: shapes and dtypes, placed on
  its first compile-only device), traced as for that backend."""
  from phi_jax import target as target_lib  # pylint: disable=g-import-not-at-top

  device = devices(target, 4 if target in TPU_TARGETS else 1)[0]
  placed = jax.sharding.SingleDeviceSharding(device)
  args = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=placed) for a in args]
  with target_lib.compiling_for(backend_of(target), TARGETS[target].name):
    return jax.jit(fn).lower(*args).compile()


_KERNEL_CALL_TARGETS = ('custom_call_target="__gpu$xla.gpu.triton"',  # Triton (GPU)
                        'custom_call_target="tpu_custom_call"')  # Mosaic (TPU)


def kernel_names(compiled: jax.stages.Compiled) -> list[str]:
  """Names of the Pallas kernels (Triton on GPU, Mosaic on TPU) in a compiled program,
  in program order: the `pallas_call(name=...)` jax records in each call's op_name."""
  names = []
  for line in compiled.as_text().splitlines():
    if not any(call in line for call in _KERNEL_CALL_TARGETS):
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
  config, section = args["config"].value, args.section
  where = (f"{args.devices} x {TARGETS[args.target].name}")
  print(f"compiling config.{section} steps of {args['config'].config_filename} for {where} "
        f"(none needed here)")
  if args.table:
    print(format_table(memory_table(config, section, args.target, args.devices)))
    return
  fit = fit_for(config, section, args.target, args.devices)
  print(fit.describe())
  config = config.copy_and_resolve_references()
  config.model.remat = fit.remat
  config[section].microbatches = fit.microbatches
  compiled, report = compile_train_step(config, section, args.target, args.devices)
  print(report.describe())
  kernels = kernel_names(compiled)
  print(f"Pallas kernels compiled by XLA: {len(kernels)} ({', '.join(sorted(set(kernels)))})")


def _define_flags() -> None:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", os.path.join(REPO_ROOT, "configs", "tiny.py"),
                                  "config file (configs/*.py); --config.X=... overrides")
  flags.DEFINE_enum("target", "h100", sorted(TARGETS), "GPU or TPU to compile for")
  flags.DEFINE_integer("devices", 1, "devices in the mesh (config.mesh shapes them; TPU: "
                       "chips, a power of two >= 4)", lower_bound=1)
  flags.DEFINE_enum("section", "train", ["train", "finetune"], "which training section")
  flags.DEFINE_bool("table", False, "print peak memory, fit and recomputed FLOPs for every "
                    "remat policy x micro-batch count instead of the one run.py would use")


def entry() -> None:
  """The `phi-jax-compile-only` console script (and `python -m phi_jax.compile_only`)."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from phi_jax import cli  # pylint: disable=g-import-not-at-top
  _define_flags()
  cli.help_shows_flags_of(__name__)
  configs_dir = os.path.join(REPO_ROOT, "configs")  # the built-in configs beside phi_jax
  app.run(main, flags_parser=lambda argv: flags_parser(argv, configs_dir))


def flags_parser(argv: Sequence[str], configs_dir: str) -> list[str]:
  """absl's parsing, with `--config=NAME` naming a built-in config (tiny, phi1, ...)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from phi_jax import cli  # pylint: disable=g-import-not-at-top
  try:
    args = cli.builtin_config_args(list(argv[1:]), configs_dir)
  except cli.UsageError as e:
    cli.fail(os.path.basename(argv[0]), e)
  try:
    return flags.FLAGS([argv[0]] + args)
  except flags.Error as e:
    cli.fail(os.path.basename(argv[0]), cli.UsageError(str(e)))
  return []  # not reached


if __name__ == "__main__":
  entry()
