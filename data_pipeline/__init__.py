"""Data curation for the phi-1 recipe (sources, dedup, educational-value filter,
tokenizer training, TFDS ArrayRecord builders, SeqIO tasks, the grain loader,
decontamination). TensorFlow, TFDS and SeqIO are imported only inside this package,
never on the model, training or evaluation path.
"""
