"""The determinism certificate: does greedy decoding depend on the batch?

A greedy pass@1 should be a function of the model and the prompts. Batched decoding
can break that: padding, a different reduction order of a matmul over another batch
shape, or a kernel that reads across rows make a row's logits depend on the rows
beside it, and near-ties of the argmax then flip (lm-evaluation-harness measured a
pass@1 of 0.4756 at one batch size and 0.5061 at another on one model).

`certify` re-decodes a sample of the evaluation's problems greedily twice, each
problem alone (batch 1) and all of them in a shuffled order at the evaluation's batch
size (other neighbours in every batch), and compares each completion with the one the
evaluation scored: which completions diverge, at which token (of the completion text
encoded by the model's tokenizer), and how pass@1 over the sampled problems changes
when the re-decoded completions are executed. It needs no model of its own: the
decoder, encoder and executor are passed in, so a fake model tests it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

VARIANTS = ("batch_1", "shuffled")
LISTED = 10  # diverged problems listed by name per variant


def choose(num_problems: int, count: int, seed: int) -> list[int]:
  """The indices (ascending) of `count` problems drawn without replacement, by seed."""
  if count >= num_problems:
    return list(range(num_problems))
  rng = np.random.default_rng(seed)
  return sorted(int(i) for i in rng.choice(num_problems, size=count, replace=False))


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
  """The first index where two token sequences differ (the shorter one's length when
  one is a prefix of the other), or None when they are equal."""
  for i, (x, y) in enumerate(zip(a, b)):
    if x != y:
      return i
  return None if len(a) == len(b) else min(len(a), len(b))


def decode_variants(prompts: Sequence[Sequence[int]], *,
                    decode: Callable[[list[list[int]], int], list[str]],
                    batch_size: int, seed: int = 0) -> dict[str, list[str]]:
  """The certificate's decodings of `prompts`, in problem order: {"shuffled": at
  `batch_size` in a seeded shuffled order, "batch_1": one at a time}. `certify` runs it
  first; a process that only takes part in the decoding (a multi-host job's other
  processes: decoding is one program of every process) runs it alone."""
  m = len(prompts)
  order = [int(i) for i in np.random.default_rng(seed).permutation(m)]
  shuffled = decode([list(prompts[i]) for i in order], batch_size)
  unshuffled = [""] * m
  for position, i in enumerate(order):
    unshuffled[i] = shuffled[position]
  return {"batch_1": decode([list(p) for p in prompts], 1), "shuffled": unshuffled}


def certify(task_ids: Sequence[str], prompts: Sequence[Sequence[int]],
            reference: Sequence[str], reference_passed: Sequence[bool], *,
            decode: Callable[[list[list[int]], int], list[str]],
            encode: Callable[[str], list[int]],
            execute: Callable[[list[int], list[str]], list[bool]],
            batch_size: int, seed: int = 0) -> dict:
  """The certificate of the sampled problems.

  task_ids, prompts: the sampled problems and their token prompts.
  reference, reference_passed: the evaluation's own greedy completion of each (decoded
    at `batch_size` among the evaluation's other problems) and its verdict.
  decode(prompts, batch_size): greedy completions, in order.
  encode(text): token ids of a completion text (divergences are token positions).
  execute(indices, completions): verdicts of completions of the problems at `indices`.
  Returns {"problems", "batch_size", "reference_pass@1", "variants": {name: {...}},
  "identical"}: per variant the diverged problems (all of them counted, the first
  LISTED named with the token where they part), its pass@1 and the change.
  """
  m = len(task_ids)
  if not m or not len(prompts) == len(reference) == len(reference_passed) == m:
    raise ValueError("certify needs one prompt, completion and verdict per sampled problem")
  decoded = decode_variants(prompts, decode=decode, batch_size=batch_size, seed=seed)
  reference_rate = float(np.mean([bool(p) for p in reference_passed]))
  variants = {}
  for name, completions in decoded.items():
    differ = [i for i in range(m) if completions[i] != reference[i]]
    verdicts = [bool(p) for p in reference_passed]  # the same text, the same verdict
    if differ:
      for i, passed in zip(differ, execute(differ, [completions[i] for i in differ])):
        verdicts[i] = bool(passed)
    rate = float(np.mean(verdicts))
    variants[name] = {
        "diverged": len(differ),
        "first_divergence": {task_ids[i]: first_divergence(encode(reference[i]),
                                                           encode(completions[i]))
                             for i in differ[:LISTED]},
        "verdict_changed": sum(verdicts[i] != bool(reference_passed[i]) for i in differ),
        "pass@1": rate, "pass@1_change": rate - reference_rate}
  return {"problems": m, "batch_size": batch_size, "seed": seed,
          "reference_pass@1": reference_rate, "variants": variants,
          "identical": all(v["diverged"] == 0 for v in variants.values())}
