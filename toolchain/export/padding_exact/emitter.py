"""The padding-exact rewrites' emitter: new nodes and initialisers with unique names, the graph's
static shapes, and the exact weighted sum over tokens that the attention rewrites share (why it
is exact: toolchain/export/padding_exact/__init__.py)."""

from __future__ import annotations

import numpy as np

CHUNK_WIDTH = 16
MAX_EXACT_TOKENS = 1024  # MLAS's K block at N <= CHUNK_WIDTH (padding_exact/__init__.py)


def chunk_width(head_dim: int) -> int | None:
    """The widest divisor of ``head_dim`` in [2, CHUNK_WIDTH] (None if there is none)."""
    return next((w for w in range(CHUNK_WIDTH, 1, -1) if head_dim % w == 0), None)


class GraphEmitter:
    """Emits the new nodes and initialisers with unique names, with the graph's static shapes."""

    def __init__(self, model) -> None:
        from onnx import numpy_helper

        self.numpy_helper = numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self.shapes = {v.name: v.type.tensor_type.shape for v in (
            *model.graph.value_info, *model.graph.input, *model.graph.output)}
        self.constants = {i.name: i for i in model.graph.initializer}
        self.producers = {o: n for n in model.graph.node for o in n.output}
        self.tiled: dict[tuple[str, int], str] = {}  # (attention bias, groups) -> its tiling
        self.index = 0
        self.one = self.const("px_one", np.array(1.0, np.float32))
        self.last = self.const("px_last", np.array([-1], np.int64))

    def const(self, name: str, value) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, kind: str, inputs: list[str], name: str, output: str | None = None,
           **attrs) -> str:
        from onnx import helper

        output = output or name
        self.nodes.append(helper.make_node(kind, inputs, [output], name=name, **attrs))
        return output

    def dims(self, name: str) -> list | None:
        """Static dims (int) or symbols (str) of a value, None if unknown."""
        shape = self.shapes.get(name)
        if shape is None:
            return None
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in shape.dim]

    def prefix(self, kind: str) -> str:
        self.index += 1
        return f"px{self.index}_{kind}_"

    def values_and_ones(self, p: str, v: str, lead: list[int], perm: list[int],
                        chunk: int) -> str:
        """v (..., d) with a chunk of ones after its d columns, split into chunks of ``chunk``
        columns: Pad, Reshape (``lead`` zeros, then (chunks + 1, chunk)), Transpose ``perm``."""
        padded = self.op("Pad", [v, self.const(p + "pads", np.array([0, chunk])), self.one,
                                 self.last], p + "padded")
        return self.op("Transpose", [self.op("Reshape", [padded, self.const(
            p + "split_chunks", np.array([0] * len(lead) + [-1, chunk]))], p + "v")],
            p + "values_and_ones", perm=perm)

    def weighted_sum(self, p: str, scores: str, values: str, chunks: int) -> str:
        """softmax(scores) @ v as e @ [v | 1]: scores (..., T, S), values (..., chunks + 1, S,
        w) from :meth:`values_and_ones` -> (..., chunks, T, w) (each chunk divided by the ones
        chunk)."""
        shifted = self.op("Sub", [scores, self.op("ReduceMax", [scores, self.last], p + "row_max",
                                                  keepdims=1)], p + "shifted")
        weights = self.op("Unsqueeze", [self.op("Exp", [shifted], p + "exp"),
                                        self.const(p + "chunk_axis", np.array([-3]))],
                          p + "exp_chunked")
        products = self.op("MatMul", [weights, values], p + "products")
        # all w columns of the ones chunk hold the same sum: keeping them all, the Div broadcasts
        # over the chunk axis only (spans of T * w) rather than over w too (spans of 1): 0.30
        # vs 1.33 ms for (8, 9, 4, 128, 16), 1 thread, ORT 1.32
        numerator = self.op("Slice", [products, self.const(p + "zero", np.array([0])), self.const(
            p + "chunks", np.array([chunks])), self.const(p + "chunk_axes", np.array([-3]))],
            p + "numerator")
        denominator = self.op("Slice", [products, self.const(p + "den_start", np.array([chunks])),
                                        self.const(p + "den_end", np.array([chunks + 1])),
                                        self.const(p + "den_axes", np.array([-3]))],
                              p + "denominator")
        return self.op("Div", [numerator, denominator], p + "chunked_out")
