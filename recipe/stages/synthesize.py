"""Stage `synthesize`: synthetic textbooks and CodeExercises from a teacher LLM.

Writes WORKDIR/synthesize/{textbooks,exercises,rejected}.jsonl, diversity.{json,md} and
summary.json (data_pipeline/synth, docs/synthetic.md). The teacher is
`config.synth.teacher` (any OpenAI-compatible endpoint), or, with
`config.synth.local_teacher` set, phi_jax's own server started on loopback for the
stage: 'random' serves a random model of config.model's shape with the byte-level
tokenizer (an offline run that exercises the whole path; nearly everything it writes
is rejected), a path serves that checkpoint or transformers directory.

With config.synth.proximity.checks set, samples near a benchmark problem are rejected as
they are generated, by the decontamination's indexes (config.decontaminate's benchmarks
and index settings, the benchmark files of config.eval: the decontaminate stage's
`benchmark_paths`, built with the options the evaluator builds them with:
`benchmark_options`), which the node then reads.

With config.synth.textbooks.grounding_chars set, each textbook request carries an
extract of the filtered code (WORKDIR/data/curated/filtered_code.jsonl, after the
classify step) as a seed, recorded in the record's meta['grounding'].

The data steps after it read the accepted sets: `phi1_textbooks` and `phi1_exercises`
are built from them (plus config.data.textbooks / exercises).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os

from data_pipeline import synth
from phi_jax import checkpoint, hosts, pretrained, serve
from phi_jax import settings as settings_lib
from phi_jax.digest import file_sha256
from phi_jax import tokenizer as tokenizer_lib
from phi_jax.config import PhiConfig
from phi_jax.cli import UsageError
from phi_jax.llm import LLMClient
from recipe.runner import Context, Node
from recipe.stages import decontaminate as decontaminate_stage

NAME = "synthesize"
# the fields of config.decontaminate that define the indexes the proximity gate uses
PROXIMITY_INDEX_FIELDS = ("benchmarks", "ngram_n", "ngram_unit", "ngram_fields",
                          "ast_min_nodes")
LOCAL_MODEL_NAME = "phi-jax-local-teacher"
RANDOM_TEACHER = "random"


def out_dir(ctx: Context) -> str:
  return ctx.node_dir(NAME)


def textbooks_path(ctx: Context) -> str:
  return os.path.join(out_dir(ctx), "textbooks.jsonl")


def exercises_path(ctx: Context) -> str:
  return os.path.join(out_dir(ctx), "exercises.jsonl")


def filtered_path(ctx: Context) -> str:
  """The filtered code (the data stage's classify step), the grounding extracts' corpus."""
  return ctx.path("data", "curated", "filtered_code.jsonl")


def _after(ctx: Context) -> tuple[str, ...]:
  """After curate (its curated code is what samples must not duplicate); grounded, also
  after classify (its filtered code seeds the textbook requests)."""
  return ("curate", "classify") if ctx.settings.synth.textbooks.grounding_chars else ("curate",)


def random_teacher_config(model: PhiConfig) -> PhiConfig:
  """The random local teacher: config.model's shape with the byte-level tokenizer."""
  byte_level = tokenizer_lib.byte_level()
  # byte-level prompts are long: a context of at least 4096 tokens
  return model.replace(vocab_size=max(model.vocab_size, byte_level.vocab_size),
                       max_seq_len=max(model.max_seq_len, 4096), dtype="float32",
                       param_dtype="float32", attention="xla", embed_dropout=0.0,
                       attention_dropout=0.0, residual_dropout=0.0)


def local_teacher_identity(spec: str, model: PhiConfig, seed: int) -> dict:
  """What identifies the local teacher's answers: the random model's shape and seed, or
  the served checkpoint's fingerprint (its files' digests)."""
  if spec == RANDOM_TEACHER:
    return {"random": settings_lib.output_values(random_teacher_config(model)), "seed": seed}
  return {"checkpoint": checkpoint_digest(spec)}


def checkpoint_digest(path: str) -> str:
  """The sha256 of a model directory's files (names and contents), or 'missing'."""
  if not os.path.exists(path):
    return "missing"
  digest = hashlib.sha256()
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      full = os.path.join(root, name)
      digest.update(os.path.relpath(full, path).encode() + b"\0")
      digest.update(file_sha256(full).encode())
  return digest.hexdigest()


def _local_teacher_model(ctx: Context, spec: str, model: PhiConfig, seed: int):
  """The model phi_jax's server serves as the teacher (see the module docstring)."""
  if spec != RANDOM_TEACHER:
    return serve.load_model(spec, "float32")
  config = random_teacher_config(model)
  root = os.path.join(out_dir(ctx), "local_teacher")
  if not checkpoint.steps(root):
    params = pretrained.params_of(pretrained.init_model(config, seed))
    checkpoint.save(root, 0, params, config, tokenizer=tokenizer_lib.byte_level(),
                    source="random_init")
  return serve.load_model(root, "float32")


@contextlib.contextmanager
def teacher_client(ctx: Context, cfg: synth.SynthConfig, model: PhiConfig | None):
  """The LLM client of the teacher (and the local server, when one is configured)."""
  teacher = cfg.teacher.replace(cache_dir=cfg.teacher.cache_dir or ctx.path("llm_cache"))
  with contextlib.ExitStack() as stack:
    local = cfg.local_teacher
    if local:
      server = stack.enter_context(serve.Server(
          _local_teacher_model(ctx, local, model, cfg.seed), host="127.0.0.1", port=0,
          model_name=LOCAL_MODEL_NAME, max_batch=cfg.local_max_batch).start())
      identity = json.dumps(local_teacher_identity(local, model, cfg.seed), sort_keys=True)
      teacher = teacher.replace(base_url=server.url + "/v1", model=LOCAL_MODEL_NAME,
                                api_key_env="PHI_JAX_LOCAL_TEACHER_KEY",
                                model_identity=hashlib.sha256(identity.encode()).hexdigest())
      print(f"[{NAME}] teacher: phi_jax's server on {server.url} serving {local!r}",
            flush=True)
    try:
      client = LLMClient(teacher)
    except ValueError as e:
      raise UsageError(str(e).replace("LLMConfig", "config.synth.teacher", 1)) from None
    stack.callback(client.close)
    yield client


def run(ctx: Context, reads: dict) -> dict | None:
  """With a local teacher on several hosts (the node runs on every host): every host
  loads the teacher's checkpoint (an Orbax restore is a collective of the job), and
  process 0 alone serves it, generates and writes."""
  cfg: synth.SynthConfig = reads["synth"]
  if hosts.index() != 0:
    _local_teacher_model(ctx, cfg.local_teacher, reads.get("model"), cfg.seed)
    return None
  sandbox = synth.sandbox_for(cfg.exercises) if cfg.exercises.count else None
  curated = [p for p in (ctx.path("data", "curated", "code.jsonl"),) if os.path.exists(p)]
  forced = ctx.forced(NAME)
  benchmarks = None
  if cfg.proximity.checks:
    from data_pipeline.synth import proximity  # pylint: disable=g-import-not-at-top
    benchmarks = proximity.load(reads["decontaminate"], cfg.proximity,
                                reads["benchmark_paths"], reads.get("benchmark_options"))
  seeds = [filtered_path(ctx)] if cfg.textbooks.grounding_chars else []
  with teacher_client(ctx, cfg, reads.get("model")) as client:
    return synth.synthesize(cfg, out_dir(ctx), client, sandbox, curated_paths=curated,
                            benchmarks=benchmarks, seed_paths=seeds, force=forced)


def validate(ctx: Context) -> None:
  cfg = ctx.settings.synth
  if not cfg.local_teacher and not cfg.teacher.model:
    raise UsageError("config.synth: no teacher: set config.synth.teacher.model (and "
                     "teacher.base_url for a server other than OpenAI), or "
                     "config.synth.local_teacher to serve a local model")


def _reads(ctx: Context) -> dict:
  """config.synth; with the random local teacher also config.model (its shape); with a
  served checkpoint its files' fingerprint; with the proximity gate the decontamination's
  index settings, the benchmark files and the options the benchmarks are built with."""
  cfg = ctx.settings.synth
  reads: dict = {"synth": cfg}
  if cfg.proximity.checks:
    fields = PROXIMITY_INDEX_FIELDS if "ast" in cfg.proximity.checks else tuple(
        f for f in PROXIMITY_INDEX_FIELDS if f != "ast_min_nodes")
    if "ngram" not in cfg.proximity.checks:
      fields = tuple(f for f in fields if not f.startswith("ngram_"))
    # the values themselves: what the gate uses, whichever checks the decontaminate
    # stage itself runs
    reads["decontaminate"] = {f: getattr(ctx.settings.decontaminate, f) for f in fields}
    reads["benchmark_paths"] = decontaminate_stage.benchmark_paths(ctx)
    options = decontaminate_stage.benchmark_options(ctx)
    if options:  # the problems the run evaluates (long-context's files, MBPP's prompts)
      reads["benchmark_options"] = options
  if cfg.local_teacher == RANDOM_TEACHER:
    reads["model"] = random_teacher_config(ctx.settings.model)
  elif cfg.local_teacher:
    reads["local_teacher"] = {"checkpoint": checkpoint_digest(cfg.local_teacher)}
  return reads


def estimate(ctx: Context, reads: dict) -> list[str]:
  """What the stage would send to its teacher (tokens; cost at the teacher's prices)."""
  from data_pipeline.synth import generate  # pylint: disable=g-import-not-at-top
  from phi_jax.llm import budget  # pylint: disable=g-import-not-at-top
  cfg: synth.SynthConfig = reads["synth"]
  return [f"{generator}: {budget.describe(cfg.teacher, *numbers)}"
          for generator, numbers in generate.estimate(cfg, out_dir(ctx)).items() if numbers[0]]


def _files(ctx: Context) -> list[str]:
  """The benchmark files the proximity gate reads."""
  if not ctx.settings.synth.proximity.checks:
    return []
  return sorted(p for p in decontaminate_stage.benchmark_paths(ctx).values()
                if os.path.isfile(p))


def in_run(ctx: Context) -> bool:
  """Whether this run uses the stage's output (selected now, or complete before)."""
  return ctx.complete_or_selected(NAME)


def _partial(ctx: Context) -> str | None:
  raw = os.path.join(out_dir(ctx), "raw")
  return "the teacher's answers so far" if os.path.isdir(raw) and os.listdir(raw) else None


NODES = (Node(name=NAME, run=run, doc="synthetic textbooks and exercises: synthesize/",
              reads=_reads, after=_after, validate=validate, partial=_partial,
              estimate=estimate, files=_files,
              interrupted=lambda ctx: "the teacher's answers so far (raw/)",
              # one host asks a remote teacher; a local one is an Orbax checkpoint,
              # which every host loads together
              primary_only=lambda ctx: not ctx.settings.synth.local_teacher),)
