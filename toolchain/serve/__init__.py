"""`poolattn serve`: an artifact behind LitServe (FastAPI/uvicorn, dynamic batching), speaking
OpenAI's ``POST /v1/embeddings`` and TEI's ``POST /embed``.

Why LitServe and not Ray Serve / PyTriton / BentoML: benchmarks/results/serve_load.md.
"""

from toolchain.serve.settings import ServeSettings

__all__ = ["ServeSettings"]
