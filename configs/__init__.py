"""Run configs: ml_collections files read by absl config_flags (`--config=configs/X.py`)."""
