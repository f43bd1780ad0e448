"""Synthetic textbooks and CodeExercises from any OpenAI-compatible teacher.

    from data_pipeline.synth import synthesize, sandbox_for, ExerciseOptions
    summary = synthesize(config.synth, out_dir, client, sandbox, curated_paths=[...])

Modules: topics (the topic space and the per-request draw), prompts (the messages),
parse (code out of answers), gates (quality gates and dedup), diversity (the report),
generate (the driver). See docs/synthetic.md.
"""

from data_pipeline.synth.generate import (ExerciseOptions, SynthConfig, TextbookOptions,
                                          sample_id, sandbox_for, synthesize)

__all__ = ["ExerciseOptions", "SynthConfig", "TextbookOptions", "sample_id", "sandbox_for",
           "synthesize"]
