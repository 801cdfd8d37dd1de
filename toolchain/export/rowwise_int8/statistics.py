"""Calibration statistics of the tensors the row-wise int8 rewrite quantises, measured with ORT:
each channel's max |x| (smoothing, outlier channels) and the Gram matrix X^T X (GPTQ rounding),
and the in-memory sessions that the statistics and the fp32-group search run."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from toolchain.export.graph_files import save_graph
from toolchain.export.onnx_export import MODEL_FILE
from toolchain.ort_session import ort_session

PROTOBUF_BYTES = 2**31 - 2**26  # what one serialised graph may hold, with room for its nodes


def in_memory_session(model, settings: dict | None):
    """An ORT session over an onnx.ModelProto held in memory, which it consumes (both callers
    drop the graph once the session exists). Past protobuf's 2 GiB (a model of ~0.5B parameters
    in fp32) it cannot be serialised: it goes through a scratch file with external data instead,
    and saving strips the tensors it moves out of ``model`` (no copy of the weights is made)."""
    if sum(len(i.raw_data) for i in model.graph.initializer) < PROTOBUF_BYTES:
        return ort_session(model.SerializeToString(), settings)[0]
    with tempfile.TemporaryDirectory(prefix="rowwise-") as scratch:
        save_graph(model, Path(scratch), external=True)
        return ort_session(Path(scratch) / MODEL_FILE, settings)[0]


def channel_absmax(model_path: Path, feeds: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    """max |x_j| per channel (last axis) of each named tensor over ``feeds``, from ORT."""
    return channel_statistics(model_path, feeds, names)[0]


def channel_statistics(model_path: Path, feeds: list[dict], names: list[str],
                       gram_rows: list[dict] | None = None
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Of each named tensor (channels on its last axis), from ORT: max |x_j| per channel over
    ``feeds``, and, given ``gram_rows``, the Gram matrix X^T X of its real tokens over ``feeds``
    and ``gram_rows`` (one session, one run a feed)."""
    import onnx

    model = onnx.load(str(model_path))
    for name in names:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    # unoptimised, so that ORT's fusions cannot swallow the tensors we read
    session = in_memory_session(model, {"graph_optimization_level": "disable"})
    absmax: dict[str, np.ndarray] = {}
    gram: dict[str, np.ndarray] = {}
    for index, feed in enumerate(feeds + (gram_rows or [])):
        real = feed["attention_mask"].reshape(-1).astype(bool)
        for name, value in zip(names, session.run(names, feed)):
            rows = value.reshape(-1, value.shape[-1])
            if index < len(feeds):
                row = np.abs(rows).max(0)
                absmax[name] = np.maximum(absmax[name], row) if name in absmax else row
            if gram_rows is not None:
                # a token-shaped tensor's padded rows carry nothing the model uses
                rows = (rows[real] if len(rows) == len(real) else rows).astype(np.float64)
                gram[name] = gram.get(name, 0) + rows.T @ rows
    return absmax, (gram if gram_rows is not None else None)
