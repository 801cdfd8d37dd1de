"""The padding-exact sum over tokens: ReduceSum over axis 1 of a (B, tokens, W > 1) tensor (a
masked mean's numerator) as one exact MatMul chain per output."""

from __future__ import annotations

import numpy as np

from toolchain.errors import ToolchainError
from toolchain.export.padding_exact.emitter import GraphEmitter, chunk_width


def token_sum(em: GraphEmitter, node) -> None:
    """ReduceSum(x (B, T, W), axes [1]) as ones (w, T) @ x in column chunks (B, W/w, T, w),
    first row. (x^T @ ones would read x through a transpose, which ORT fuses into its
    MatMul, and the fused kernel is not one chain per output: measured.)"""
    from onnx import helper

    width = (em.dims(node.input[0]) or [None])[-1]
    chunk = chunk_width(width) if isinstance(width, int) else None
    if chunk is None:
        raise ToolchainError(f"node {node.name}: a sum over tokens of width {width} is not "
                             f"supported by the padding-exact rewrite")
    p = em.prefix("token_sum")
    keepdims = next((helper.get_attribute_value(a) for a in node.attribute
                     if a.name == "keepdims"), 1)
    columns = em.op("Transpose", [em.op("Reshape", [node.input[0], em.const(
        p + "split", np.array([0, 0, width // chunk, chunk]))], p + "chunked")],
        p + "columns", perm=[0, 2, 1, 3])  # (B, W/w, T, w)
    tokens = em.op("Slice", [em.op("Shape", [node.input[0]], p + "shape"),
                             em.const(p + "one", np.array([1])),
                             em.const(p + "two", np.array([2]))], p + "tokens")
    ones = em.op("Expand", [em.one, em.op("Concat", [em.const(
        p + "rows", np.array([chunk])), tokens], p + "ones_shape", axis=0)], p + "ones")
    sums = em.op("MatMul", [ones, columns], p + "sums")  # (B, W/w, w, w), rows equal
    first = em.op("Slice", [sums, em.const(p + "zero", np.array([0])), p + "one",
                            em.const(p + "row_axis", np.array([2]))], p + "first")
    shape = [0, 1, width] if keepdims else [0, width]
    em.op("Reshape", [first, em.const(p + "out_shape", np.array(shape))], p + "out",
          node.output[0])


def is_token_sum(em: GraphEmitter, node) -> bool:
    if node.op_type != "ReduceSum" or len(node.input) < 2:
        return False
    axes = em.constants.get(node.input[1])
    dims = em.dims(node.input[0])
    # width 1 is the mask's token count: an integer sum, exact in any order
    return (axes is not None and dims is not None and len(dims) == 3
            and list(em.numpy_helper.to_array(axes)) in ([1], [-2])
            and isinstance(dims[1], str) and dims[2] != 1)
