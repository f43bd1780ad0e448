"""Conversion between `transformers` Phi checkpoints and phi_jax parameters.

phi_jax parameters are a nested dict (the pure-dict form of the model's nnx.Param
state) whose block parameters are stacked over layers:

    embed                         [V, E]        <- model.embed_tokens.weight
    blocks/norm/{scale,bias}      [L, E]        <- model.layers.{i}.input_layernorm
    blocks/attn/q_proj/kernel     [L, E, H, D]  <- model.layers.{i}.self_attn.q_proj.weight [H*D, E]
    blocks/attn/q_proj/bias       [L, H, D]        (k_proj, v_proj alike)
    blocks/attn/out_proj/kernel   [L, H, D, E]  <- model.layers.{i}.self_attn.dense.weight [E, H*D]
    blocks/mlp/fc1/kernel         [L, E, F]     <- model.layers.{i}.mlp.fc1.weight [F, E]
    blocks/mlp/fc2/kernel         [L, F, E]     <- model.layers.{i}.mlp.fc2.weight [E, F]
    final_norm/{scale,bias}       [E]           <- model.final_layernorm
    lm_head/kernel                [E, V]        <- lm_head.weight [V, E]
    lm_head/bias                  [V]           <- lm_head.bias

The legacy microsoft "mixformer" checkpoints that the original phi-1 release used
(`transformer.embd.wte`, fused `mixer.Wqkv`, `lm_head.linear`, or the older sequential
`layers.N.*` names) are renamed to the transformers names first.

CodeGen (`CodeGenForCausalLM`, config.json model_type 'codegen'; PhiConfig.architecture
'codegen') is phi's block without attention biases, under other names, which are
renamed to phi's likewise (`codegen_to_phi_names`, and back on export):

    transformer.wte, transformer.ln_f, transformer.h.{i}.ln_1, lm_head (with bias)
    transformer.h.{i}.attn.qkv_proj.weight [3*H*D, E]   fused: 4 blocks (CodeGen's
        mp_num) of [q | v | k], each part the next H/4 heads
    transformer.h.{i}.attn.out_proj.weight              -> self_attn.dense.weight
    transformer.h.{i}.mlp.fc_in, mlp.fc_out             -> mlp.fc1, mlp.fc2

CodeGen rotates GPT-J's interleaved pairs (dims 2j, 2j+1 of the first rotary_dim),
phi_jax NeoX's halves (dims j, j + rotary_dim/2), with the same frequency for pair j.
The import permutes the rows of q_proj and k_proj alike, pair j's dims to j and
j + rotary_dim/2: each query and key is then rotated as CodeGen rotates it, with its
dims reordered, and q . k, a sum over the dims, is unchanged. The export permutes back.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from phi_jax.config import CODEGEN_QKV_BLOCKS, ConfigError, PhiConfig

# ----------------------------------------------------------------------------- config

_HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                   "gelu_fast": "gelu_tanh", "gelu": "gelu"}
_LEGACY_MODEL_TYPES = ("phi-msft", "mixformer-sequential")
_HF_ROPE_TYPES = {"default": "none", "linear": "linear"}  # transformers rope_type -> ours


def config_from_hf(hf: Mapping[str, Any], where: str = "config.json") -> PhiConfig:
  """PhiConfig from a transformers PhiConfig or CodeGenConfig dict (or a legacy
  mixformer config)."""
  if hf.get("model_type") == "codegen":
    return _config_from_codegen(hf, where)
  if hf.get("model_type") in _LEGACY_MODEL_TYPES or "n_embd" in hf:
    hf = _legacy_config_to_hf(hf)
  elif hf.get("model_type") not in ("phi", None):
    raise ConfigError(f"{where}: model_type {hf.get('model_type')!r} is not a phi model "
                      "(phi_jax reads 'phi' and 'codegen')")

  def get(key, default=None):
    return hf[key] if hf.get(key) is not None else default

  try:
    d_model, num_heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    head_dim = d_model // num_heads
    rope = dict(get("rope_parameters", {}) or {})
    scaling = dict(get("rope_scaling", {}) or {})
    if scaling:  # transformers 4.x's form; 5.x too reads it over rope_parameters' type
      rope = {k: v for k, v in rope.items() if k not in ("rope_type", "type")}
      rope.update(scaling)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in _HF_ROPE_TYPES:
      raise ConfigError(f"{where}: rope scaling {rope_type!r} is not supported; supported: "
                        f"{sorted(_HF_ROPE_TYPES)}")
    if rope_type == "linear" and "factor" not in rope:
      raise ConfigError(f"{where}: linear rope scaling without a 'factor'")
    factor = rope.get("partial_rotary_factor", get("partial_rotary_factor", 0.5))
    if get("head_dim") not in (None, head_dim):
      raise ConfigError(f"{where}: head_dim {hf['head_dim']} != hidden_size / heads")
    if get("num_key_value_heads", num_heads) != num_heads:
      raise ConfigError(f"{where}: grouped-query attention (num_key_value_heads="
                        f"{hf['num_key_value_heads']}) is not supported")
    if get("qk_layernorm", False):
      raise ConfigError(f"{where}: qk_layernorm=True is not supported")
    if get("tie_word_embeddings", False):
      raise ConfigError(f"{where}: tie_word_embeddings=True is not supported (phi is untied)")
    activation = _HF_ACTIVATIONS.get(get("hidden_act", "gelu_new"))
    if activation is None:
      raise ConfigError(f"{where}: hidden_act {hf['hidden_act']!r} is not supported; "
                        f"supported: {sorted(_HF_ACTIVATIONS)}")
    kwargs = dict(
        vocab_size=int(hf["vocab_size"]),
        d_model=d_model,
        num_layers=int(hf["num_hidden_layers"]),
        num_heads=num_heads,
        mlp_dim=int(get("intermediate_size", 4 * d_model)),
        rotary_dim=int(head_dim * float(factor)),
        rope_base=float(rope.get("rope_theta", get("rope_theta", 10000.0))),
        rope_scaling_type=_HF_ROPE_TYPES[rope_type],
        rope_scaling_factor=float(rope.get("factor", 1.0)) if rope_type == "linear" else 1.0,
        max_seq_len=int(get("max_position_embeddings", 2048)),
        layer_norm_eps=float(get("layer_norm_eps", 1e-5)),
        activation=activation,
        embed_dropout=float(get("embd_pdrop", 0.0)),
        attention_dropout=float(get("attention_dropout", 0.0)),
        residual_dropout=float(get("resid_pdrop", 0.0)),
        initializer_range=float(get("initializer_range", 0.02)),
    )
  except KeyError as e:
    raise ConfigError(f"{where}: missing field {e.args[0]!r}") from None
  try:
    return PhiConfig(**kwargs)
  except ConfigError as e:
    raise ConfigError(f"{where}: {e}") from None


def _config_from_codegen(hf: Mapping[str, Any], where: str) -> PhiConfig:
  """PhiConfig (architecture 'codegen') from a transformers CodeGenConfig dict."""

  def get(key, *aliases, default=None):
    for name in (key, *aliases):
      if hf.get(name) is not None:
        return hf[name]
    return default

  def need(key, *aliases):
    value = get(key, *aliases)
    if value is None:
      raise ConfigError(f"{where}: missing field {key!r}")
    return int(value)

  d_model, num_heads = need("n_embd", "hidden_size"), need("n_head", "num_attention_heads")
  num_layers, vocab_size = need("n_layer", "num_hidden_layers"), need("vocab_size")
  head_dim = d_model // max(num_heads, 1)
  if get("tie_word_embeddings", default=False):
    raise ConfigError(f"{where}: tie_word_embeddings=True is not supported (CodeGen is untied)")
  activation = _HF_ACTIVATIONS.get(get("activation_function", default="gelu_new"))
  if activation is None:
    raise ConfigError(f"{where}: activation_function {hf['activation_function']!r} is not "
                      f"supported; supported: {sorted(_HF_ACTIVATIONS)}")
  # rotary_dim None: CodeGen rotates whole heads (transformers runs that for one head only)
  rotary_dim = get("rotary_dim", default=head_dim)
  kwargs = dict(
      vocab_size=vocab_size,
      d_model=d_model,
      num_layers=num_layers,
      num_heads=num_heads,
      mlp_dim=int(get("n_inner", "intermediate_size", default=4 * d_model)),
      rotary_dim=int(rotary_dim),
      rope_base=10000.0,  # fixed in CodeGen's create_sinusoidal_positions
      max_seq_len=int(get("n_positions", "max_position_embeddings", default=2048)),
      layer_norm_eps=float(get("layer_norm_epsilon", default=1e-5)),
      activation=activation,
      embed_dropout=float(get("embd_pdrop", default=0.0)),
      attention_dropout=float(get("attn_pdrop", default=0.0)),
      residual_dropout=float(get("resid_pdrop", default=0.0)),
      initializer_range=float(get("initializer_range", default=0.02)),
      architecture="codegen",
      attention_bias=False,
  )
  try:
    return PhiConfig(**kwargs)
  except ConfigError as e:
    raise ConfigError(f"{where}: {e}") from None


def _legacy_config_to_hf(legacy: Mapping[str, Any]) -> dict[str, Any]:
  n_embd = legacy["n_embd"]
  n_head = legacy["n_head"]
  head_dim = n_embd // n_head
  mixer = (legacy.get("architecture") or {}).get("mixer") or {}
  rotary_dim = legacy.get("rotary_dim") or mixer.get("rotary_dim") or head_dim // 2
  return {
      "model_type": "phi",
      "vocab_size": legacy["vocab_size"],
      "hidden_size": n_embd,
      "num_hidden_layers": legacy["n_layer"],
      "num_attention_heads": n_head,
      "intermediate_size": legacy.get("n_inner") or 4 * n_embd,
      "partial_rotary_factor": rotary_dim / head_dim,
      "max_position_embeddings": legacy.get("n_positions", 2048),
      "layer_norm_eps": legacy.get("layer_norm_epsilon", 1e-5),
      "hidden_act": legacy.get("activation_function", "gelu_new"),
      "embd_pdrop": legacy.get("embd_pdrop", 0.0),
      "resid_pdrop": legacy.get("resid_pdrop", 0.0),
      "initializer_range": legacy.get("initializer_range", 0.02),
  }


def config_to_hf(config: PhiConfig, *, bos_token_id: int | None = None,
                 eos_token_id: int | None = None, torch_dtype: str = "float32") -> dict:
  """A transformers `PhiConfig` dict (readable by transformers 4.x and 5.x), or a
  `CodeGenConfig` one for architecture 'codegen'."""
  if config.architecture == "codegen":
    return _codegen_config_to_hf(config, bos_token_id=bos_token_id,
                                 eos_token_id=eos_token_id, torch_dtype=torch_dtype)
  factor = config.rotary_dim / config.head_dim
  rope_parameters = {"rope_type": "default", "rope_theta": config.rope_base,
                     "partial_rotary_factor": factor}
  rope_scaling = None
  if config.rope_scaling_type == "linear":
    rope_parameters.update(rope_type="linear", factor=config.rope_scaling_factor)
    rope_scaling = {"type": "linear", "factor": config.rope_scaling_factor}  # 4.x's form
  return {
      "architectures": ["PhiForCausalLM"],
      "model_type": "phi",
      "vocab_size": config.vocab_size,
      "hidden_size": config.d_model,
      "intermediate_size": config.mlp_dim,
      "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads,
      "num_key_value_heads": config.num_heads,
      "hidden_act": {"gelu_tanh": "gelu_new", "gelu": "gelu"}[config.activation],
      "max_position_embeddings": config.max_seq_len,
      "layer_norm_eps": config.layer_norm_eps,
      "rope_theta": config.rope_base,
      "partial_rotary_factor": factor,
      "rope_parameters": rope_parameters,
      "rope_scaling": rope_scaling,
      "embd_pdrop": config.embed_dropout,
      "resid_pdrop": config.residual_dropout,
      "attention_dropout": config.attention_dropout,
      "initializer_range": config.initializer_range,
      "qk_layernorm": False,
      "tie_word_embeddings": False,
      "use_cache": True,
      "bos_token_id": bos_token_id,
      "eos_token_id": eos_token_id,
      "torch_dtype": torch_dtype,
  }


def _codegen_config_to_hf(config: PhiConfig, *, bos_token_id: int | None,
                          eos_token_id: int | None, torch_dtype: str) -> dict:
  """A transformers `CodeGenConfig` dict; refuses what CodeGen cannot express."""
  if config.rope_base != 10000.0 or config.rope_scaling_type != "none":
    raise ConfigError(f"a CodeGen model exports with rope_base 10000 and no rope scaling "
                      f"(CodeGen has no such settings), not rope_base {config.rope_base} and "
                      f"rope_scaling_type {config.rope_scaling_type!r}")
  return {
      "architectures": ["CodeGenForCausalLM"],
      "model_type": "codegen",
      "vocab_size": config.vocab_size,
      "n_positions": config.max_seq_len,
      "n_ctx": config.max_seq_len,
      "n_embd": config.d_model,
      "n_layer": config.num_layers,
      "n_head": config.num_heads,
      "n_inner": config.mlp_dim,
      "rotary_dim": config.rotary_dim,
      "activation_function": {"gelu_tanh": "gelu_new", "gelu": "gelu"}[config.activation],
      "layer_norm_epsilon": config.layer_norm_eps,
      "embd_pdrop": config.embed_dropout,
      "attn_pdrop": config.attention_dropout,
      "resid_pdrop": config.residual_dropout,
      "initializer_range": config.initializer_range,
      "tie_word_embeddings": False,
      "use_cache": True,
      "bos_token_id": bos_token_id,
      "eos_token_id": eos_token_id,
      "torch_dtype": torch_dtype,
  }


# ---------------------------------------------------------------------- legacy names

_LEGACY_RENAMES = [
    (r"^transformer\.embd\.wte\.", "model.embed_tokens."),
    (r"^transformer\.h\.(\d+)\.ln\.", r"model.layers.\1.input_layernorm."),
    (r"^transformer\.h\.(\d+)\.mixer\.out_proj\.", r"model.layers.\1.self_attn.dense."),
    (r"^transformer\.h\.(\d+)\.mixer\.Wqkv\.", r"model.layers.\1.self_attn.Wqkv."),
    (r"^transformer\.h\.(\d+)\.mlp\.", r"model.layers.\1.mlp."),
    (r"^lm_head\.ln\.", "model.final_layernorm."),
    (r"^lm_head\.linear\.", "lm_head."),
]
_IGNORED = re.compile(r"(rotary_emb\.inv_freq|\.inv_freq|masked_bias|\.attn\.bias)$")


def _sequential_to_transformer_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """MixFormerSequential `layers.0.wte`, `layers.{i+1}.*`, `layers.{L+1}.{ln,linear}`."""
  block_ids = sorted({int(m.group(1)) for name in tensors
                      if (m := re.match(r"^layers\.(\d+)\.mixer\.", name))})
  head = max(block_ids) + 1 if block_ids else 1
  renamed = {}
  for name, value in tensors.items():
    m = re.match(r"^layers\.(\d+)\.(.*)$", name)
    if not m:
      renamed[name] = value
      continue
    index, rest = int(m.group(1)), m.group(2)
    if index == 0:
      renamed[f"transformer.embd.{rest}"] = value
    elif index == head:
      renamed[f"lm_head.{rest}"] = value
    else:
      renamed[f"transformer.h.{index - 1}.{rest}"] = value
  return renamed


def normalize_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """transformers names for a state dict in transformers or legacy mixformer naming."""
  if any(name.startswith("layers.0.wte.") for name in tensors):
    tensors = _sequential_to_transformer_names(tensors)
  out = {}
  for name, value in tensors.items():
    if _IGNORED.search(name):
      continue
    for pattern, replacement in _LEGACY_RENAMES:
      name = re.sub(pattern, replacement, name)
    m = re.match(r"^(model\.layers\.\d+\.self_attn\.)Wqkv\.(weight|bias)$", name)
    if m:
      if value.shape[0] % 3:
        raise ValueError(f"fused Wqkv.{m.group(2)} of shape {value.shape} does not split in 3")
      for proj, part in zip(("q_proj", "k_proj", "v_proj"), np.split(value, 3, axis=0)):
        out[f"{m.group(1)}{proj}.{m.group(2)}"] = part
      continue
    out[name] = value
  return out


# ------------------------------------------------------------------------ CodeGen

_CODEGEN_RENAMES = [
    (r"^transformer\.wte\.", "model.embed_tokens."),
    (r"^transformer\.ln_f\.", "model.final_layernorm."),
    (r"^transformer\.h\.(\d+)\.ln_1\.", r"model.layers.\1.input_layernorm."),
    (r"^transformer\.h\.(\d+)\.attn\.out_proj\.", r"model.layers.\1.self_attn.dense."),
    (r"^transformer\.h\.(\d+)\.mlp\.fc_in\.", r"model.layers.\1.mlp.fc1."),
    (r"^transformer\.h\.(\d+)\.mlp\.fc_out\.", r"model.layers.\1.mlp.fc2."),
]
# buffers some CodeGen checkpoints hold (the causal mask), not parameters
_CODEGEN_IGNORED = re.compile(r"\.attn\.(causal_mask|masked_bias|bias|embed_positions)$")
_CODEGEN_QKV = re.compile(r"^transformer\.h\.(\d+)\.attn\.qkv_proj\.weight$")
_CODEGEN_PARTS = ("q_proj", "v_proj", "k_proj")  # the order within each block of qkv_proj


def rotary_half_order(config: PhiConfig) -> np.ndarray:
  """The head-dim order [D] that puts GPT-J's interleaved rotary pairs (2j, 2j+1) at
  NeoX's (j, j + rotary_dim/2); the dims past rotary_dim stay. new[d] = old[order[d]]."""
  r = config.rotary_dim
  return np.concatenate([np.arange(0, r, 2), np.arange(1, r, 2),
                         np.arange(r, config.head_dim)]).astype(np.int64)


