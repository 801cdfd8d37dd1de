"""Shared fixtures: tiny real-architecture models built from config with real tokenizers."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

TINY_PRESETS = ("tiny-mistral", "tiny-qwen2", "tiny-llama")

TEXTS = [
    "The cat sat on the mat.",
    "Pooling and attention: what are effective designs for LLM-based embedding models?",
    "short",
    "A considerably longer sentence, written so that it needs more tokens than the others do, "
    "which forces padding on every partner in the batch.",
]


LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")


@contextlib.contextmanager
def launcher_variables_restored():
    """A single-process DeepSpeed group sets the launcher variables: put back what was there."""
    saved = {key: os.environ.get(key) for key in LAUNCHER_VARIABLES}
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return list(TEXTS)
