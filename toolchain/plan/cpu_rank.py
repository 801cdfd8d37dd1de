"""Peak resident memory of one training rank on CPU (the 7B-width rehearsal), from a plan.

On CPU a rank is one process holding what a GPU and its host hold apart: the plan's GPU column
and its CPU (offload) column, plus the Python runtime (torch, transformers, peft, deepspeed and
their kernels: measured here, in this process, since it differs between machines and versions).
Before DeepSpeed partitions it, every rank builds the whole model in fp32 (no ``zero.Init``), so
the rank's peak is the larger of that build and the training steady state.
"""

from __future__ import annotations

import resource

from toolchain.plan.memory import MemoryPlan
from toolchain.plan.settings import DTYPE_BYTES


def runtime_bytes() -> int:
    """Resident bytes of this process once the training stack is imported (its own peak)."""
    import deepspeed  # noqa: F401  (what a rank imports before it builds anything)
    import peft  # noqa: F401
    import transformers  # noqa: F401

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_rank_peak(plan: MemoryPlan, runtime: int | None = None) -> dict[str, int]:
    """{"runtime", "build", "train", "peak"} bytes of one CPU rank.

    build: the runtime plus every parameter in fp32 (the model as built, before partitioning).
    train: the runtime plus the plan's GPU total (the preset's checkpointing choice) and its CPU
    column (offloaded gradients and optimizer state).
    """
    runtime = runtime_bytes() if runtime is None else runtime
    s = plan.settings
    build = plan.counts["total"] * DTYPE_BYTES["fp32"]
    train = plan.total(s.gradient_checkpointing) + sum(r["cpu"] for r in plan.rows)
    return {"runtime": runtime, "build": runtime + build, "train": runtime + train,
            "peak": runtime + max(build, train)}
