"""ONNX Runtime sessions as the Embedder (and the export's verification) open them: one place
that maps a manifest's ``session`` settings and a provider choice onto an InferenceSession."""

from __future__ import annotations

import os
from pathlib import Path

from toolchain.errors import ToolchainError

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def resolve_threads(threads: int | None) -> int:
    return int(threads) if threads else (os.cpu_count() or 1)


def ort_session(model, session: dict | None, provider: str = "cpu", threads: int | None = None,
                config: dict | None = None):
    """An ORT InferenceSession over a path or serialized model; returns (session, provider used).

    Args:
        model: path to model.onnx, or model bytes.
        session: the manifest's ``session`` settings (graph_optimization_level).
        provider: "auto" (CUDA when onnxruntime-gpu sees a GPU, else CPU), "cpu" or "cuda".
        threads: intra-op threads; None = all cores.
        config: extra ORT session config entries.

    Raises:
        ToolchainError: unknown provider, or "cuda" asked for but not usable.
    """
    import onnxruntime as ort

    if provider not in ("auto", *PROVIDERS):
        raise ToolchainError(f"provider must be auto, cpu or cuda, got {provider!r}")
    wanted = ["cpu"]
    if provider in ("auto", "cuda") and PROVIDERS["cuda"] in ort.get_available_providers():
        wanted = ["cuda", "cpu"]
    if provider == "cuda" and wanted[0] != "cuda":
        raise ToolchainError("provider cuda: onnxruntime has no CUDAExecutionProvider "
                             "(install the gpu extra: make venv ORT_EXTRA=gpu)")
    options = session_options(session, resolve_threads(threads))
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    model = str(model) if isinstance(model, Path) else model
    sess = ort.InferenceSession(model, options, providers=[PROVIDERS[p] for p in wanted])
    used = "cuda" if sess.get_providers()[0] == PROVIDERS["cuda"] else "cpu"
    if provider == "cuda" and used != "cuda":
        raise ToolchainError("provider cuda: the CUDA provider failed to start (see ORT log)")
    return sess, used


def session_options(profile_session: dict | None, threads: int):
    """onnxruntime.SessionOptions from a manifest's/profile's ``session`` mapping."""
    import onnxruntime as ort

    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[(profile_session or {}).get(
        "graph_optimization_level", "all")]
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: fp16 on CPU warns per node otherwise
    return options
