"""What a training step runs on: the attention kernel it uses and the memory it reaches."""

from __future__ import annotations

import contextlib
import resource
from typing import ContextManager

import torch


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
