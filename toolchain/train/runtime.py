"""What a training run runs on: the model's position limit, the attention kernel of its steps
and the memory they reach."""

from __future__ import annotations

import contextlib
import resource
from typing import ContextManager

import torch

from toolchain.errors import ToolchainError
from toolchain.modeling.backbone import ARCHITECTURES
from toolchain.presets import Preset


def attention_kernel(device: torch.device, precision: str) -> ContextManager:
    """The SDPA kernel for training forwards: the math kernel for bf16 on CPU, whose flash
    kernel's backward was 2x slower than math there (profiled at the SmolLM2 study shape:
    18 % of the step); elsewhere PyTorch's own choice."""
    if device.type == "cpu" and precision == "bf16":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """This rank's peak resident memory, and on a GPU its peak allocated CUDA memory (MiB):
    what `poolattn plan` predicts (benchmarks/gpu/run_gpu_validation.py compares them)."""
    row = {"peak_rss_mb": peak_rss_mb()}
    if device.type == "cuda":
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return row


def max_positions(preset: Preset) -> int | None:
    """The backbone's max_position_embeddings, read without building it where possible."""
    spec = preset.backbone
    if spec.source == "config" and spec.architecture in ARCHITECTURES:
        config_cls = ARCHITECTURES[spec.architecture][0]
        return int(config_cls(**spec.config).max_position_embeddings)
    return None  # other sources: checked once the backbone is loaded, still before the engine


def check_max_length(max_length: int, positions: int | None, where: str) -> None:
    """Refuse a max_length beyond the model's positions (``positions`` None: not known yet)."""
    if positions is not None and max_length > positions:
        raise ToolchainError(f"{where}: max_length {max_length} exceeds the model's "
                             f"max_position_embeddings {positions}")
