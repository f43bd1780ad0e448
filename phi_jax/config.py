"""The model's configuration: one frozen dataclass for every phi size.

`PhiConfig` is what the model, the converters and the checkpoints speak. The run
configs (`configs/*.py`, ml_collections) hold the same fields under `config.model`;
`PhiConfig.from_mapping` turns that section into a validated, hashable `PhiConfig`
and names the offending field when something is wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from phi_jax.cli import UsageError
from phi_jax.settings import OPERATIONAL, setting

ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "pallas", "cudnn")
ACTIVATIONS = ("gelu_tanh", "gelu")
REMAT_POLICIES = ("none", "full", "dots", "dots_with_no_batch_dims", "auto")
DTYPES = ("float32", "bfloat16", "float16")
ROPE_SCALING_TYPES = ("none", "linear")
ARCHITECTURES = ("phi", "codegen")
# CodeGen's fused qkv_proj interleaves q, v and k in 4 blocks of heads (its mp_num).
CODEGEN_QKV_BLOCKS = 4


class ConfigError(UsageError):
  """A configuration value is missing, unknown or inconsistent (exit code 2 in a CLI)."""


def known_fields(cls, values: Mapping[str, Any], where: str) -> dict[str, Any]:
  """`values` (a dict or ConfigDict) as a dict, after checking every key is a field of
  the dataclass `cls`; an unknown key raises ConfigError naming it and `where`."""
  if hasattr(values, "to_dict"):
    values = values.to_dict()
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - known)
  if unknown:
    raise ConfigError(f"{where}: unknown field(s) {unknown}; known fields are {sorted(known)}")
  return dict(values)


@dataclasses.dataclass(frozen=True)
class PhiConfig:
  """Architecture and numerics of a phi model (defaults: phi-1, 1.3B, as trained).

  The same decoder also holds CodeGen (`architecture='codegen'`: transformers'
  `CodeGenForCausalLM`, the model phi-1's quality filter embeds with): phi's parallel
  block without attention biases and with GPT-J's interleaved rotary pairs, which the
  import reorders into the rotate-half layout (phi_jax/hf_convert.py).

  These defaults are the one definition: the run configs' `config.model` section
  (configs/base.py) is built from them. The fields of how the model runs (attention
  implementation and tiles, scan, remat) are operational (phi_jax/settings.py): a
  change resumes a run instead of retraining it.

  Attributes:
    vocab_size: rows of the token embedding and columns of the lm_head (51200 for
      the CodeGen tokenizer padded to a multiple of 64).
    d_model: width of the residual stream.
    num_layers: number of parallel attention+MLP blocks.
    num_heads: attention heads; head_dim = d_model // num_heads.
    mlp_dim: hidden width of the MLP (fc1 output).
    rotary_dim: leading dims of each head that get the rotary embedding (NeoX
      rotate-half); the remaining head_dim - rotary_dim dims pass unchanged.
    rope_base: rotary frequency base (theta). A larger base (Code Llama: 1e6) slows
      the rotation of every frequency, for a longer context (docs/long_context.md).
    rope_scaling_type: 'none', or 'linear' (position interpolation, Chen et al. 2023:
      positions are divided by rope_scaling_factor, so a context rope_scaling_factor
      times longer maps onto the angles the model was trained on); transformers'
      `rope_parameters` {"rope_type": "linear", "factor": ...}.
    rope_scaling_factor: the divisor of the positions under 'linear' (> 0; usually the
      new context length over the trained one); must be 1.0 under 'none'.
    max_seq_len: the context length the model is trained for (2048).
    layer_norm_eps: epsilon of every LayerNorm.
    activation: 'gelu_tanh' (phi: gelu_new, the tanh approximation) or 'gelu' (erf).
    embed_dropout: dropout on the token embeddings (training only; the paper: none).
    attention_dropout: dropout on the attention probabilities (training only; the
      paper: 0.1). Inference never drops: dropout needs a `dropout_rng`.
    residual_dropout: dropout on the attention and MLP branch outputs (training only;
      the paper: 0.1).
    attention: attention implementation (phi_jax.attention, docs/attention.md): 'xla'
      (plain jnp, every backend), 'pallas' (phi_jax's flash-attention kernel: Triton
      on GPU, Mosaic on TPU, interpret mode on CPU), 'cudnn' (cuDNN flash attention,
      CUDA GPUs only, no attention dropout), or 'auto' (xla on CPU, pallas on GPU/TPU).
    attention_block_q: query rows per tile of the 'pallas' kernels (forward and
      backward); 0 = the per-backend defaults chosen for phi's shapes
      (docs/attention.md; timings in BENCHMARKS.md).
    attention_block_kv: key rows per tile of the 'pallas' kernels; 0 = the defaults.
      Set both block fields or neither; each a power of two >= 16.
    dtype: compute dtype of activations and matmuls ('bfloat16', 'float32', 'float16').
    param_dtype: storage dtype of the parameters (fp32 for training).
    scan_layers: run the layer stack with `jax.lax.scan` (one compiled block, fast
      compiles for deep models) instead of unrolling it in Python.
    remat: rematerialisation policy per block: 'none', 'full' (save only block
      inputs), 'dots' (save matmul outputs), 'dots_with_no_batch_dims', or 'auto'
      (training: the lightest that fits the devices' memory, chosen before training by
      phi_jax.train.fit; anything else runs 'auto' as 'none').
    initializer_range: stddev of the normal init of embeddings and kernels.
    architecture: which transformers model this is, for import and export: 'phi'
      (`PhiForCausalLM`) or 'codegen' (`CodeGenForCausalLM`: fused qkv_proj, GPT-J
      rotary, no attention biases; needs attention_bias False and num_heads divisible
      by 4, its fused layout's blocks). The forward pass is the same; a CodeGen
      model's q/k kernels hold the rotary dims in rotate-half order (the import
      permutes them, the export permutes them back).
    attention_bias: whether the q/k/v and output projections have biases (phi: yes;
      CodeGen: no).
  """

  vocab_size: int = 51200
  d_model: int = 2048
  num_layers: int = 24
  num_heads: int = 32
  mlp_dim: int = 8192
  rotary_dim: int = 32
  rope_base: float = 10000.0
  rope_scaling_type: str = "none"
  rope_scaling_factor: float = 1.0
  max_seq_len: int = 2048
  layer_norm_eps: float = 1e-5
  activation: str = "gelu_tanh"
  embed_dropout: float = 0.0
  attention_dropout: float = 0.1
  residual_dropout: float = 0.1
  attention: str = setting("auto", kind=OPERATIONAL)
  attention_block_q: int = setting(0, kind=OPERATIONAL)
  attention_block_kv: int = setting(0, kind=OPERATIONAL)
  dtype: str = "bfloat16"
  param_dtype: str = "float32"
  scan_layers: bool = setting(True, kind=OPERATIONAL)
  remat: str = setting("none", kind=OPERATIONAL)
  initializer_range: float = 0.02
  architecture: str = "phi"
  attention_bias: bool = True

  def __post_init__(self):
    self.validate()

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def rope_position_scale(self) -> float:
    """What the rotary embedding multiplies positions by (1 / factor under 'linear')."""
    return 1.0 / self.rope_scaling_factor if self.rope_scaling_type == "linear" else 1.0

  @property
  def compute_dtype(self):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top  (config stays jax-free)
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    return jnp.dtype(self.param_dtype)

  def validate(self, where: str = "config.model") -> None:
    """Raises ConfigError naming the field when the config is inconsistent."""

    def fail(field: str, message: str):
      raise ConfigError(f"{where}: field '{field}' = {getattr(self, field)!r}: {message}")

    for field in ("vocab_size", "d_model", "num_layers", "num_heads", "mlp_dim", "max_seq_len"):
      value = getattr(self, field)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        fail(field, "must be a positive integer")
    if self.d_model % self.num_heads:
      fail("num_heads", f"must divide d_model ({self.d_model})")
    if not isinstance(self.rotary_dim, int) or not 0 <= self.rotary_dim <= self.head_dim:
      fail("rotary_dim", f"must be an integer in [0, head_dim={self.head_dim}]")
    if self.rotary_dim % 2:
      fail("rotary_dim", "must be even (rotate-half pairs dims)")
    if self.rope_scaling_type not in ROPE_SCALING_TYPES:
      fail("rope_scaling_type", f"must be one of {ROPE_SCALING_TYPES}")
    if (not isinstance(self.rope_scaling_factor, (int, float))
        or isinstance(self.rope_scaling_factor, bool) or not self.rope_scaling_factor > 0):
      fail("rope_scaling_factor", "must be a number > 0")
    if self.rope_scaling_type == "none" and self.rope_scaling_factor != 1.0:
      fail("rope_scaling_factor", "must be 1.0 when rope_scaling_type is 'none' (set "
           "rope_scaling_type = 'linear' to scale positions)")
    for field in ("embed_dropout", "attention_dropout", "residual_dropout"):
      if not 0.0 <= float(getattr(self, field)) < 1.0:
        fail(field, "must be in [0, 1)")
    if self.activation not in ACTIVATIONS:
      fail("activation", f"must be one of {ACTIVATIONS}")
    if self.attention not in ATTENTION_IMPLEMENTATIONS:
      fail("attention", f"must be one of {ATTENTION_IMPLEMENTATIONS}")
    if self.attention == "cudnn" and float(self.attention_dropout) > 0.0:
      fail("attention", "'cudnn' has no attention dropout: set attention_dropout = 0 or "
           "use 'pallas'")
    for field in ("attention_block_q", "attention_block_kv"):
      value = getattr(self, field)
      if (not isinstance(value, int) or isinstance(value, bool) or
          (value != 0 and (value < 16 or value & (value - 1)))):
        fail(field, "must be 0 (kernel default) or a power of two >= 16")
    if bool(self.attention_block_q) != bool(self.attention_block_kv):
      fail("attention_block_q", f"set it and attention_block_kv "
           f"({self.attention_block_kv}) both, or neither (0)")
    if self.remat not in REMAT_POLICIES:
      fail("remat", f"must be one of {REMAT_POLICIES}")
    for field in ("dtype", "param_dtype"):
      if getattr(self, field) not in DTYPES:
        fail(field, f"must be one of {DTYPES}")
    if self.architecture not in ARCHITECTURES:
      fail("architecture", f"must be one of {ARCHITECTURES}")
    if not isinstance(self.attention_bias, bool):
      fail("attention_bias", "must be True or False")
    if self.architecture == "codegen":
      if self.attention_bias:
        fail("attention_bias", "must be False for architecture 'codegen' (CodeGen's "
             "attention has no biases)")
      if self.num_heads % CODEGEN_QKV_BLOCKS:
        fail("num_heads", f"must be divisible by {CODEGEN_QKV_BLOCKS} for architecture "
             "'codegen' (its fused qkv_proj splits the heads in 4 blocks)")
    if self.rope_base <= 0 or self.layer_norm_eps <= 0 or self.initializer_range <= 0:
      raise ConfigError(f"{where}: rope_base, layer_norm_eps and initializer_range must be > 0")

  @classmethod
  def from_mapping(cls, values: Mapping[str, Any], where: str = "config.model") -> PhiConfig:
    """Builds a PhiConfig from a dict / ConfigDict, rejecting unknown fields by name."""
    return cls(**known_fields(cls, values, where))

  def replace(self, **changes: Any) -> PhiConfig:
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


# The fields a training run may change on the model it starts from, to train it for a
# longer context (docs/long_context.md); each leaves the parameters' shapes as they are.
CONTEXT_FIELDS = ("max_seq_len", "rope_base", "rope_scaling_type", "rope_scaling_factor")


def with_context(config: PhiConfig, context: Mapping[str, Any],
                 where: str = "context") -> PhiConfig:
  """`config` with the context settings in `context` that are set (0 or '' keeps config's).

  Setting rope_scaling_type 'none' without a factor resets the factor to 1.0. Raises
  ConfigError naming `where` for an unknown key or a value the model cannot take.
  """
  if hasattr(context, "to_dict"):
    context = context.to_dict()
  elif dataclasses.is_dataclass(context):
    context = dataclasses.asdict(context)
  unknown = sorted(set(context) - set(CONTEXT_FIELDS))
  if unknown:
    raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {list(CONTEXT_FIELDS)}")
  changes = {field: value for field, value in context.items() if value not in (0, "", None)}
  if changes.get("rope_scaling_type") == "none":
    changes.setdefault("rope_scaling_factor", 1.0)
  try:
    return config.replace(**changes)
  except (ConfigError, TypeError) as e:
    raise ConfigError(f"{where} = {changes}: {e}") from None
