"""`config.data`: the data stage's settings (docs/data.md), as typed schemas.

Raw code -> clean, dedup -> annotate -> embed -> classifier -> filtered code; tokenizer;
exercises; tokenized datasets that training reads by name. phi_jax/settings.py has the
kind rule: where the curate step runs and how many documents are embedded at a time
are operational; what is read, filtered, labelled, kept and tokenized is not.
"""

from __future__ import annotations

import dataclasses

from phi_jax.settings import (OPERATIONAL, at_least, boolean, each, in_range,
                              one_of, setting, text)

ANNOTATORS = ("auto", "llm", "heuristic")
RUNNERS = ("local", "datatrove")
NAMED_SOURCES = ("installed", "stdlib", "site-packages")


@dataclasses.dataclass(frozen=True)
class QualitySettings:
  """`config.data.quality`: the educational-value filter (annotate, embed, classify)."""
  annotator: str = setting(
      "auto", "who labels the educational value of the annotated sample: 'llm' "
      "(config.llm), 'heuristic' (an offline proxy score), 'auto' (llm when config.llm.model "
      "is set)", check=one_of(*ANNOTATORS))
  annotate: int = setting(2000, "how many documents (a seeded sample) are annotated",
                          check=at_least(1))
  label_threshold: float = setting(0.5, "annotation score (0..1) at or above which a label "
                                   "is 1", check=in_range(0, 1))
  keep_threshold: float = setting(0.5, "keep documents whose classifier score is at or above "
                                  "this", check=in_range(0, 1))
  embed_model: str = setting(
      "", "the embedding model: a phi_jax checkpoint, transformers dir or repo id; '' = a "
      "random-init model of config.model's shape with the byte-level tokenizer (random "
      "features: point it at a pretrained model for the real recipe)", check=text())
  embed_max_len: int = setting(512, "tokens per document embedded (truncated)",
                               check=at_least(1))
  embed_batch_size: int = setting(32, "documents embedded together (split over local "
                                  "devices)", kind=OPERATIONAL, check=at_least(1))
  embed_dtype: str = setting("", "the embedder's compute dtype: '' = the model's, or "
                             "'bfloat16'", check=one_of("", "float32", "bfloat16", "float16"))
  score_chunk_size: int = setting(
      4096, "documents embedded and scored at a time by the classify step (its memory "
      "bound: no step holds the whole corpus's embeddings)", kind=OPERATIONAL,
      check=at_least(1))
  n_estimators: int = setting(200, "random forest trees", check=at_least(1))
  max_depth: int = setting(0, "random forest depth limit (0 = none)", check=at_least(0))
  test_fraction: float = setting(0.2, "annotated documents held out to score the classifier",
                                 check=in_range(0, 1, low_open=True, high_open=True))


@dataclasses.dataclass(frozen=True)
class TokenizerSettings:
  """`config.data.tokenizer`."""
  spec: str = setting(
      "train", "'train' = a byte-level BPE trained on the kept data; or a tokenizer.json, a "
      "model dir or a hub repo id (phi-1: the CodeGen tokenizer)", check=text())
  vocab_size: int = setting(51200, "'train': the BPE vocabulary size (incl. specials)",
                            check=at_least(1))

  def inert(self) -> set[str]:
    return {"vocab_size"} if self.spec != "train" else set()


@dataclasses.dataclass(frozen=True)
class DataSettings:
  """`config.data`: the data stage."""
  sources: tuple[str, ...] = setting(
      ("installed",), "source specs: 'installed' (this Python's stdlib + site-packages: real "
      "code, offline), 'stdlib', a directory of .py files, a .jsonl file, a glob of "
      ".jsonl/.parquet files, or 'hf:<dataset>[:<data_dir>]' (a Hugging Face dataset, "
      "streamed; online)", check=each(text(), non_empty=True))
  max_files: int = setting(0, "read at most N documents per source (a seeded sample; 0 = all)",
                           check=at_least(0))
  text_field: str = setting("text", "JSONL / HF sources: the field holding the code",
                            check=text())
  license_field: str = setting("license", "JSONL / HF sources: the license field ('' = none)",
                               check=text())
  hf_split: str = setting("train", "HF sources: the split to stream", check=text())
  max_chars: int = setting(100_000, "drop documents longer than this (data dumps, vendored "
                           "bundles)", check=at_least(1))
  near_dup_threshold: float = setting(0.8, "MinHash LSH Jaccard threshold of near-duplicates "
                                      "(5-grams)", check=in_range(0, 1, low_open=True))
  num_perm: int = setting(128, "MinHash permutations", check=at_least(2))
  runner: str = setting(
      "local", "where the curate step runs (docs/data_at_scale.md): 'local' (in this process) "
      "or 'datatrove' (datatrove's executor; the same documents and stats)", kind=OPERATIONAL,
      check=one_of(*RUNNERS))
  runner_workers: int = setting(0, "'datatrove': worker processes (0 = one per core)",
                                kind=OPERATIONAL, check=at_least(0))
  runner_shard_files: int = setting(200, "'datatrove': files per shard (task) of a file source",
                                    kind=OPERATIONAL, check=at_least(1))
  textbooks: tuple[str, ...] = setting(
      (), "more JSONL files of textbooks ({'id','text',...}) for phi1_textbooks, beside what "
      "the synthesize stage writes", check=each(text()))
  exercises: tuple[str, ...] = setting(
      (), "more JSONL files of exercises ({'id','prompt','solution',...}) for phi1_exercises, "
      "beside what the synthesize stage writes", check=each(text()))
  allow_partial_mixtures: bool = setting(
      False, "a mixture may leave out components the data stage did not build (no input): "
      "False = an error naming the component (the paper's runs)", check=boolean())
  validation_fraction: float = setting(0.02, "fraction of each dataset's documents held out",
                                       check=in_range(0, 1, high_open=True))
  fim_rate: float = setting(
      0.0, "fill-in-the-middle (beyond the paper; docs/fim.md): the probability that a "
      "document of the text datasets is cut into prefix, middle and suffix and trained "
      "middle-last. 0 = off (the paper)", check=in_range(0, 1))
  fim_spm_rate: float = setting(
      0.5, "the share of FIM documents in SPM (suffix, prefix, middle) rather than PSM order "
      "(the FIM paper's joint training: 0.5); no effect when fim_rate is 0",
      check=in_range(0, 1))
  quality: QualitySettings = setting(doc="the educational-value filter",
                                     factory=QualitySettings)
  tokenizer: TokenizerSettings = setting(doc="the tokenizer", factory=TokenizerSettings)

  def inert(self) -> set[str]:
    """Fields with no effect here: the FIM split without FIM; the record fields and the
    split of sources that have none (this Python's files, a directory of .py files)."""
    inert = {"fim_spm_rate"} if self.fim_rate == 0 else set()
    if not any(s.startswith("hf:") for s in self.sources):
      inert.add("hf_split")
    if not any(s.startswith("hf:") or s.endswith((".jsonl", ".jsonl.gz", ".parquet"))
               or "*" in s for s in self.sources):
      inert |= {"text_field", "license_field"}
    return inert

