"""`config.serve` (`python run.py --serve`): phi_jax's OpenAI-compatible server for the
run's model. A service, not a stage: every field is operational."""

from __future__ import annotations

import dataclasses

from phi_jax.settings import OPERATIONAL, at_least, one_of, setting, text

BATCHING = ("continuous", "static")


@dataclasses.dataclass(frozen=True)
class ServeSettings:
  """How the run's model is served (`python -m phi_jax.serve` serves any checkpoint)."""
  model: str = setting("", "the model to serve: '' = the latest model of this run",
                       kind=OPERATIONAL, check=text())
  host: str = setting("127.0.0.1", "interface to bind (loopback by default; no TLS)",
                      kind=OPERATIONAL, check=text())
  port: int = setting(8000, "TCP port", kind=OPERATIONAL, check=at_least(0))
  model_name: str = setting("", "the name clients pass as `model` ('' = the checkpoint path)",
                            kind=OPERATIONAL, check=text())
  max_batch: int = setting(32, "sequences decoded together", kind=OPERATIONAL,
                           check=at_least(1))
  chunk_size: int = setting(16, "decode steps between streamed text updates / stop checks",
                            kind=OPERATIONAL, check=at_least(1))
  dtype: str = setting("", "compute dtype override ('' = the checkpoint's)", kind=OPERATIONAL,
                       check=one_of("", "float32", "bfloat16", "float16"))
  max_queue: int = setting(1024, "rows waiting for a batch row; beyond it requests get 429",
                           kind=OPERATIONAL, check=at_least(1))
  batching: str = setting(
      "continuous", "'continuous' (rows join and leave the batch at every decode chunk) or "
      "'static' (a batch runs until its longest row ends; a baseline)", kind=OPERATIONAL,
      check=one_of(*BATCHING))
  api_key_env: str = setting(
      "", "name of an environment variable holding the API key ('' = no key); with one, "
      "every request must send 'Authorization: Bearer <key>'", kind=OPERATIONAL, check=text())
  warm_up_prompt_tokens: int = setting(
      0, "before serving, compile every batch size on prompts of this many tokens (0 = no "
      "warm-up)", kind=OPERATIONAL, check=at_least(0))
  warm_up_new_tokens: int = setting(256, "tokens each warm-up row generates", kind=OPERATIONAL,
                                    check=at_least(1))
