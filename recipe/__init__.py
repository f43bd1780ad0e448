"""The orchestration layer: the recipe's stages and the one runner that schedules them.

The only package (with run.py) that imports all the others: phi_jax (the core
library), eval (the evaluator) and data_pipeline (the data side) sit below it
(docs/architecture.md).
"""
