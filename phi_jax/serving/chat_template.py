"""The chat template: ChatML-style turns rendered into one completion prompt.

Each message becomes `<|im_start|>{role}\n{content}<|im_end|>\n` and the prompt ends
with the assistant prefix `<|im_start|>assistant\n`; for example

    <|im_start|>system
    You write Python.<|im_end|>
    <|im_start|>user
    Reverse a string.<|im_end|>
    <|im_start|>assistant

The reply ends at the end marker `<|im_end|>`, or at `<|im_start|>` should the model
open a new turn itself: both are stop strings of every chat request. The markers are
plain text (a base model's tokenizer has no special tokens for them).
"""

from __future__ import annotations

from collections.abc import Sequence

ROLES = ("system", "user", "assistant")
START = "<|im_start|>"
END = "<|im_end|>"
STOP = (END, START)


def render(messages: Sequence[tuple[str, str]]) -> str:
  """The prompt of (role, content) messages, ending with the assistant prefix."""
  turns = []
  for role, content in messages:
    if role not in ROLES:
      raise ValueError(f"unknown chat role {role!r}; expected one of {ROLES}")
    turns.append(f"{START}{role}\n{content}{END}\n")
  return "".join(turns) + f"{START}assistant\n"
