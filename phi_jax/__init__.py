"""phi_jax: the phi-1 recipe ("Textbooks Are All You Need") in JAX/Flax.

The notebook API:

    import phi_jax
    model = phi_jax.from_pretrained("path/to/checkpoint_or_hf_dir")   # or "microsoft/phi-1"
    logits = model(tokens)                        # int32 [batch, seq] -> fp32 [batch, seq, vocab]
    out = phi_jax.generate(model, ["def fib(n):"], max_new_tokens=64, stop=["\\ndef"])
    print(out[0].text)
    # fill in the middle (a model trained with FIM, docs/fim.md): out[0].text is the gap
    out = phi_jax.generate(model, ["def add(a, b):\\n    return "], suffix=["\\n\\nadd(1, 2)\\n"])
    phi_jax.count_params(phi_jax.PhiConfig())     # 1,418,270,720 (phi-1)

Names are imported on first use, so `import phi_jax.llm` (say) does not pay for jax.
"""

import importlib

_EXPORTS = {
    "Completion": "phi_jax.sampling",
    "ConfigError": "phi_jax.config",
    "PhiConfig": "phi_jax.config",
    "PhiForCausalLM": "phi_jax.model",
    "SamplingParams": "phi_jax.sampling",
    "Tokenizer": "phi_jax.tokenizer",
    "count_params": "phi_jax.model",
    "from_pretrained": "phi_jax.pretrained",
    "generate": "phi_jax.sampling",
    "init_model": "phi_jax.pretrained",
    "model_from_params": "phi_jax.pretrained",
    "params_of": "phi_jax.pretrained",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'phi_jax' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))