def _permute_heads(w: np.ndarray, config: PhiConfig, order: np.ndarray) -> np.ndarray:
  """Rows [H*D, E] of a q/k projection with each head's dims reordered by `order`."""
  heads_HDE = w.reshape(config.num_heads, config.head_dim, -1)
  return np.ascontiguousarray(heads_HDE[:, order]).reshape(w.shape)


def codegen_to_phi_names(tensors: Mapping[str, np.ndarray],
                         config: PhiConfig) -> dict[str, np.ndarray]:
  """A CodeGenForCausalLM state dict under transformers' Phi names (module docstring):
  qkv_proj split into q/k/v_proj, q and k in rotate-half order. Unknown names pass."""
  H, D, E = config.num_heads, config.head_dim, config.d_model
  order = rotary_half_order(config)
  out = {}
  for name, value in tensors.items():
    if _CODEGEN_IGNORED.search(name):
      continue
    m = _CODEGEN_QKV.match(name)
    if m:
      if value.shape != (3 * H * D, E):
        raise ValueError(f"{name} has shape {tuple(value.shape)} but the config (d_model={E}, "
                         f"heads={H}) needs {(3 * H * D, E)}")
      blocks = value.reshape(CODEGEN_QKV_BLOCKS, 3, H // CODEGEN_QKV_BLOCKS, D, E)
      for index, part in enumerate(_CODEGEN_PARTS):
        w = blocks[:, index].reshape(H * D, E)
        if part != "v_proj":
          w = _permute_heads(w, config, order)
        out[f"model.layers.{m.group(1)}.self_attn.{part}.weight"] = np.ascontiguousarray(w)
      continue
    for pattern, replacement in _CODEGEN_RENAMES:
      name = re.sub(pattern, replacement, name)
    out[name] = value
  return out


def phi_to_codegen_names(tensors: Mapping[str, np.ndarray],
                         config: PhiConfig) -> dict[str, np.ndarray]:
  """The inverse of `codegen_to_phi_names`: a CodeGenForCausalLM state dict."""
  H, D, E = config.num_heads, config.head_dim, config.d_model
  inverse = np.argsort(rotary_half_order(config))
  back = {"input_layernorm": "ln_1", "self_attn.dense": "attn.out_proj", "mlp.fc1": "mlp.fc_in",
          "mlp.fc2": "mlp.fc_out"}
  out = {}
  for name, value in tensors.items():
    if name.startswith("model.embed_tokens."):
      out[name.replace("model.embed_tokens.", "transformer.wte.")] = value
    elif name.startswith("model.final_layernorm."):
      out[name.replace("model.final_layernorm.", "transformer.ln_f.")] = value
    elif name.startswith("lm_head."):
      out[name] = value
    else:
      m = re.match(r"^model\.layers\.(\d+)\.(.*)\.(weight|bias)$", name)
      if not m:
        raise ValueError(f"no CodeGen name for tensor {name}")
      layer, module, kind = m.groups()
      if module.startswith("self_attn.") and module.endswith("_proj"):
        continue  # fused below
      out[f"transformer.h.{layer}.{back[module]}.{kind}"] = value
  for layer in range(config.num_layers):
    prefix = f"model.layers.{layer}.self_attn."
    parts = []
    for part in _CODEGEN_PARTS:
      w = np.asarray(tensors[prefix + part + ".weight"])
      if part != "v_proj":
        w = _permute_heads(w, config, inverse)
      parts.append(w.reshape(CODEGEN_QKV_BLOCKS, H // CODEGEN_QKV_BLOCKS, D, E))
    out[f"transformer.h.{layer}.attn.qkv_proj.weight"] = np.ascontiguousarray(
        np.stack(parts, axis=1).reshape(3 * H * D, E))
  return out


# ------------------------------------------------------------------------ name map


@dataclasses.dataclass(frozen=True)
class TensorMap:
  """One transformers tensor <-> one phi_jax parameter (a layer slice when per_layer)."""
  hf_name: str  # with '{i}' for the layer index when per_layer
  path: tuple[str, ...]
  to_jax: Callable[[np.ndarray, PhiConfig], np.ndarray]
  to_hf: Callable[[np.ndarray, PhiConfig], np.ndarray]
  per_layer: bool = True


def _identity(x, _):
  return x


def _transpose(x, _):
  return np.ascontiguousarray(x.T)


def _qkv_kernel_to_jax(w, c):  # [H*D, E] -> [E, H, D]
  return np.ascontiguousarray(w.T).reshape(c.d_model, c.num_heads, c.head_dim)


def _qkv_kernel_to_hf(k, c):  # [E, H, D] -> [H*D, E]
  return np.ascontiguousarray(k.reshape(c.d_model, -1).T)


def _heads_bias_to_jax(b, c):  # [H*D] -> [H, D]
  return b.reshape(c.num_heads, c.head_dim)


def _heads_bias_to_hf(b, _):
  return b.reshape(-1)


def _out_kernel_to_jax(w, c):  # [E, H*D] -> [H, D, E]
  return np.ascontiguousarray(w.T).reshape(c.num_heads, c.head_dim, c.d_model)


def _out_kernel_to_hf(k, c):  # [H, D, E] -> [E, H*D]
  return np.ascontiguousarray(k.reshape(-1, c.d_model).T)


def tensor_maps(config: PhiConfig | None = None) -> list[TensorMap]:
  """The name map under transformers' Phi names; without the attention biases when
  `config` has none (CodeGen)."""
  layer = "model.layers.{i}."
  maps = [
      TensorMap("model.embed_tokens.weight", ("embed",), _identity, _identity, False),
      TensorMap("model.final_layernorm.weight", ("final_norm", "scale"), _identity, _identity, False),
      TensorMap("model.final_layernorm.bias", ("final_norm", "bias"), _identity, _identity, False),
      TensorMap("lm_head.weight", ("lm_head", "kernel"), _transpose, _transpose, False),
      TensorMap("lm_head.bias", ("lm_head", "bias"), _identity, _identity, False),
      TensorMap(layer + "input_layernorm.weight", ("blocks", "norm", "scale"), _identity, _identity),
      TensorMap(layer + "input_layernorm.bias", ("blocks", "norm", "bias"), _identity, _identity),
      TensorMap(layer + "self_attn.dense.weight", ("blocks", "attn", "out_proj", "kernel"),
                _out_kernel_to_jax, _out_kernel_to_hf),
      TensorMap(layer + "self_attn.dense.bias", ("blocks", "attn", "out_proj", "bias"),
                _identity, _identity),
      TensorMap(layer + "mlp.fc1.weight", ("blocks", "mlp", "fc1", "kernel"), _transpose, _transpose),
      TensorMap(layer + "mlp.fc1.bias", ("blocks", "mlp", "fc1", "bias"), _identity, _identity),
      TensorMap(layer + "mlp.fc2.weight", ("blocks", "mlp", "fc2", "kernel"), _transpose, _transpose),
      TensorMap(layer + "mlp.fc2.bias", ("blocks", "mlp", "fc2", "bias"), _identity, _identity),
  ]
  for proj in ("q_proj", "k_proj", "v_proj"):
    maps.append(TensorMap(layer + f"self_attn.{proj}.weight", ("blocks", "attn", proj, "kernel"),
                          _qkv_kernel_to_jax, _qkv_kernel_to_hf))
    maps.append(TensorMap(layer + f"self_attn.{proj}.bias", ("blocks", "attn", proj, "bias"),
                          _heads_bias_to_jax, _heads_bias_to_hf))
  if config is not None and not config.attention_bias:
    maps = [m for m in maps if not (m.path[:2] == ("blocks", "attn") and m.path[-1] == "bias")]
  return maps


def expected_hf_shapes(config: PhiConfig) -> dict[str, tuple[int, ...]]:
  """The transformers tensor names and shapes a checkpoint of this config must have."""
  from phi_jax.model import abstract_params  # pylint: disable=g-import-not-at-top
  params = abstract_params(config)
  shapes = {}
  for m in tensor_maps(config):
    leaf = _get(params, m.path)
    layer_shape = leaf.shape[1:] if m.per_layer else leaf.shape
    hf_shape = m.to_hf(np.empty(layer_shape, np.int8), config).shape
    for name in _names(m, config):
      shapes[name] = hf_shape
  return shapes


def _names(m: TensorMap, config: PhiConfig) -> list[str]:
  return [m.hf_name.format(i=i) for i in range(config.num_layers)] if m.per_layer else [m.hf_name]


def _get(tree: Mapping, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def hf_to_params(tensors: Mapping[str, np.ndarray], config: PhiConfig,
                 source: str = "checkpoint") -> dict:
  """phi_jax parameters (nested dict of numpy arrays, `param_dtype`) from a state dict
  (transformers Phi or legacy names; CodeGen's for architecture 'codegen').

  Raises ValueError naming the tensor when one is missing, unexpected, or has a shape
  that does not match the config.
  """
  if config.architecture == "codegen":
    tensors = codegen_to_phi_names(tensors, config)
  else:
    tensors = normalize_names(dict(tensors))
  expected = expected_hf_shapes(config)
  missing = sorted(set(expected) - set(tensors))
  unexpected = sorted(set(tensors) - set(expected))
  if unexpected:
    raise ValueError(f"{source}: unexpected tensor(s) {unexpected[:10]} for a "
                     f"{config.architecture} model with {config.num_layers} layers")
  if missing:
    raise ValueError(f"{source}: missing tensor(s) {missing[:10]}")
  for name, shape in expected.items():
    if tuple(tensors[name].shape) != shape:
      raise ValueError(
          f"{source}: tensor {name} has shape {tuple(tensors[name].shape)} but the config "
          f"(d_model={config.d_model}, heads={config.num_heads}, mlp_dim={config.mlp_dim}, "
          f"vocab_size={config.vocab_size}) needs {shape}")
  dtype = config.params_dtype
  params: dict = {}
  for m in tensor_maps(config):
    arrays = [m.to_jax(tensors[name].astype(dtype), config) for name in _names(m, config)]
    _set(params, m.path, np.stack(arrays) if m.per_layer else arrays[0])
  return params


def params_to_hf(params: Mapping, config: PhiConfig,
                 dtype: np.dtype | str | None = None) -> dict[str, np.ndarray]:
  """The transformers state dict of phi_jax parameters (CodeGen's names and fused
  qkv_proj for architecture 'codegen')."""
  tensors = {}
  for m in tensor_maps(config):
    value = np.asarray(_get(params, m.path))
    if dtype is not None:
      value = value.astype(dtype)
    if m.per_layer:
      for i, name in enumerate(_names(m, config)):
        tensors[name] = m.to_hf(value[i], config)
    else:
      tensors[m.hf_name] = m.to_hf(value, config)
  if config.architecture == "codegen":
    tensors = phi_to_codegen_names(tensors, config)
  return tensors
