"""The row-wise int8 graph rewrite: each group of MatMuls that read one tensor becomes row-wise
quantised products (MatMulIntegerToFloat) on one quantised input, or, for the fp32-group search,
every path at once behind a mask input (see toolchain/export/rowwise_int8/__init__.py)."""

from __future__ import annotations

import collections

import numpy as np

from toolchain.export.rowwise_int8.gptq import gptq_columns, quantise_columns
from toolchain.export.rowwise_int8.graph_edit import GraphEdit
from toolchain.export.rowwise_int8.smoothing import plan_input, smoothed_input

FALLBACK_MASK = "rw_int8_mask"


def weight_matmul_groups(model, keep_fp32: set[str]) -> dict[str, list]:
    """MatMuls with a constant 2-D weight, grouped by the tensor they read (order kept)."""
    weights = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list] = collections.defaultdict(list)
    for node in model.graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is not None and len(weight.dims) == 2 and node.name not in keep_fp32:
            groups[node.input[0]].append(node)
    return dict(groups)


class RowwiseProducts:
    """Emits one group's row-wise int8 products (see :func:`rewrite_rowwise_int8`), with the
    constants all groups share."""

    def __init__(self, g: GraphEdit, weight_qmax: int, absmax: dict[str, np.ndarray] | None,
                 alpha: float, activation_qmax: int,
                 gram: dict[str, np.ndarray] | None = None) -> None:
        if not 1 <= activation_qmax <= 127:
            raise ValueError(f"activation_qmax {activation_qmax} is not in [1, 127] (u8 codes)")
        self.g, self.weight_qmax, self.absmax, self.alpha = g, weight_qmax, absmax, alpha
        self.gram = gram
        inv_qmax = np.float32(1 / activation_qmax)
        self.inv_qmax = g.const("rw_inv_qmax", inv_qmax)
        self.neg_inv_qmax = g.const("rw_neg_inv_qmax", -inv_qmax)
        # an all-zero row: scale > 0
        self.eps_scale = g.const("rw_eps_scale", np.float32(1e-8) * inv_qmax)
        # u8 codes span zero_point +- activation_qmax: [1, 255] at 127, [1, 127] at 63
        self.zero_point = g.const("rw_zero_point", np.array(activation_qmax + 1, np.uint8))
        self.axis1 = g.const("rw_axis1", np.array([1], np.int64))
        self.last = g.const("rw_last", np.array([-1], np.int64))
        self.start = g.const("rw_start", np.array([0], np.int64))

    def products(self, out: list, p: str, x: str, mats: list[np.ndarray], outliers: int,
                 fold: bool, results: list[str]) -> bool:
        """x @ mats[j] -> results[j], in int8 with ``outliers`` fp32 channels; returns whether
        the smoothing was folded into an RMSNorm."""
        g = self.g
        input_scale, packed, channels, exact = plan_input(
            x, mats, None if self.absmax is None else self.absmax[x], self.alpha, outliers)
        source, folded = smoothed_input(g, out, p, x, input_scale, len(mats), fold)
        lead = g.node(out, "Slice", [g.node(out, "Shape", [source], p + "shape"), self.start,
                                     self.last], p + "lead")
        rows = g.node(out, "Reshape", [source, g.const(p + "rows_shape", np.array(
            [-1, mats[0].shape[0]]))], p + "rows")
        # a row's scale max|x| / qmax as max(max x / qmax, min x / -qmax, eps / qmax): two reads
        # of x and no |x| written out; the same bits as max(max x, -min x, eps) / qmax (a
        # product with a positive constant keeps order)
        row_hi = g.node(out, "ReduceMax", [rows, self.axis1], p + "row_hi", keepdims=0)
        row_lo = g.node(out, "ReduceMin", [rows, self.axis1], p + "row_lo", keepdims=0)
        scale = g.node(out, "Max", [g.node(out, "Mul", [row_hi, self.inv_qmax], p + "hi_scale"),
                                    g.node(out, "Mul", [row_lo, self.neg_inv_qmax], p + "lo_scale"),
                                    self.eps_scale], p + "row_scale")
        zero_points = g.node(out, "Expand", [self.zero_point, g.node(out, "Shape", [scale],
                                                                      p + "n")], p + "zero_points")
        quantised = g.node(out, "QuantizeLinear", [rows, scale, zero_points], p + "xq", axis=0)
        row_scale = g.node(out, "Unsqueeze", [scale, self.axis1], p + "col")
        if self.gram is None:
            quant, column_scale = quantise_columns(packed, self.weight_qmax)
        else:  # the Gram matrix of what the products read: x * input_scale
            gram = self.gram[x] * np.outer(input_scale, input_scale)
            quant, column_scale = gptq_columns(packed, gram, self.weight_qmax)
        picked = None
        if len(channels):
            picked = g.node(out, "Gather", [rows, g.const(p + "channels", channels)],
                            p + "picked", axis=1)
        # one product per MatMul of the group, all reading the one quantised input: no packed
        # product to Split afterwards (that copy took 11-12 % of the int8 GEMM time on SmolLM2 m2)
        bounds = np.cumsum([0] + [m.shape[1] for m in mats])
        for j, (mat, result) in enumerate(zip(mats, results)):
            q, cols = f"{p}{j}_", slice(bounds[j], bounds[j + 1])
            # the (rows, 1) activation scale goes in: ORT's kernel scales its output rows in
            # place (one op less than a Mul after it; the same arithmetic, bit for bit)
            scaled = g.node(out, "MatMulIntegerToFloat",
                            [quantised, g.const(q + "w", quant[:, cols]), row_scale,
                             g.const(q + "w_scale", column_scale[cols]), self.zero_point],
                            q + "product", domain="com.microsoft")
            if picked is not None:
                # the fp32 outlier channels' product accumulates onto the int8 one in one Gemm
                # (C, beta 1): no second product written out and added
                scaled = g.node(out, "Gemm", [picked, g.const(q + "w_exact", exact[:, cols]),
                                              scaled], q + "with_exact")
            out_shape = g.node(out, "Concat", [lead, g.const(q + "n_out", np.array([mat.shape[1]]))],
                               q + "out_shape", axis=0)
            g.node(out, "Reshape", [scaled, out_shape], result)
        return folded


