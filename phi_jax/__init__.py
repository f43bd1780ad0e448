"""phi_jax: the phi-1 recipe ("Textbooks Are All You Need") in JAX/Flax.

The notebook API:

    import phi_jax
    model = phi_jax.from_pretrained("path/to/checkpoint_or_hf_dir")   # or "microsoft/phi-1"
    logits = model(tokens)                        # int32 [batch, seq] -> fp32 [batch, seq, vocab]
    out = phi_jax.generate(model, ["def fib(n):"], max_new_tokens=64, stop=["\\ndef"])
    print(out[0].text)
    phi_jax.count_params(phi_jax.PhiConfig())     # 1,418,270,720 (phi-1)
"""

from phi_jax.config import ConfigError, PhiConfig
from phi_jax.model import PhiForCausalLM, count_params
from phi_jax.pretrained import from_pretrained, init_model, model_from_params, params_of
from phi_jax.sampling import Completion, SamplingParams, generate
from phi_jax.tokenizer import Tokenizer

__all__ = [
    "Completion", "ConfigError", "PhiConfig", "PhiForCausalLM", "SamplingParams", "Tokenizer",
    "count_params", "from_pretrained", "generate", "init_model", "model_from_params",
    "params_of",
]
