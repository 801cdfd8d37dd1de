"""The padding-exact Softmax -> MatMul(p, v): the heads' attention over tokens as the unfused
graph writes it (the exporter's SDPA), directly or through Where(IsNaN(p), 0, p)."""

from __future__ import annotations

import numpy as np

from toolchain.errors import ToolchainError
from toolchain.export.padding_exact.emitter import GraphEmitter, chunk_width


def softmax_matmul(em: GraphEmitter, softmax, matmul, nan_to_zero: bool = False) -> None:
    """Softmax(axis -1) -> MatMul(p, v (..., S, d)) with d static; ``nan_to_zero``: the
    probabilities went through Where(IsNaN(p), 0, p) first (the exporter's SDPA: a row with
    every key masked is all NaN), so NaN output rows become 0 as they would."""
    v = matmul.input[1]
    dims = em.dims(v)
    head_dim = dims[-1] if dims and isinstance(dims[-1], int) else None
    chunk = chunk_width(head_dim) if head_dim else None
    if chunk is None or len(dims) < 2:
        raise ToolchainError(f"node {matmul.name}: attention values of shape {dims} are not "
                             f"supported by the padding-exact rewrite")
    p, chunks, rank = em.prefix("softmax"), head_dim // chunk, len(dims)
    lead = list(range(rank - 2))
    values = em.values_and_ones(p, v, [0] * (rank - 1), lead + [rank - 1, rank - 2, rank],
                                chunk)  # (..., chunks + 1, S, w)
    out = em.weighted_sum(p, softmax.input[0], values, chunks)  # (..., chunks, T, w)
    merged = em.op("Transpose", [out], p + "merged", perm=lead + [rank - 1, rank - 2, rank])
    result = em.op("Reshape", [merged, em.const(
        p + "merge", np.array([0] * (rank - 1) + [head_dim]))], p + "out",
        None if nan_to_zero else matmul.output[0])
    if nan_to_zero:
        em.op("Where", [em.op("IsNaN", [result], p + "nan"), em.const(
            p + "nan_zero", np.array(0.0, np.float32)), result], p + "nan_to_zero",
            matmul.output[0])


def nan_guard(softmax, readers: dict[str, list], constants: dict) -> tuple:
    """(IsNaN, Where) if the Softmax's only readers are Where(IsNaN(p), 0, p), else ()."""
    from onnx import numpy_helper

    p = softmax.output[0]
    nodes = {n.op_type: n for n in readers.get(p, [])}
    if len(readers.get(p, [])) != 2 or set(nodes) != {"IsNaN", "Where"}:
        return ()
    is_nan, where = nodes["IsNaN"], nodes["Where"]
    zero = constants.get(where.input[1])
    zero = None if zero is None else numpy_helper.to_array(zero)
    if (readers.get(is_nan.output[0], []) != [where] or where.input[0] != is_nan.output[0]
            or where.input[2] != p or zero is None or zero.size != 1 or zero.item() != 0):
        return ()
    return is_nan, where
