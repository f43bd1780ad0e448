"""Synthetic textbooks and CodeExercises from any OpenAI-compatible teacher.

    from data_pipeline.synth import synthesize, sandbox_for, ExerciseOptions
    summary = synthesize(config.synth, out_dir, client, sandbox, curated_paths=[...])

Modules: topics (the topic space and the per-request draw), prompts (the messages),
parse (code out of answers), gates (quality gates and dedup), mutants and adequacy
(mutation testing of exercises' tests), proximity (benchmark proximity), grounding
(seed extracts for textbooks), diversity (the report), generate (the driver). See docs/synthetic.md.
"""

import importlib

from data_pipeline.synth.config import ExerciseOptions, SynthConfig, TextbookOptions

_GENERATE = ("sample_id", "sandbox_for", "synthesize")  # imported on first use


def __getattr__(name: str):
  if name in _GENERATE:
    return getattr(importlib.import_module("data_pipeline.synth.generate"), name)
  raise AttributeError(f"module 'data_pipeline.synth' has no attribute {name!r}")

__all__ = ["ExerciseOptions", "SynthConfig", "TextbookOptions", "sample_id", "sandbox_for",
           "synthesize"]
