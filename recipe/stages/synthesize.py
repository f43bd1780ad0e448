"""Stage `synthesize`: synthetic textbooks and CodeExercises from a teacher LLM.

Writes WORKDIR/synthesize/{textbooks,exercises,rejected}.jsonl, diversity.{json,md} and
summary.json (data_pipeline/synth, docs/synthetic.md). The teacher is
`config.synth.teacher` (any OpenAI-compatible endpoint), or, with
`config.synth.local_teacher` set, phi_jax's own server started on loopback for the
stage: 'random' serves a random model of config.model's shape with the byte-level
tokenizer (an offline run that exercises the whole path; nearly everything it writes
is rejected), a path serves that checkpoint or transformers directory.

The data steps after it read the accepted sets: `phi1_textbooks` and `phi1_exercises`
are built from them (plus config.data.textbooks / exercises).
"""

from __future__ import annotations

import contextlib
import os

from data_pipeline import synth
from phi_jax import checkpoint, pretrained, serve
from phi_jax import tokenizer as tokenizer_lib
from phi_jax.config import PhiConfig
from phi_jax.cli import UsageError
from phi_jax.llm import LLMClient, LLMConfig
from recipe.runner import Context, Node

NAME = "synthesize"
LOCAL_MODEL_NAME = "phi-jax-local-teacher"
# config.synth fields of the stage itself, not of data_pipeline.synth
_STAGE_FIELDS = ("local_teacher", "local_max_batch")


def synth_values(synth_config) -> dict:
  """config.synth as data_pipeline.synth takes it (without the stage's own fields)."""
  return {k: v for k, v in synth_config.to_dict().items() if k not in _STAGE_FIELDS}


def out_dir(ctx: Context) -> str:
  return ctx.node_dir(NAME)


def textbooks_path(ctx: Context) -> str:
  return os.path.join(out_dir(ctx), "textbooks.jsonl")


def exercises_path(ctx: Context) -> str:
  return os.path.join(out_dir(ctx), "exercises.jsonl")


def _local_teacher_model(ctx: Context, spec: str):
  """The model phi_jax's server serves as the teacher (see the module docstring)."""
  if spec != "random":
    return serve.load_model(spec, "float32")
  byte_level = tokenizer_lib.byte_level()
  # byte-level prompts are long: a context of at least 4096 tokens
  config = PhiConfig.from_mapping(ctx.config.model).replace(
      vocab_size=max(int(ctx.config.model.vocab_size), byte_level.vocab_size),
      max_seq_len=max(int(ctx.config.model.max_seq_len), 4096), dtype="float32",
      attention="xla")
  root = os.path.join(out_dir(ctx), "local_teacher")
  if not checkpoint.steps(root):
    params = pretrained.params_of(pretrained.init_model(config, int(ctx.config.synth.seed)))
    checkpoint.save(root, 0, params, config, tokenizer=byte_level, source="random_init")
  return serve.load_model(root, "float32")


@contextlib.contextmanager
def teacher_client(ctx: Context):
  """The LLM client of the teacher (and the local server, when one is configured)."""
  values = ctx.config.synth.teacher.to_dict()
  values["cache_dir"] = values.get("cache_dir") or ctx.path("llm_cache")
  with contextlib.ExitStack() as stack:
    local = ctx.config.synth.local_teacher
    if local:
      cfg = ctx.config.synth
      server = stack.enter_context(serve.Server(
          _local_teacher_model(ctx, local), host="127.0.0.1", port=0,
          model_name=LOCAL_MODEL_NAME, max_batch=int(cfg.local_max_batch)).start())
      values.update(base_url=server.url + "/v1", model=LOCAL_MODEL_NAME,
                    api_key_env="PHI_JAX_LOCAL_TEACHER_KEY")
      print(f"[{NAME}] teacher: phi_jax's server on {server.url} serving {local!r}",
            flush=True)
    try:
      client = LLMClient(LLMConfig.from_mapping(values, where="config.synth.teacher"))
    except ValueError as e:
      raise UsageError(str(e)) from None
    stack.callback(client.close)
    yield client


def run(ctx: Context) -> dict:
  values = synth_values(ctx.config.synth)
  options = synth.SynthConfig.from_mapping(values)
  sandbox = synth.sandbox_for(options.exercises) if options.exercises.count else None
  curated = [p for p in (ctx.path("data", "curated", "code.jsonl"),) if os.path.exists(p)]
  forced = ctx.forced(NAME)
  with teacher_client(ctx) as client:
    return synth.synthesize(values, out_dir(ctx), client, sandbox, curated_paths=curated,
                            force=forced)


def validate(ctx: Context) -> None:
  cfg = ctx.config.synth
  try:
    synth.SynthConfig.from_mapping(synth_values(ctx.config.synth))
  except ValueError as e:
    raise UsageError(str(e)) from None
  if not cfg.local_teacher and not cfg.teacher.model:
    raise UsageError("config.synth: no teacher: set config.synth.teacher.model (and "
                     "teacher.base_url for a server other than OpenAI), or "
                     "config.synth.local_teacher to serve a local model")
  if int(cfg.local_max_batch) < 1:
    raise UsageError(f"config.synth.local_max_batch = {cfg.local_max_batch}: must be >= 1")


def in_run(ctx: Context) -> bool:
  """Whether this run uses the stage's output (selected now, or complete before)."""
  return ctx.complete_or_selected(NAME)


def _partial(ctx: Context) -> str | None:
  raw = os.path.join(out_dir(ctx), "raw")
  return "the teacher's answers so far" if os.path.isdir(raw) and os.listdir(raw) else None


NODES = (Node(name=NAME, run=run, doc="synthetic textbooks and exercises: synthesize/",
              config=("synth",), after=("curate",), validate=validate, partial=_partial,
              interrupted=lambda ctx: "the teacher's answers so far (raw/)",
              # one host asks a remote teacher; a local one is an Orbax checkpoint,
              # which every host loads together
              primary_only=lambda ctx: not ctx.config.synth.local_teacher),)

