"""Stage `serve`: the run's latest model behind the OpenAI-compatible HTTP server.

A service, not a build step: it runs until SIGINT/SIGTERM and writes no completion
marker, so it is never skipped and is not in any config's default stage list:

    python run.py --stages=serve [--config.serve.port=8000]
"""

from __future__ import annotations

from phi_jax import serve
from phi_jax.stages.base import Context, Stage


class ServeStage(Stage):
  name = "serve"
  config_sections = ("serve",)
  model_section = "serve"
  writes_marker = False

  def run(self, ctx: Context) -> dict:
    cfg = ctx.config.serve
    path, _ = self.model_checkpoint(ctx)
    model = serve.load_model(path, cfg.dtype or None)
    server = serve.Server(model, host=cfg.host, port=cfg.port, model_name=cfg.model_name or path,
                          max_batch=cfg.max_batch, chunk_size=cfg.chunk_size)
    serve.serve_until_signalled(server)
    return {"served": path}
