"""The synthesis driver: requests -> teacher -> gates -> textbooks.jsonl, exercises.jsonl,
rejected.jsonl and the diversity report.

    client = LLMClient(LLMConfig.from_mapping(config.synth.teacher, "config.synth.teacher"))
    sandbox = sandbox_for(SynthConfig.from_mapping(config.synth).exercises)
    summary = synthesize(config.synth, "workdir/synthesize", client, sandbox,
                         curated_paths=["workdir/data/filtered.jsonl"])

Two phases, each restartable:

1. Ask. Request i of a generator has the id `synth-<generator>-s<seed>-<i:07d>`; its
   topic (topics.py) and its messages (prompts.py) are functions of (seed, generator,
   i) alone. `phi_jax.llm.map_jsonl` sends them with the teacher's client and appends
   each answer, or the teacher's error when its retries ran out, to
   `raw/<generator>.jsonl` as it arrives, so a killed run resumes with the missing ids
   and a complete rerun sends nothing (and the client's cache answers a lost raw file).
   Each raw line carries a fingerprint of its request (model, messages, sampling): a raw
   file from another teacher or prompt is refused before anything is sent, unless
   `force`, which also asks again for the requests whose retries ran out.
2. Judge. The raw answers are read back in request order and put through the gates
   (gates.py); with config.synth.proximity.checks, the samples that pass the static
   gates are checked against the benchmarks (proximity.py); exercises run their own
   tests in the sandbox, whose verdicts are kept in `raw/verdicts.jsonl` (keyed by the
   program) so a rerun does not run them again, and, with exercises.mutants, those that
   pass are mutation-tested (adequacy.py; results in `raw/mutation.jsonl`); the
   duplicate gate keeps the first of each group in request order, then the survivors
   are checked against the curated data. The outputs are then written whole (temp +
   rename), so the final files are a function of the raw answers alone: a rerun, or a
   run killed at any point and restarted, ends with the same files as one that was not.

Every request ends as exactly one line: in textbooks.jsonl (a data_pipeline Record) or
exercises.jsonl (an Exercise) when accepted, in rejected.jsonl ({"id", "generator",
"index", "gate", "reason", "raw", "meta"}) otherwise. Every record's meta holds the seed,
index and topic that produced it, the teacher and the token usage (and, with the
options of docs/synthetic.md, its grounding extract, proximity scores and mutation
result).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from data_pipeline.records import Exercise, Record
from data_pipeline.synth import adequacy, diversity, gates, grounding, prompts, proximity
from data_pipeline.synth import topics
from data_pipeline.synth.parse import Rejected
from eval.sandbox import Sandbox, SandboxLimits
from phi_jax import atomic
from phi_jax.jsonl import read_jsonl
from data_pipeline.synth.config import ExerciseOptions, SynthConfig, TextbookOptions
from phi_jax.llm import LLMClient, LLMConfig, map_jsonl, read_done_ids
from phi_jax.llm import budget
from phi_jax.llm.fanout import accounted_spent
from phi_jax.progress import Progress

VERIFY_CHUNK = 256  # exercises verified per sandbox batch (a kill loses at most one batch)
CHARS_PER_TOKEN = budget.CHARS_PER_TOKEN  # for the estimates (the plan, the start line)


# -- configuration ------------------------------------------------------------------------


def sandbox_for(options: ExerciseOptions) -> Sandbox:
  """The sandbox that verifies exercises, with the limits of config.synth.exercises."""
  limits = SandboxLimits(timeout_s=options.timeout_s, cpu_s=max(1, int(options.timeout_s)),
                         memory_mb=options.memory_mb)
  return Sandbox(limits, isolation=options.isolation)


# -- requests -----------------------------------------------------------------------------


def request_seed(request_id: str) -> int:
  """The sampling seed sent with a request: a function of its id, so a teacher that
  honours seeds (phi_jax's server exactly, OpenAI on a best-effort basis) gives the same
  answer to the same request, however requests are batched or ordered."""
  return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=4).digest(), "little")


def sample_id(generator: str, seed: int, index: int) -> str:
  """The id of request `index` (and of the record it ends as)."""
  return f"synth-{generator}-s{seed}-{index:07d}"


def index_of(sample: str) -> int:
  return int(sample.rsplit("-", 1)[1])


def _fingerprint(model: str, messages: list[dict], params: Mapping[str, Any]) -> str:
  doc = json.dumps({"model": model, "messages": messages, "params": dict(params)},
                   sort_keys=True, ensure_ascii=False)
  return hashlib.sha256(doc.encode("utf-8")).hexdigest()[:16]


class Requests:
  """The requests of one generator: ids, topics, messages and fingerprints by index."""

  def __init__(self, generator: str, seed: int, count: int, teacher: LLMConfig,
               max_tokens: int, corpus: grounding.SeedCorpus | None = None,
               grounding_chars: int = 0):
    self.generator, self.seed, self.count = generator, seed, count
    self.model = teacher.model
    self.params = {**teacher.sampling_defaults(), "max_tokens": max_tokens}
    self.max_tokens = max_tokens
    self.corpus, self.grounding_chars = corpus, grounding_chars

  def grounding(self, index: int) -> dict[str, Any] | None:
    """Request `index`'s seed extract (grounding.py), or None when ungrounded."""
    if self.corpus is None:
      return None
    return self.corpus.extract(self.seed, index, self.grounding_chars)

  def __len__(self) -> int:
    return self.count

  def request(self, index: int) -> dict[str, Any]:
    topic = topics.draw(self.generator, self.seed, index)
    seed = self.grounding(index)
    messages = prompts.messages(self.generator, topic, seed["text"] if seed else None)
    request_id = sample_id(self.generator, self.seed, index)
    params = {**self.params, "seed": request_seed(request_id)}
    request = {"id": request_id, "index": index, "topic": topic, "messages": messages,
               "fingerprint": _fingerprint(self.model, messages, params)}
    if seed is not None:
      request["grounding"] = seed
    return request

  def __iter__(self) -> Iterator[dict[str, Any]]:
    return (self.request(index) for index in range(self.count))

  def build(self, request: Mapping[str, Any]) -> dict[str, Any]:
    """map_jsonl's call: the messages, this generator's max_tokens, and the id as the
    cache variant (two requests that drew the same topic still get two answers)."""
    return {"messages": request["messages"], "max_tokens": self.max_tokens,
            "seed": request_seed(request["id"]), "variant": request["id"]}

  def expected_tokens(self, sample: int = 512) -> tuple[int, int]:
    """(estimated prompt tokens, most completion tokens) of all requests."""
    if not self.count:
      return 0, 0
    n = min(sample, self.count)
    chars = sum(len(m["content"]) for i in range(n) for m in self.request(i)["messages"])
    return round(chars / CHARS_PER_TOKEN * self.count / n), self.count * self.max_tokens


# -- raw answers --------------------------------------------------------------------------


def _raw_path(out_dir: str, generator: str) -> str:
  return os.path.join(out_dir, "raw", f"{generator}.jsonl")


def _is_stale(row: Mapping[str, Any], requests: Requests) -> bool:
  """Whether a raw line answers a request of this run that is now asked differently."""
  try:
    index = index_of(str(row.get("id")))
  except ValueError:
    return False
  return (index < requests.count
          and row["id"] == sample_id(requests.generator, requests.seed, index)
          and row.get("fingerprint") != requests.request(index)["fingerprint"])


def _check_raw(path: str, requests: Requests, force: bool) -> None:
  """Refuses (or, with `force`, drops) raw lines asked with another request."""
  if not os.path.exists(path):
    return
  read_done_ids(path)  # cut a partial last line left by a kill
  stale = [f"{path}:{number} ({row['id']})" for number, row in read_jsonl(path)
           if _is_stale(row, requests)]
  if stale and not force:
    raise ValueError(
        f"{len(stale)} answer(s) in {path} were asked with another teacher model, prompt "
        f"or sampling than this config's (first: {stale[0]}); use another output "
        f"directory, or force to ask again")
  if stale:
    atomic.filter_jsonl(path, lambda row: not _is_stale(row, requests))


def _raw_offsets(path: str) -> dict[str, int]:
  """{id: byte offset of its line} of a raw file (answers arrive out of order)."""
  offsets, position = {}, 0
  with open(path, "rb") as f:
    for line in f:
      if line.strip():
        offsets[json.loads(line)["id"]] = position
      position += len(line)
  return offsets


class _RawReader:
  """Raw answers by id, read by seeking (the file is not held in memory)."""

  def __init__(self, path: str):
    self.path = path
    self.offsets = _raw_offsets(path) if os.path.exists(path) else {}
    self._file = open(path, "rb") if os.path.exists(path) else None

  def __enter__(self) -> _RawReader:
    return self

  def __exit__(self, *exc) -> None:
    if self._file is not None:
      self._file.close()

  def get(self, sample: str) -> dict[str, Any]:
    if sample not in self.offsets:
      raise RuntimeError(f"{self.path}: no answer for {sample}: the ask phase did not finish")
    self._file.seek(self.offsets[sample])
    return json.loads(self._file.readline())


# -- sandbox verdicts ---------------------------------------------------------------------


class VerdictStore:
  """Sandbox verdicts by program (sha256 of the program and the limits), appended to a
  JSONL file as they are found, so a rerun or a restart does not run a program twice."""

  def __init__(self, path: str, limits: SandboxLimits):
    self.path, self.limits = path, limits
    self.verdicts: dict[str, Rejected | None] = {}
    if os.path.exists(path):
      read_done_ids(path)  # cut a partial last line left by a kill
      for _, row in read_jsonl(path):
        self.verdicts[row["id"]] = Rejected(row["gate"], row["reason"]) if "gate" in row else None

  def key(self, program: str) -> str:
    return hashlib.sha256(f"{self.limits}\n{program}".encode("utf-8")).hexdigest()

  def add(self, found: Mapping[str, Rejected | None]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    with open(self.path, "a", encoding="utf-8") as f:
      for key, rejected in found.items():
        row = {"id": key} if rejected is None else {"id": key, "gate": rejected.gate,
                                                    "reason": rejected.reason}
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
      f.flush()
    self.verdicts.update(found)


class MutationStore:
  """Mutation results by program (sha256 of the program, the sandbox limits and the
  mutation settings), appended to a JSONL file as they are found (as VerdictStore)."""

  def __init__(self, path: str, limits: SandboxLimits, seed: int, options: ExerciseOptions):
    self.path = path
    self.settings = (f"{limits}\n{seed}\n{options.mutants}\n{options.mutant_timeout_s}\n"
                     f"{options.timeout_s}")
    self.results: dict[str, adequacy.MutationResult] = {}
    if os.path.exists(path):
      read_done_ids(path)  # cut a partial last line left by a kill
      for _, row in read_jsonl(path):
        self.results[row["id"]] = adequacy.MutationResult.from_json(row)

  def key(self, program: str) -> str:
    return hashlib.sha256(f"{self.settings}\n{program}".encode("utf-8")).hexdigest()

  def add(self, found: Mapping[str, adequacy.MutationResult]) -> None:
    with open(self.path, "a", encoding="utf-8") as f:
      for key, result in found.items():
        f.write(json.dumps({"id": key, **result.to_json()}, ensure_ascii=False) + "\n")
      f.flush()
    self.results.update(found)


# -- the judge phase ----------------------------------------------------------------------


@dataclasses.dataclass
class _Judged:
  """What the gates decided for one generator: {id: None (accepted) | Rejected}."""
  generator: str
  verdicts: dict[str, Rejected | None]
  duplicates: gates.DuplicateGate
  usage: dict[str, int]
  mutation: dict[str, dict] = dataclasses.field(default_factory=dict)  # id -> result JSON
  proximity: dict[str, dict] = dataclasses.field(default_factory=dict)  # id -> scores


def _add_usage(total: dict[str, int], usage: Mapping[str, int] | None) -> None:
  for name in ("prompt_tokens", "completion_tokens"):
    total[name] = total.get(name, 0) + int((usage or {}).get(name, 0))


def _static_gate(generator: str, row: Mapping[str, Any], config: SynthConfig
                 ) -> gates.CheckedExercise | Rejected | None:
  """The gates that do not run code: None or a CheckedExercise (passed), or Rejected."""
  if "error" in row:
    return Rejected("teacher_error", str(row["error"]))
  try:
    if generator == "textbooks":
      options = config.textbooks
      gates.check_textbook(row["raw"], row.get("finish_reason"),
                           min_code_blocks=options.min_code_blocks, min_words=options.min_words)
      return None
    options = config.exercises
    return gates.check_exercise(row["raw"], row.get("finish_reason"),
                                min_tests=options.min_tests,
                                min_docstring_chars=options.min_docstring_chars)
  except Rejected as e:
    return e


def _judge(generator: str, requests: Requests, raw: _RawReader, config: SynthConfig,
           sandbox: Sandbox | None, store: VerdictStore | None,
           mutation_store: MutationStore | None, index, progress: bool) -> _Judged:
  """Pass 1 over one generator's answers, in request order: every gate but the curated
  comparison (which needs all survivors)."""
  duplicates = gates.DuplicateGate(config.near_dup_threshold, config.num_perm)
  verdicts: dict[str, Rejected | None] = {}
  usage: dict[str, int] = {}
  mutation: dict[str, dict] = {}
  near: dict[str, dict] = {}
  meter = Progress(f"synthesize {generator}: gates", requests.count, enabled=progress,
                   unit="samples")
  for start in range(0, requests.count, VERIFY_CHUNK):
    chunk = [sample_id(generator, requests.seed, i)
             for i in range(start, min(start + VERIFY_CHUNK, requests.count))]
    texts: dict[str, str] = {}
    to_run: dict[str, gates.CheckedExercise] = {}
    for sample in chunk:
      row = raw.get(sample)
      _add_usage(usage, row.get("usage"))
      result = _static_gate(generator, row, config)
      if isinstance(result, Rejected):
        verdicts[sample] = result
      elif result is None:
        verdicts[sample], texts[sample] = None, row["raw"]
      else:
        verdicts[sample], texts[sample] = None, result.prompt + result.solution
        to_run[sample] = result
    if index is not None and texts:
      _proximity_gate(generator, texts, to_run, verdicts, near, index)
    if to_run:
      _verify(to_run, verdicts, sandbox, store, config.exercises.workers)
    passed = {sample: exercise for sample, exercise in to_run.items()
              if verdicts[sample] is None}
    if passed and mutation_store is not None:
      _mutation_test(passed, verdicts, mutation, sandbox, mutation_store, config)
    for sample in chunk:  # request order: the first of a duplicate group is kept
      if verdicts[sample] is None:
        verdicts[sample] = duplicates.check(sample, texts[sample])
      meter.advance(accepted=verdicts[sample] is None)
  meter.finish()
  return _Judged(generator, verdicts, duplicates, usage, mutation, near)


def _proximity_gate(generator: str, texts: dict[str, str],
                    to_run: dict[str, gates.CheckedExercise], verdicts: dict, near: dict,
                    index) -> None:
  """The benchmark-proximity gate (proximity.py) on the samples that passed the static
  gates; a rejected exercise is not run."""
  records = [(sample, {"id": sample, "text": text} if generator == "textbooks" else
              {"id": sample, "prompt": to_run[sample].prompt,
               "solution": to_run[sample].solution})
             for sample, text in texts.items()]
  for sample, (rejected, scores) in proximity.check(index, records).items():
    near[sample] = scores
    if rejected is not None:
      verdicts[sample] = rejected
      del texts[sample]
      to_run.pop(sample, None)


def _verify(exercises: Mapping[str, gates.CheckedExercise], verdicts: dict, sandbox: Sandbox,
            store: VerdictStore, workers: int) -> None:
  """Runs the exercises' own tests (those without a stored verdict) in the sandbox."""
  keys = {sample: store.key(exercise.program()) for sample, exercise in exercises.items()}
  missing = [sample for sample in exercises if keys[sample] not in store.verdicts]
  if missing:
    found = gates.verify_exercises(sandbox, [exercises[s] for s in missing],
                                   workers=workers or None)
    store.add({keys[sample]: rejected for sample, rejected in zip(missing, found)})
  for sample in exercises:
    verdicts[sample] = store.verdicts[keys[sample]]


def _mutation_test(exercises: Mapping[str, gates.CheckedExercise], verdicts: dict,
                   mutation: dict, sandbox: Sandbox, store: MutationStore,
                   config: SynthConfig) -> None:
  """The test-adequacy gate (adequacy.py) on exercises that passed their own tests."""
  options = config.exercises
  keys = {sample: store.key(exercise.program()) for sample, exercise in exercises.items()}
  missing = [sample for sample in exercises if keys[sample] not in store.results]
  if missing:
    found = adequacy.mutation_scores(
        sandbox, [(exercises[s].parts.function, exercises[s].program()) for s in missing],
        seed=config.seed, limit=options.mutants, mutant_timeout_s=options.mutant_timeout_s,
        workers=options.workers or None)
    store.add({keys[sample]: result for sample, result in zip(missing, found)})
  for sample in exercises:
    result = store.results[keys[sample]]
    mutation[sample] = result.to_json()
    verdicts[sample] = adequacy.weak_tests(result, options.min_mutation_score)


def curated_documents(paths: Sequence[str]) -> Iterator[tuple[str, str]]:
  """(origin, text) of curated JSONL files: Records ('text') or Exercises ('prompt' +
  'solution'); a line with neither is an error naming path:line."""
  for path in paths:
    for number, row in read_jsonl(path):
      if isinstance(row.get("text"), str):
        text = row["text"]
      elif isinstance(row.get("prompt"), str) and isinstance(row.get("solution"), str):
        text = row["prompt"] + row["solution"]
      else:
        raise ValueError(f"{path}:{number}: a curated record needs 'text' (a Record) or "
                         f"'prompt' and 'solution' (an Exercise)")
      yield str(row.get("id", f"{path}:{number}")), text


# -- outputs ------------------------------------------------------------------------------


def _meta(requests: Requests, row: Mapping[str, Any], model: str) -> dict[str, Any]:
  index = index_of(row["id"])
  meta = {"generator": requests.generator, "seed": requests.seed, "index": index,
          "topic": topics.draw(requests.generator, requests.seed, index), "teacher": model,
          "finish_reason": row.get("finish_reason"), "usage": row.get("usage") or {}}
  seed = requests.grounding(index)
  if seed is not None:
    meta["grounding"] = seed
  return meta


def _write_outputs(out_dir: str, judged: Sequence[_Judged], requests: Mapping[str, Requests],
                   raws: Mapping[str, _RawReader], config: SynthConfig, model: str
                   ) -> dict[str, diversity.Tally]:
  """Pass 2: every request as one record in exactly one of the three files."""
  tallies = {j.generator: diversity.Tally(j.generator, requests[j.generator].count)
             for j in judged}
  paths = {name: os.path.join(out_dir, f"{name}.jsonl")
           for name in ("textbooks", "exercises", "rejected")}
  with atomic.writing(paths["textbooks"], "w") as textbooks, \
      atomic.writing(paths["exercises"], "w") as exercises, \
      atomic.writing(paths["rejected"], "w") as rejected:
    outs = {"textbooks": textbooks, "exercises": exercises}
    for result in judged:
      generator, tally = result.generator, tallies[result.generator]
      for index in range(requests[generator].count):
        sample = sample_id(generator, config.seed, index)
        row = raws[generator].get(sample)
        meta = _meta(requests[generator], row, model)
        if sample in result.mutation:
          meta["mutation"] = result.mutation[sample]
          tally.mutation(result.mutation[sample])
        verdict = result.verdicts[sample]
        if sample in result.proximity:
          meta["proximity"] = result.proximity[sample]
          tally.proximity(meta["topic"], result.proximity[sample],
                          verdict is not None and verdict.gate == proximity.GATE)
        if verdict is not None:
          tally.rejected(verdict.gate)
          line = {"id": sample, "generator": generator, "index": index, "gate": verdict.gate,
                  "reason": verdict.reason, "raw": row.get("raw"), "meta": meta}
          rejected.write(json.dumps(line, ensure_ascii=False) + "\n")
          continue
        record = _accepted_record(generator, sample, row, meta, config)
        tally.accepted(record)
        outs[generator].write(json.dumps(record, ensure_ascii=False) + "\n")
  return tallies


def _accepted_record(generator: str, sample: str, row: Mapping[str, Any],
                     meta: dict[str, Any], config: SynthConfig) -> dict[str, Any]:
  origin = f"synth:{generator}:s{meta['seed']}#{meta['index']}"
  if generator == "textbooks":
    return Record(id=sample, text=row["raw"].strip() + "\n", origin=origin, meta=meta).to_json()
  checked = _static_gate(generator, row, config)  # deterministic: recomputed, not stored
  parts = checked.parts
  meta.update(function=parts.name, doctests=parts.doctests, asserts=list(parts.asserts))
  return Exercise(id=sample, prompt=checked.prompt, solution=checked.solution, origin=origin,
                  meta=meta).to_json()


# -- the entry point ----------------------------------------------------------------------


def _stderr(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def _cost(teacher: LLMConfig, spent: Mapping[str, Mapping[str, int]]) -> float | None:
  """USD of `spent` at the teacher's prices; None when no price is set."""
  if not any(budget.prices(teacher, mode) != (0, 0) for mode in budget.MODES):
    return None
  return round(budget.cost_usd(teacher, spent), 6)


def estimate(cfg: SynthConfig, out_dir: str | None = None) -> dict[str, tuple[int, int, int]]:
  """{generator: (requests still to send, their estimated prompt tokens, their most
  completion tokens)}: what a run would send (answers already in `out_dir`'s raw files
  are not sent again). Prompt tokens are characters / CHARS_PER_TOKEN of a sample of
  the requests' messages, completion tokens the generator's max_tokens."""
  out = {}
  for generator in topics.GENERATORS:
    options = cfg.options(generator)
    reqs = Requests(generator, cfg.seed, options.count, cfg.teacher, options.max_tokens)
    answered = 0
    if out_dir is not None and os.path.exists(_raw_path(out_dir, generator)):
      answered = sum(1 for rid in read_done_ids(_raw_path(out_dir, generator), repair=False)
                     if isinstance(rid, str) and rid.startswith(f"synth-{generator}-s{cfg.seed}-")
                     and index_of(rid) < reqs.count)
    prompt, completion = reqs.expected_tokens()
    if generator == "textbooks" and cfg.textbooks.grounding_chars:
      # each grounded request also carries an extract of up to grounding_chars
      prompt += round(reqs.count * cfg.textbooks.grounding_chars / CHARS_PER_TOKEN)
    left = reqs.count - answered
    out[generator] = (left, round(prompt * left / max(reqs.count, 1)), left * options.max_tokens)
  return out


def synthesize(cfg: SynthConfig | Mapping[str, Any], out_dir: str, client: LLMClient,
               sandbox: Sandbox | None = None, *, curated_paths: Sequence[str] = (),
               benchmarks=None, seed_paths: Sequence[str] = (), force: bool = False,
               progress: bool = True, log: Callable[[str], None] = _stderr) -> dict[str, Any]:
  """Generates, verifies and writes the synthetic textbooks and exercises.

  Args:
    cfg: config.synth: a SynthConfig, or a dict / ConfigDict of one (its `teacher` is the
      client's business).
    out_dir: where textbooks.jsonl, exercises.jsonl, rejected.jsonl, diversity.json,
      diversity.md, summary.json and raw/ (answers, sandbox verdicts) go.
    client: the teacher's LLMClient (its cache makes reruns free).
    sandbox: runs the exercises' tests (sandbox_for(options)); needed when
      exercises.count > 0.
    curated_paths: JSONL files of the curated data (Records or Exercises) the samples
      must not duplicate.
    seed_paths: JSONL Records (the filtered code) the grounding extracts are drawn from;
      needed when textbooks.grounding_chars > 0.
    benchmarks: the decontamination's indexes for the benchmark-proximity gate
      (proximity.load); needed when config.synth.proximity.checks is set.
    force: ask again for requests whose retries ran out, and replace answers that were
      asked with another teacher, prompt or sampling.
    progress: progress lines on stderr.
    log: where the start and end lines go.

  Returns:
    The summary (also written to summary.json): per generator requests, accepted,
    rejected by gate; tokens; requests sent by this call; cost; output paths.
  """
  config = cfg if isinstance(cfg, SynthConfig) else SynthConfig.from_mapping(cfg)
  if config.exercises.count and sandbox is None:
    raise ValueError("synthesize: exercises.count > 0 needs a sandbox to verify them "
                     "(generate.sandbox_for(options))")
  if config.proximity.checks and benchmarks is None:
    raise ValueError("synthesize: proximity.checks is set: it needs the benchmark indexes "
                     "(benchmarks=proximity.load(config.decontaminate, config.synth."
                     "proximity, benchmark_paths))")
  corpus = None
  if config.textbooks.grounding_chars and config.textbooks.count:
    if not seed_paths:
      raise ValueError("synthesize: textbooks.grounding_chars > 0 needs seed_paths (the "
                       "filtered code the extracts are drawn from)")
    corpus = grounding.SeedCorpus(seed_paths)
  os.makedirs(os.path.join(out_dir, "raw"), exist_ok=True)
  model = client.config.model
  requests = {g: Requests(g, config.seed, config.options(g).count, client.config,
                          config.options(g).max_tokens,
                          corpus if g == "textbooks" else None,
                          config.textbooks.grounding_chars) for g in topics.GENERATORS}
  expected = estimate(dataclasses.replace(config, teacher=client.config), out_dir)
  log(f"synthesize: teacher {model!r} at {client.base_url}; the data is only as good as the "
      f"teacher (docs/synthetic.md: pointing at a strong one)")
  for generator, (left, prompt_tokens, completion_tokens) in expected.items():
    log(f"synthesize: {generator}: {requests[generator].count} requests, {left} to send, "
        f"expecting {budget.describe(client.config, left, prompt_tokens, completion_tokens)}")
  stats_before = dataclasses.replace(client.stats)

  for generator, reqs in requests.items():  # phase 1: ask
    path = _raw_path(out_dir, generator)
    _check_raw(path, reqs, force)
    if reqs.count:
      map_jsonl(client, reqs, path, build=reqs.build, keep=("fingerprint",),
                retry_errors=force, record_exhausted=True, progress=progress,
                desc=f"synthesize {generator}", total=reqs.count)

  store = (VerdictStore(os.path.join(out_dir, "raw", "verdicts.jsonl"), sandbox.limits)
           if sandbox is not None else None)
  mutation_store = (MutationStore(os.path.join(out_dir, "raw", "mutation.jsonl"),
                                  sandbox.limits, config.seed, config.exercises)
                    if sandbox is not None and config.exercises.mutants else None)
  with contextlib.ExitStack() as stack:  # phase 2: judge, then write
    raws = {g: stack.enter_context(_RawReader(_raw_path(out_dir, g)))
            for g in topics.GENERATORS}
    judged = [_judge(g, requests[g], raws[g], config, sandbox, store, mutation_store,
                     benchmarks, progress) for g in topics.GENERATORS]
    for result in judged:  # streamed once per generator: the curated data stays on disk
      if curated_paths:
        result.verdicts.update(result.duplicates.against(curated_documents(curated_paths)))
    tallies = _write_outputs(out_dir, judged, requests, raws, config, model)

  usage: dict[str, int] = {}
  for result in judged:
    _add_usage(usage, result.usage)
  sent = {name: getattr(client.stats, name) - getattr(stats_before, name)
          for name in ("requests", "prompt_tokens", "completion_tokens",
                       "batch_prompt_tokens", "batch_completion_tokens")}
  sent_spent = {"online": {"prompt_tokens": sent["prompt_tokens"],
                           "completion_tokens": sent["completion_tokens"]},
                "batch": {"prompt_tokens": sent.pop("batch_prompt_tokens"),
                          "completion_tokens": sent.pop("batch_completion_tokens")}}
  paid = budget.merge(accounted_spent(_raw_path(out_dir, g)) for g in topics.GENERATORS)
  report = {"teacher": model, "seed": config.seed,
            "generators": {g: t.report() for g, t in tallies.items()}}
  atomic.write_json(report, os.path.join(out_dir, "diversity.json"))
  atomic.write_text(os.path.join(out_dir, "diversity.md"), diversity.markdown(report))
  summary = {
      "teacher": model, "seed": config.seed,
      **{g: {k: report["generators"][g][k] for k in
             ("requests", "accepted", "rejected", "rejected_by_gate")} for g in tallies},
      "tokens": usage, "paid_tokens": paid, "sent": sent,
      "cost_usd": _cost(client.config, paid),
      "sent_cost_usd": _cost(client.config, sent_spent),
      "paths": {name: os.path.join(out_dir, f"{name}.jsonl")
                for name in ("textbooks", "exercises", "rejected")},
  }
  atomic.write_json(summary, os.path.join(out_dir, "summary.json"))
  for generator in tallies:
    g = summary[generator]
    gates_line = ", ".join(f"{k} {v}" for k, v in g["rejected_by_gate"].items()) or "none"
    log(f"synthesize: {generator}: {g['accepted']}/{g['requests']} accepted; rejected: "
        f"{gates_line}")
  cost = "" if summary["cost_usd"] is None else (
      f"; cost ${summary['cost_usd']:.2f} (this run ${summary['sent_cost_usd']:.2f})")
  log(f"synthesize: tokens {usage.get('prompt_tokens', 0):,} prompt + "
      f"{usage.get('completion_tokens', 0):,} completion; this run sent {sent['requests']} "
      f"request(s) online, {sent['prompt_tokens']:,} + {sent['completion_tokens']:,} tokens"
      f", and {sent_spent['batch']['prompt_tokens']:,} + "
      f"{sent_spent['batch']['completion_tokens']:,} tokens in batches{cost}")
  return summary
