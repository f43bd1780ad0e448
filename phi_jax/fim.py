"""Fill-in-the-middle (Bavarian et al. 2022, arXiv 2207.14255): sentinels and prompt format.

A model trained with FIM sees some documents cut at two character positions into
prefix, middle and suffix and rearranged so that the middle comes last, marked by three
special tokens (the names Qwen2.5-Coder and CodeGemma use; StarCoder spells them
without the bars):

    PSM  <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> middle <|endoftext|>
    SPM  <|fim_prefix|> <|fim_suffix|> suffix <|fim_middle|> prefix middle <|endoftext|>

SPM is the FIM paper's SPM variant (its appendix D; bigcode's Megatron-LM trains
StarCoder with it), in which the prefix directly precedes the middle, so an SPM prompt
ends with the prefix and the model continues it. Each piece is tokenized on its own,
in training and here, so a prompt's tokens are exactly those the model was trained on.
At inference the prompt is the rearranged document without its middle; the model
generates the middle and ends it with <|endoftext|>.

The transform applied to training documents is `data_pipeline.fim`; both build on
`arrange` below.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
  from phi_jax.tokenizer import Tokenizer

FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_TOKENS = (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX)
PSM = "psm"  # prefix, suffix, middle
SPM = "spm"  # suffix, prefix, middle
MODES = (PSM, SPM)


@dataclasses.dataclass(frozen=True)
class FimIds:
  """The sentinel token ids of a tokenizer."""
  prefix: int
  middle: int
  suffix: int


def has_fim_tokens(tokenizer: Tokenizer) -> bool:
  return all(tokenizer.backend.token_to_id(t) is not None for t in FIM_TOKENS)


def fim_ids(tokenizer: Tokenizer) -> FimIds:
  """The tokenizer's sentinel ids; ValueError naming the missing ones if it lacks any."""
  ids = [tokenizer.backend.token_to_id(t) for t in FIM_TOKENS]
  missing = [t for t, i in zip(FIM_TOKENS, ids) if i is None]
  if missing:
    raise ValueError(
        f"the model's tokenizer has no fill-in-the-middle tokens ({', '.join(missing)} "
        "missing), so the model cannot infill: it was not trained with FIM (train one with "
        "config.data.fim_rate > 0)")
  return FimIds(*ids)


def arrange(prefix: Sequence[int], middle: Sequence[int], suffix: Sequence[int],
            ids: FimIds, mode: str = PSM) -> list[int]:
  """The token sequence of a FIM document (see the module docstring) from its pieces."""
  if mode == PSM:
    return [ids.prefix, *prefix, ids.suffix, *suffix, ids.middle, *middle]
  if mode == SPM:
    return [ids.prefix, ids.suffix, *suffix, ids.middle, *prefix, *middle]
  raise ValueError(f"FIM mode must be one of {MODES}, got {mode!r}")


def infill_prompt(tokenizer: Tokenizer, prefix: str, suffix: str,
                  mode: str = PSM) -> list[int]:
  """The prompt whose continuation is the text between `prefix` and `suffix`.

  Raises:
    ValueError: the tokenizer has no sentinel tokens, or `mode` is unknown.
  """
  ids = fim_ids(tokenizer)
  prefix_ids, suffix_ids = tokenizer.encode_batch([prefix, suffix])
  return arrange(prefix_ids, [], suffix_ids, ids, mode)
