"""Where the project's data files and the fetched assets live."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The repository root: presets/, ds_configs/, export/ and benchmarks/ live there.

    ``POOLATTN_ROOT`` overrides it (for a non-editable install).
    """
    return Path(os.environ.get("POOLATTN_ROOT", Path(__file__).resolve().parents[1]))


def assets_dir() -> Path:
    """Cache of assets fetched from package registries (tokenizers, converted GGUF weights).

    ``POOLATTN_ASSETS`` overrides the default ``<root>/assets`` (git-ignored).
    """
    return Path(os.environ.get("POOLATTN_ASSETS", project_root() / "assets"))


def runs_dir() -> Path:
    """Root of run outputs: runs/<preset>/<variant>/. ``POOLATTN_RUNS`` overrides it."""
    return Path(os.environ.get("POOLATTN_RUNS", project_root() / "runs"))
