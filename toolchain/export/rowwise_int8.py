"""Row-wise int8 for CPU: int8 weights and int8 activations with one scale per row (token).

The transform rewrites every MatMul of the fp32 graph that has a constant 2-D weight:

    x (..., K) --Reshape--> (rows, K) --QuantizeLinear(axis 0, scale = rowmax|x| / 127)--> u8
    u8 x int8 W --com.microsoft.MatMulIntegerToFloat (row scales x per-column weight scales)-->
    (rows, N) [+ Gemm: the fp32 outlier channels' product] --Reshape--> (..., N)

Why row-wise: a row's scale depends on that row only, so a row's int8 product does not depend on
its batch partners (`int8-dynamic` computes one scale per tensor over the whole batch).
Padding must not move the fp32 parts either: a change of ~1e-7 flips a rounding now and then,
and a trained model amplifies the flips, so the graph's sums over tokens are made exact first
(toolchain.export.padding_exact): each row's real tokens are moved to its front, where ORT's
attention computes them the same at any padding, and masked means are rewritten. MatMuls that
read the same tensor (q/k/v, gate/up) share one quantisation.

Why smoothing (SmoothQuant, Xiao et al. 2023): real decoder activations have a few outlier
channels, which set every row's scale and crush the rest to a few levels. Each quantised input
is divided per channel by s_j = max|x_j|^alpha / max|W_j,:|^(1 - alpha), and the weight rows are
multiplied by s_j: exact in real arithmetic, it moves the outliers into the weights, which
per-column scales absorb. max|x_j| is calibrated at export on CALIBRATION_FILE's feeds. Where the
input is the normalised output of an RMSNorm whose weight nothing else reads, 1/s is folded into
that weight (no extra op); otherwise a Mul does it.

Why some groups stay fp32 (``target_cosine``): on real weights a few layers' inputs (the first
layers', where massive activations arise) do not survive int8 even smoothed; which ones is
measured per model at export (:func:`choose_paths`). The same search gives outlier channels
only to the groups that need them: their fp32 product costs ~12 % of the int8 graph's time
(SmolLM2 m3, 8x128), and some models need them nowhere (m3: worst cosine 0.99919 without any).

Why GPTQ (``weight_rounding: gptq``; Frantar et al. 2023): 7-bit weights (``reduce_range``, for
CPUs without VNNI) cost more accuracy than 8-bit activations. Rounding each input channel's
weights in turn and spreading its error over the channels not yet rounded, weighted by the
calibration rows' X^T X, moves the products several times less than rounding to nearest where
activations are correlated (decoder activations are), at no run-time cost. On SmolLM2 m5 it cut
the groups the search keeps fp32 from 68 to 43 (export/int8.yaml). What stays fp32 there is the
first twelve layers of the bidirectional variants: weight rounding alone in those layers (fp32
activations) already moves some random-id rows below cosine 0.99 (benchmarks/results/
export_fusion.md, ninth measurement).
"""

from __future__ import annotations

import collections
import copy
import heapq
import itertools
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain.errors import ToolchainError
from toolchain.export.onnx_export import MODEL_FILE
from toolchain.export.optimize import (matmuls_in_modules, read_calibration, register_transform,
                                       save_graph)
from toolchain.export.padding_exact import rewrite_padding_exact
from toolchain.export.profiles import Profile
from toolchain.ort_session import ort_session

RMSNORMS = {"SimplifiedLayerNormalization": 1, "SkipSimplifiedLayerNormalization": 2}  # gamma input
SMOOTH_CLIP = (1e-2, 1e2)
OUTLIER_SHRINK = 2.0 ** -10  # bounds s_j: a dead channel must not blow its weight row up
PROTOBUF_BYTES = 2**31 - 2**26  # what one serialised graph may hold, with room for its nodes


def weight_matmul_groups(model, keep_fp32: set[str]) -> dict[str, list]:
    """MatMuls with a constant 2-D weight, grouped by the tensor they read (order kept)."""
    weights = {i.name: i for i in model.graph.initializer}
    groups: dict[str, list] = collections.defaultdict(list)
    for node in model.graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is not None and len(weight.dims) == 2 and node.name not in keep_fp32:
            groups[node.input[0]].append(node)
    return dict(groups)


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