def rewrite_rowwise_int8(model, groups: dict[str, list], weight_qmax: int,
                         absmax: dict[str, np.ndarray] | None, alpha: float,
                         outliers: int = 0, fallback_mask: str | None = None,
                         activation_qmax: int = 127, plain: frozenset[str] = frozenset(),
                         gram: dict[str, np.ndarray] | None = None) -> dict:
    """Rewrite ``groups`` (see :func:`weight_matmul_groups`) in place; returns counts. The
    MatMuls of one group share one quantised input (and its smoothing and outlier channels);
    each becomes a MatMulIntegerToFloat on it. Activations take codes of ``activation_qmax``
    steps either side of zero. Groups whose input is in ``plain`` get no outlier channels.

    With ``fallback_mask`` (calibration only), each group gets every path: int8 without outlier
    channels, int8 with them (if ``outliers``) and fp32, and a float graph input of that name,
    one row per group and one column per path in that order (:func:`calibration_paths`), picks
    them: a one-hot row picks exactly one path (x * 1 + y * 0 is exactly x), so a run is exactly
    the graph with those choices (smoothing as a Mul rather than folded into an RMSNorm)."""
    from onnx import helper, numpy_helper

    g = GraphEdit(model)
    emit = RowwiseProducts(g, weight_qmax, absmax, alpha, activation_qmax, gram)
    paths = calibration_paths(outliers)
    replacement: dict[str, list] = {}
    folded = with_outliers = 0
    for index, (x, nodes) in enumerate(groups.items()):
        p, out = f"rw{index}_", []
        mats = [numpy_helper.to_array(g.existing[n.input[1]]).astype(np.float32) for n in nodes]
        if fallback_mask is None:
            count = 0 if x in plain else outliers
            folded += emit.products(out, p, x, mats, count, True, [n.output[0] for n in nodes])
            with_outliers += count > 0
        else:
            results = [[f"{p}path{k}_{j}" for j in range(len(nodes))] for k in range(len(paths))]
            for k, count in enumerate(paths[:-1]):
                emit.products(out, f"{p}path{k}_", x, mats, count, False, results[k])
            for node, result in zip(nodes, results[-1]):
                g.node(out, "MatMul", [x, node.input[1]], result)  # fp32: the original weight
            row = g.node(out, "Gather", [fallback_mask, g.const(p + "index", np.array(index))],
                         p + "pick")
            picks = [g.node(out, "Gather", [row, g.const(f"{p}column{k}", np.array(k))],
                            f"{p}pick{k}") for k in range(len(paths))]
            for j, node in enumerate(nodes):
                kept = [g.node(out, "Mul", [results[k][j], picks[k]], f"{p}kept{k}_{j}")
                        for k in range(len(paths))]
                g.node(out, "Sum", kept, node.output[0])
        replacement[nodes[0].name] = out
        for node in nodes[1:]:
            replacement[node.name] = []
    g.splice(replacement)
    if fallback_mask is not None:
        model.graph.input.append(helper.make_tensor_value_info(
            fallback_mask, 1, [len(groups), len(paths)]))
    return {"inputs": len(groups), "matmuls": sum(len(v) for v in groups.values()),
            "norms_folded": folded, "outlier_inputs": with_outliers}


def calibration_paths(outliers: int) -> list[int | None]:
    """A group's paths in the calibration graph, cheapest first: the outlier channels of each
    int8 path, then None for fp32."""
    return [0] + ([outliers] if outliers > 0 else []) + [None]
