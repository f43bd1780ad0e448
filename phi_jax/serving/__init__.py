"""The pieces of the OpenAI-compatible server (`phi_jax.serve`), one job each.

  protocol       OpenAI request validation and response bodies (pure functions)
  chat_template  renders chat messages into one prompt; its stop strings
  text_stream    incremental, stop-aware text of a growing token list (streaming)
  scheduler      the thread that owns the model and batches work items continuously
  metrics        counters and histograms in the Prometheus text format
"""