class _Graph:
    """New nodes and initialisers for the rewrite, with unique names, and lookups into the
    graph as it was (the rewrite only appends until it splices its nodes in)."""

    def __init__(self, model) -> None:
        self.model = model
        self.initializers: list = []
        self.existing = {i.name: i for i in model.graph.initializer}
        self.producer = {out: n for n in model.graph.node for out in n.output}
        self.uses = collections.Counter(i for n in model.graph.node for i in n.input)

    def const(self, name: str, value) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    @staticmethod
    def node(into: list, op: str, inputs: list[str], output: str, **attrs) -> str:
        from onnx import helper

        into.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def splice(self, replacement: dict[str, list]) -> None:
        """Put each replaced node's new nodes where it stood (a group's where its first MatMul
        stood: its input exists by then, and its other MatMuls' readers all come after it),
        keep only the initialisers still read plus the new ones, and import com.microsoft."""
        from onnx import helper

        graph = self.model.graph
        rewritten = [new for node in graph.node for new in replacement.get(node.name, [node])]
        del graph.node[:]
        graph.node.extend(rewritten)
        read = {i for n in graph.node for i in n.input}
        kept = [i for i in graph.initializer if i.name in read]
        del graph.initializer[:]
        graph.initializer.extend(kept + self.initializers)
        if not any(o.domain == "com.microsoft" for o in self.model.opset_import):
            self.model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def _smoothing(absmax: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    weight_max = np.max([np.abs(w).max(1) for w in weights], axis=0)
    scale = np.maximum(absmax, 1e-5) ** alpha / np.maximum(weight_max, 1e-5) ** (1 - alpha)
    return np.clip(scale, *SMOOTH_CLIP).astype(np.float32)


def _fold_into_norm(graph: _Graph, x: str, inverse: np.ndarray, readers: int) -> bool:
    """Scale the RMSNorm weight that produces ``x`` by ``inverse`` if only ``readers`` read x
    and nothing else reads that weight."""
    from onnx import numpy_helper

    producer = graph.producer.get(x)
    if producer is None or producer.op_type not in RMSNORMS or producer.output[0] != x:
        return False
    gamma = producer.input[RMSNORMS[producer.op_type]]
    init = graph.existing.get(gamma)
    if init is None or graph.uses[gamma] != 1 or graph.uses[x] != readers:
        return False
    value = numpy_helper.to_array(init).astype(np.float32) * inverse
    init.CopyFrom(numpy_helper.from_array(value.astype(np.float32), gamma))
    return True


def _plan(x: str, mats: list[np.ndarray], absmax: np.ndarray | None, alpha: float,
          outliers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For one input tensor: (input scale, packed weight for the int8 path, outlier channels,
    their fp32 weight rows). x * input_scale @ int8 path + x[channels] * input_scale[channels]
    @ fp32 rows equals x @ concat(mats) in real arithmetic."""
    packed = np.concatenate(mats, axis=1)
    input_scale = np.ones(packed.shape[0], np.float32)
    if absmax is not None and alpha > 0:
        smooth = _smoothing(absmax, mats, alpha)
        packed = packed * smooth[:, None]
        input_scale = 1 / smooth
    channels = np.zeros(0, np.int64)
    exact = np.zeros((0, packed.shape[1]), np.float32)
    if absmax is not None and outliers > 0:
        # LLM.int8()-style: the calibrated largest channels go through fp32 (ranked before
        # smoothing: measured better than after on SmolLM2 m5, 0.9953 vs 0.9983 on texts but
        # 0.9916 vs 0.9839 on random shapes). They are shrunk by OUTLIER_SHRINK (a power of 2:
        # exact) so as not to set the row scales, and their int8 weight rows are zero.
        channels = np.sort(np.argsort(absmax)[-outliers:]).astype(np.int64)
        input_scale[channels] *= OUTLIER_SHRINK
        exact = packed[channels] / OUTLIER_SHRINK
        packed = packed.copy()
        packed[channels] = 0
    return input_scale.astype(np.float32), packed, channels, exact.astype(np.float32)


def quantise_columns(packed: np.ndarray, weight_qmax: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights, fp32 scale per output column) with codes in [-weight_qmax, weight_qmax]."""
    column_scale = np.abs(packed).max(0) / weight_qmax
    column_scale[column_scale == 0] = 1.0
    quant = np.clip(np.round(packed / column_scale), -weight_qmax, weight_qmax).astype(np.int8)
    return quant, column_scale.astype(np.float32)


def gptq_columns(packed: np.ndarray, gram: np.ndarray, weight_qmax: int, damp: float = 0.01,
                 block: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantise_columns` with GPTQ's rounding (Frantar et al. 2023): the input channels
    (rows of ``packed``) are rounded one at a time, largest X^T X diagonal first, and each one's
    rounding error is spread over the rows not yet rounded so that x @ W moves least on the
    inputs ``gram`` (X^T X) was measured on. Rows that are all zero (outlier channels) stay
    zero; rows of channels the calibration never excites are rounded to nearest. ``damp`` adds
    that share of the mean diagonal, for channels the calibration rarely excites."""
    quant, column_scale = quantise_columns(packed, weight_qmax)
    live = np.flatnonzero(np.any(packed != 0, axis=1) & (np.diag(gram) > 0))
    live = live[np.argsort(-np.diag(gram)[live], kind="stable")]
    hessian = gram[np.ix_(live, live)].astype(np.float64)
    hessian[np.diag_indices_from(hessian)] += damp * np.mean(np.diag(hessian))
    # the upper Cholesky factor of H^-1: row i holds how row i's error moves the rows after it
    inverse = np.linalg.cholesky(np.linalg.inv(hessian)).T
    weights = packed[live].astype(np.float64)
    scale = column_scale.astype(np.float64)
    codes = np.zeros(weights.shape, np.float64)
    for start in range(0, len(live), block):
        stop = min(start + block, len(live))
        errors = np.zeros((stop - start, weights.shape[1]))
        for i in range(start, stop):
            codes[i] = np.clip(np.round(weights[i] / scale), -weight_qmax, weight_qmax)
            errors[i - start] = (weights[i] - codes[i] * scale) / inverse[i, i]
            weights[i + 1:stop] -= np.outer(inverse[i, i + 1:stop], errors[i - start])
        weights[stop:] -= inverse[start:stop, stop:].T @ errors
    quant[live] = codes.astype(np.int8)
    return quant, column_scale


def smoothed_input(g: _Graph, out: list, prefix: str, x: str, input_scale: np.ndarray,
                   readers: int, fold: bool = True) -> tuple[str, bool]:
    """(the tensor the group's products read, whether the smoothing was folded into an
    RMSNorm): ``x`` itself when no smoothing or when folded, else x * input_scale. ``fold``
    False: never folded (the calibration graph reads x on several paths)."""
    if np.all(input_scale == 1):
        return x, False
    if fold and _fold_into_norm(g, x, input_scale, readers):
        return x, True
    return g.node(out, "Mul", [x, g.const(prefix + "input_scale", input_scale)],
                  prefix + "xs"), False


class _RowwiseInt8:
    """Emits one group's row-wise int8 products (see :func:`rewrite_rowwise_int8`), with the
    constants all groups share."""

    def __init__(self, g: _Graph, weight_qmax: int, absmax: dict[str, np.ndarray] | None,
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
        input_scale, packed, channels, exact = _plan(
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

    g = _Graph(model)
    emit = _RowwiseInt8(g, weight_qmax, absmax, alpha, activation_qmax, gram)
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


FALLBACK_MASK = "rw_int8_mask"
WEIGHT_ROUNDINGS = ("nearest", "gptq")


def _embedder(model, feeds: list[dict]):
    """embed(mask) -> the calibration feeds' unit embeddings, (feeds, dim), from ``model`` (a
    graph rewritten with a fallback mask, consumed: :func:`in_memory_session`), run the way
    verify runs it."""
    from toolchain.export.onnx_export import OUTPUT_NAME

    session = in_memory_session(model, None)

    def embed(mask: np.ndarray) -> np.ndarray:
        rows = np.concatenate([session.run([OUTPUT_NAME], {**feed, FALLBACK_MASK: mask})[0]
                               for feed in feeds])
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return embed


def path_masks(choice: np.ndarray, paths: int) -> np.ndarray:
    """The calibration graph's mask for one path per group (``choice``: a path index each)."""
    return np.eye(paths, dtype=np.float32)[choice]


def group_damage(min_cosine, count: int, paths: int) -> Callable[[int, int], float]:
    """damage(group, path): 1 - the worst cosine to fp32 with that group alone on that path and
    every other group fp32 (``min_cosine(choice)``), measured once, when first asked for; the
    fp32 path damages nothing."""
    measured: dict[tuple[int, int], float] = {}

    def damage(group: int, path: int) -> float:
        if path == paths - 1:
            return 0.0
        if (group, path) not in measured:
            alone = np.full(count, paths - 1)
            alone[group] = path
            measured[group, path] = 1 - min_cosine(alone)
        return measured[group, path]
    return damage


def upgrade_order(damage: Callable[[int, int], float], count: int,
                  paths: int) -> Iterator[tuple[int, int]]:
    """(group, path) moves, starting from every group on path 0: each move takes the group whose
    current path damages most to its next path that damages less (fp32 damages nothing). Lazy:
    a path's damage is asked for only when its group gets there."""
    current = np.zeros(count, int)
    heap = [(-damage(g, 0), g) for g in range(count) if damage(g, 0) > 0]
    heapq.heapify(heap)
    while heap:
        _, group = heapq.heappop(heap)
        here = current[group]
        current[group] = next(k for k in range(here + 1, paths)
                              if damage(group, k) < damage(group, here))
        yield group, int(current[group])
        if damage(group, current[group]) > 0:
            heapq.heappush(heap, (-damage(group, current[group]), group))


def after_moves(moves: list[tuple[int, int]], count: int) -> np.ndarray:
    """Each group's path after ``moves``, from path 0."""
    choice = np.zeros(count, int)
    for group, path in moves:
        choice[group] = path
    return choice


def shortest_meeting(min_cosine, moves: Iterator[tuple[int, int]], count: int,
                     target: float) -> tuple[np.ndarray, float]:
    """The shortest prefix of ``moves`` after which the worst cosine reaches ``target``
    (taking the cosine to grow with it): prefixes of 1, 2, 4, ... moves until one meets it,
    then bisection below that one, so that only the moves up to about twice the answer are
    drawn. Returns (choice, its worst cosine); all moves if none meets the target."""
    taken: list[tuple[int, int]] = []

    def drawn(length: int) -> int:  # moves drawn so far, at least ``length`` unless exhausted
        taken.extend(itertools.islice(moves, max(0, length - len(taken))))
        return len(taken)

    low, low_value, length = 0, None, 1  # the first ``low`` moves miss the target
    while True:
        length = min(length, drawn(length))
        if length == low:  # no moves left
            choice = after_moves(taken, count)
            return choice, low_value if low_value is not None else min_cosine(choice)
        reached = min_cosine(after_moves(taken[:length], count))
        if reached >= target:
            break
        low, low_value, length = length, reached, 2 * length
    high = length
    while high - low > 1:
        middle = (low + high) // 2
        value = min_cosine(after_moves(taken[:middle], count))
        if value >= target:
            high, reached = middle, value
        else:
            low = middle
    return after_moves(taken[:high], count), reached


def choose_paths(model, feeds: list[dict], count: int, paths: int, target: float) -> dict:
    """Each of the ``count`` groups' path (:func:`calibration_paths`, cheapest first) so that
    every calibration feed's embedding keeps cosine >= ``target`` to fp32: from every group on
    the cheapest int8 path, the moves of :func:`upgrade_order` (a group's damage on a path
    measured alone, when it gets there) up to the shortest prefix that meets the target.
    ``model`` carries the fallback mask (:func:`rewrite_rowwise_int8`); it is consumed."""
    embed = _embedder(model, feeds)
    reference = embed(path_masks(np.full(count, paths - 1), paths))

    def min_cosine(choice: np.ndarray) -> float:
        return float(np.min(np.sum(embed(path_masks(choice, paths)) * reference, axis=1)))

    choice = np.zeros(count, int)
    reached = min_cosine(choice)
    calibrated = {"all_int8_min_cosine": reached}
    if reached < target:
        moves = upgrade_order(group_damage(min_cosine, count, paths), count, paths)
        choice, reached = shortest_meeting(min_cosine, moves, count, target)
    return {**calibrated, "min_cosine": reached, "paths": [int(k) for k in choice]}


@dataclass(frozen=True)
class RowwiseSettings:
    """A profile's ``quantize:`` settings for this transform, with their defaults (see
    :func:`quantize_rowwise_int8`)."""

    alpha: float
    outliers: int
    weight_qmax: int
    target_cosine: float
    padding_exact: bool
    compact_tokens: bool
    keep_fp32: tuple[str, ...]
    weight_rounding: str  # one of WEIGHT_ROUNDINGS

    @property
    def gptq(self) -> bool:
        return self.weight_rounding == "gptq"

    @classmethod
    def parse(cls, settings: dict | None, where) -> RowwiseSettings:
        settings = settings or {}
        alpha = float(settings.get("smooth_alpha", 0.5))
        if not 0 <= alpha <= 1:
            raise ToolchainError(f"{where}: quantize.smooth_alpha {alpha} is not in [0, 1]")
        rounding = settings.get("weight_rounding", "nearest")
        if rounding not in WEIGHT_ROUNDINGS:
            raise ToolchainError(f"{where}: quantize.weight_rounding {rounding!r} is not one of "
                                 f"{', '.join(WEIGHT_ROUNDINGS)}")
        return cls(alpha=alpha, outliers=int(settings.get("outlier_channels", 0)),
                   weight_qmax=63 if settings.get("reduce_range", True) else 127,
                   target_cosine=float(settings.get("target_cosine", 0)),
                   padding_exact=bool(settings.get("padding_exact", True)),
                   compact_tokens=bool(settings.get("compact_tokens", True)),
                   keep_fp32=tuple(settings.get("keep_fp32", [])),
                   weight_rounding=rounding)


@register_transform("fp32", "rowwise_int8", calibrates=True)
def quantize_rowwise_int8(source: Path, target: Path, profile: Profile, external: bool) -> dict:
    """See the module docstring. Profile settings (quantize:): smooth_alpha (0 = no smoothing),
    outlier_channels (fp32 channels per input), reduce_range (7-bit weights), keep_fp32 (module
    paths whose MatMuls stay fp32), target_cosine (0 = off, every group int8 with the outlier
    channels; else each group's path, int8, int8 with outlier channels or fp32, is chosen on the
    calibration feeds: :func:`choose_paths`), padding_exact (default on: sums over tokens
    rewritten padding-exact, toolchain.export.padding_exact), compact_tokens (default on, with
    padding_exact: each row's real tokens moved to its front, and ONNX Attention kept as fused,
    exact that way: :func:`~toolchain.export.padding_exact.compact_to_right_padding`),
    weight_rounding (nearest, or gptq: :func:`gptq_columns` on the calibration rows' X^T X)."""
    import onnx

    settings = RowwiseSettings.parse(profile.quantize, profile.path)
    alpha, outliers = settings.alpha, settings.outliers
    model = onnx.load(str(source / MODEL_FILE))
    exact = (rewrite_padding_exact(model, compact_tokens=settings.compact_tokens)
             if settings.padding_exact else {})
    keep = set(matmuls_in_modules(model, list(settings.keep_fp32)))
    groups = weight_matmul_groups(model, keep)
    needs_feeds = alpha > 0 or outliers > 0 or settings.target_cosine > 0 or settings.gptq
    feeds = read_calibration(source) if needs_feeds else []
    absmax = gram = None
    if alpha > 0 or outliers > 0 or settings.gptq:
        # GPTQ's X^T X also over the rows kept for statistics (more tokens than the feeds)
        extra = (read_calibration(source, statistics_rows=True)[len(feeds):]
                 if settings.gptq else None)
        absmax, gram = channel_statistics(source / MODEL_FILE, feeds, list(groups), extra)
    calibrated, restored, plain = {}, [], frozenset()
    if settings.target_cosine > 0:
        started = time.perf_counter()
        trial = copy.deepcopy(model)
        rewrite_rowwise_int8(trial, groups, settings.weight_qmax, absmax, alpha, outliers,
                             FALLBACK_MASK, gram=gram)
        paths = calibration_paths(outliers)
        calibrated = choose_paths(trial, feeds, len(groups), len(paths), settings.target_cosine)
        del trial
        chosen = dict(zip(groups, (paths[k] for k in calibrated.pop("paths"))))
        restored = [x for x, count in chosen.items() if count is None]
        plain = frozenset(x for x, count in chosen.items() if count == 0)
        keep |= {node.name for x in restored for node in groups.pop(x)}
        calibrated["seconds"] = time.perf_counter() - started
    counts = rewrite_rowwise_int8(model, groups, settings.weight_qmax, absmax, alpha, outliers,
                                  plain=plain, gram=gram)
    save_graph(model, target, external)
    return {**counts, "padding_exact": exact, "kept_fp32": sorted(keep),
            "weight_rounding": settings.weight_rounding,
            "fp32_groups": len(restored),
            **{f"calibrated_{k}": round(v, 6) for k, v in calibrated.items()}}
