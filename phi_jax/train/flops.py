"""Model FLOPs per token and model FLOPs utilisation (MFU).

flops_per_token = 6 * N + 12 * L * T * E  (PaLM, appendix B), where
  N: every parameter except the token embedding (an embedding lookup is not a matmul):
     the blocks' kernels, biases and LayerNorms, the final LayerNorm and the lm_head;
  L: layers, T: sequence length, E: d_model (= heads * head_dim).
6N is forward + backward of the weight matmuls (2 + 4 FLOPs per weight per token);
12 L T E is forward + backward of the attention scores and weighted sum (QK^T and AV),
counted over the full T x T square as PaLM does (no discount for the causal mask).
"""

from __future__ import annotations

import jax

from phi_jax.config import PhiConfig
from phi_jax.model import count_params

# Dense bf16 peak per device (FLOP/s); matched against device_kind, first hit wins.
_PEAK_FLOPS = (
    ("h100 pcie", 756e12),
    ("h100", 989e12),
    ("h200", 989e12),
    ("a100", 312e12),
    ("v6 lite", 918e12),
    ("v6e", 918e12),
    ("v5 lite", 197e12),
    ("v5e", 197e12),
    ("v5p", 459e12),
    ("v5", 459e12),
    ("v4", 275e12),
)


def flops_per_token(model_config: PhiConfig, seq_len: int) -> float:
  """Training FLOPs per token: 6 * N + 12 * L * T * E (see the module docstring)."""
  n = count_params(model_config) - model_config.vocab_size * model_config.d_model
  attention = 12 * model_config.num_layers * seq_len * model_config.d_model
  return float(6 * n + attention)


def peak_flops(device: jax.Device) -> float | None:
  """Dense bf16 peak FLOP/s of one device, or None for CPUs and unknown kinds."""
  if device.platform == "cpu":
    return None
  kind = device.device_kind.lower()
  for name, flops in _PEAK_FLOPS:
    if name in kind:
      return flops
  return None


def mfu(tokens_per_s: float, model_config: PhiConfig, seq_len: int, n_devices: int,
        device: jax.Device) -> float | None:
  """Achieved model FLOP/s over the peak of n_devices devices; None if peak unknown."""
  peak = peak_flops(device)
  if peak is None:
    return None
  return tokens_per_s * flops_per_token(model_config, seq_len) / (n_devices * peak)
