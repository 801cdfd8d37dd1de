"""Row-wise int8 for CPU: int8 weights and int8 activations with one scale per row (token).

The transform rewrites every MatMul of the fp32 graph that has a constant 2-D weight:

    x (..., K) --Reshape--> (rows, K) --QuantizeLinear(axis 0, scale = rowmax|x| / 127)--> u8
    u8 x int8 W --com.microsoft.MatMulIntegerToFloat (per-column weight scales)--> (rows, N)
    * row scale --Reshape--> (..., N)

Why row-wise: a row's scale depends on that row only, so a row's int8 product does not depend on
its batch partners (`int8-dynamic` computes one scale per tensor over the whole batch).
Padding must not move the fp32 parts either: a change of ~1e-7 flips a rounding now and then,
and a trained model amplifies the flips, so the graph's sums over tokens (attention, masked
means) are first rewritten padding-exact (toolchain.export.padding_exact). MatMuls that read the
same tensor (q/k/v, gate/up) share one quantisation.

Why smoothing (SmoothQuant, Xiao et al. 2023): real decoder activations have a few outlier
channels, which set every row's scale and crush the rest to a few levels. Each quantised input
is divided per channel by s_j = max|x_j|^alpha / max|W_j,:|^(1 - alpha), and the weight rows are
multiplied by s_j: exact in real arithmetic, it moves the outliers into the weights, which
per-column scales absorb. max|x_j| is calibrated at export on CALIBRATION_FILE's feeds. Where the
input is the normalised output of an RMSNorm whose weight nothing else reads, 1/s is folded into
that weight (no extra op); otherwise a Mul does it.

Why some groups stay fp32 (``target_cosine``): on real weights a few layers' inputs (the first
layers', where massive activations arise) do not survive int8 even smoothed; which ones is
measured per model at export (:func:`choose_fp32_groups`).
"""

from __future__ import annotations

import collections
import copy
import tempfile
import time
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
    import onnx

    model = onnx.load(str(model_path))
    for name in names:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    # unoptimised, so that ORT's fusions cannot swallow the tensors we read
    session = in_memory_session(model, {"graph_optimization_level": "disable"})
    absmax: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            row = np.abs(value).reshape(-1, value.shape[-1]).max(0)
            absmax[name] = np.maximum(absmax[name], row) if name in absmax else row
    return absmax


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


def smoothed_input(g: _Graph, out: list, prefix: str, x: str, input_scale: np.ndarray,
                   readers: int) -> tuple[str, bool]:
    """(the tensor the group's products read, whether the smoothing was folded into an
    RMSNorm): ``x`` itself when no smoothing or when folded, else x * input_scale."""
    if np.all(input_scale == 1):
        return x, False
    if _fold_into_norm(g, x, input_scale, readers):
        return x, True
    return g.node(out, "Mul", [x, g.const(prefix + "input_scale", input_scale)],
                  prefix + "xs"), False


def rewrite_rowwise_int8(model, groups: dict[str, list], weight_qmax: int,
                         absmax: dict[str, np.ndarray] | None, alpha: float,
                         outliers: int = 0, fallback_mask: str | None = None,
                         activation_qmax: int = 127) -> dict:
    """Rewrite ``groups`` (see :func:`weight_matmul_groups`) in place; returns counts. The
    MatMuls of one group share one quantised input (and its smoothing and outlier channels);
    each becomes a MatMulIntegerToFloat on it. Activations take codes of ``activation_qmax``
    steps either side of zero.

    With ``fallback_mask`` (calibration only), each group also keeps its product in fp32, and a
    float graph input of that name, one entry per group, picks the path: 1 int8, 0 fp32 (x * 1
    + y * 0 is exactly x, so a run is exactly the graph with those groups quantised)."""
    from onnx import helper, numpy_helper

    if not 1 <= activation_qmax <= 127:
        raise ValueError(f"activation_qmax {activation_qmax} is not in [1, 127] (u8 codes)")
    g = _Graph(model)
    weights = g.existing
    eps = g.const("rw_eps", np.array(1e-8, np.float32))  # an all-zero row keeps scale > 0
    inv_qmax = g.const("rw_inv_qmax", np.array(1 / activation_qmax, np.float32))
    one = g.const("rw_one", np.array(1.0, np.float32))
    # u8 codes span zero_point +- activation_qmax: [1, 255] at 127, [1, 127] at 63
    zero_point = g.const("rw_zero_point", np.array(activation_qmax + 1, np.uint8))
    axis1 = g.const("rw_axis1", np.array([1], np.int64))
    last = g.const("rw_last", np.array([-1], np.int64))
    end = g.const("rw_end", np.array([2**62], np.int64))
    start = g.const("rw_start", np.array([0], np.int64))
    replacement: dict[str, list] = {}
    folded = 0
    for index, (x, nodes) in enumerate(groups.items()):
        p, out = f"rw{index}_", []
        mats = [numpy_helper.to_array(weights[n.input[1]]).astype(np.float32) for n in nodes]
        input_scale, packed, channels, exact = _plan(
            x, mats, None if absmax is None else absmax[x], alpha, outliers)
        source, was_folded = smoothed_input(g, out, p, x, input_scale, len(nodes))
        folded += was_folded
        shape = g.node(out, "Shape", [source], p + "shape")
        lead = g.node(out, "Slice", [shape, start, last], p + "lead")
        width = g.node(out, "Slice", [shape, last, end], p + "k")
        rows_shape = g.node(out, "Concat", [last, width], p + "rows_shape", axis=0)
        rows = g.node(out, "Reshape", [source, rows_shape], p + "rows")
        # max |x| of a row as max(max x, -min x): two reads of x and no |x| written out
        row_hi = g.node(out, "ReduceMax", [rows, axis1], p + "row_hi", keepdims=0)
        row_lo = g.node(out, "ReduceMin", [rows, axis1], p + "row_lo", keepdims=0)
        row_absmax = g.node(out, "Max", [row_hi, g.node(out, "Neg", [row_lo], p + "row_neg_lo")],
                            p + "row_absmax")
        scale = g.node(out, "Mul", [g.node(out, "Max", [row_absmax, eps], p + "row_max"), inv_qmax],
                       p + "row_scale")
        zero_points = g.node(out, "Expand", [zero_point, g.node(out, "Shape", [scale], p + "n")],
                             p + "zero_points")
        quantised = g.node(out, "QuantizeLinear", [rows, scale, zero_points], p + "xq", axis=0)
        row_scale = g.node(out, "Unsqueeze", [scale, axis1], p + "col")
        quant, column_scale = quantise_columns(packed, weight_qmax)
        picked = None
        if len(channels):
            picked = g.node(out, "Gather", [source, g.const(p + "channels", channels)],
                            p + "picked", axis=-1)
        if fallback_mask is not None:
            pick = g.node(out, "Gather", [fallback_mask, g.const(p + "index", np.array(index))],
                          p + "pick")
            drop = g.node(out, "Sub", [one, pick], p + "drop")
        # one product per MatMul of the group, all reading the one quantised input: no packed
        # product to Split afterwards (that copy took 11-12 % of the int8 GEMM time on SmolLM2 m2)
        bounds = np.cumsum([0] + [m.shape[1] for m in mats])
        for j, (node, mat) in enumerate(zip(nodes, mats)):
            q, cols = f"{p}{j}_", slice(bounds[j], bounds[j + 1])
            product = g.node(out, "MatMulIntegerToFloat",
                             [quantised, g.const(q + "w", quant[:, cols]), one,
                              g.const(q + "w_scale", column_scale[cols]), zero_point],
                             q + "product", domain="com.microsoft")
            scaled = g.node(out, "Mul", [product, row_scale], q + "scaled")
            out_shape = g.node(out, "Concat", [lead, g.const(q + "n_out", np.array([mat.shape[1]]))],
                               q + "out_shape", axis=0)
            result = node.output[0]
            int8_result = result if fallback_mask is None else q + "int8_result"
            if picked is not None:
                exact_part = g.node(out, "MatMul", [picked, g.const(q + "w_exact", exact[:, cols])],
                                    q + "exact")
                int8_part = g.node(out, "Reshape", [scaled, out_shape], q + "int8_part")
                g.node(out, "Add", [int8_part, exact_part], int8_result)
            else:
                g.node(out, "Reshape", [scaled, out_shape], int8_result)
            if fallback_mask is not None:
                # the fp32 path reads the same (smoothed) input: its weight undoes input_scale
                full = mat / input_scale[:, None]
                fp32 = g.node(out, "MatMul", [source, g.const(q + "w_fp32", full.astype(np.float32))],
                              q + "fp32_result")
                g.node(out, "Add", [g.node(out, "Mul", [int8_result, pick], q + "int8_kept"),
                                    g.node(out, "Mul", [fp32, drop], q + "fp32_kept")], result)
        replacement[nodes[0].name] = out
        for node in nodes[1:]:
            replacement[node.name] = []
    g.splice(replacement)
    if fallback_mask is not None:
        model.graph.input.append(helper.make_tensor_value_info(fallback_mask, 1, [len(groups)]))
    return {"inputs": len(groups), "matmuls": sum(len(v) for v in groups.values()),
            "norms_folded": folded}


FALLBACK_MASK = "rw_int8_mask"


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


def damage_order(min_cosine, count: int) -> np.ndarray:
    """The groups, most damaging first: each measured alone in int8 (mask one-hot),
    ``min_cosine(mask)`` its worst cosine to fp32."""
    damage = []
    for group in range(count):
        alone = np.zeros(count, np.float32)
        alone[group] = 1
        damage.append(1 - min_cosine(alone))
    return np.argsort(damage)[::-1]


def choose_fp32_groups(model, feeds: list[dict], count: int, target: float) -> dict:
    """Which of the ``count`` groups stay fp32 so that every calibration feed's embedding keeps
    cosine >= ``target`` to fp32. Each group's own damage is measured with it alone in int8;
    then, from all groups in int8, the most damaging go back to fp32 one by one until the target
    holds. ``model`` carries the fallback mask (:func:`rewrite_rowwise_int8`); it is consumed."""
    embed = _embedder(model, feeds)
    reference = embed(np.zeros(count, np.float32))

    def min_cosine(mask: np.ndarray) -> float:
        return float(np.min(np.sum(embed(mask) * reference, axis=1)))

    mask = np.ones(count, np.float32)
    reached = min_cosine(mask)
    calibrated = {"all_int8_min_cosine": reached}
    if reached < target:
        for group in damage_order(min_cosine, count):
            mask[group] = 0
            reached = min_cosine(mask)
            if reached >= target:
                break
    return {**calibrated, "min_cosine": reached,
            "fp32": [int(i) for i in np.flatnonzero(mask == 0)]}


@register_transform("fp32", "rowwise_int8", calibrates=True)
def quantize_rowwise_int8(source: Path, target: Path, profile: Profile, external: bool) -> dict:
    """See the module docstring. Profile settings (quantize:): smooth_alpha (0 = no smoothing),
    outlier_channels (fp32 channels per input), reduce_range (7-bit weights), keep_fp32 (module
    paths whose MatMuls stay fp32), target_cosine (0 = off: else the groups that stay fp32 are
    chosen on the calibration feeds, :func:`choose_fp32_groups`), padding_exact (default on:
    sums over tokens rewritten padding-exact, toolchain.export.padding_exact)."""
    import onnx

    settings = profile.quantize or {}
    alpha = float(settings.get("smooth_alpha", 0.5))
    if not 0 <= alpha <= 1:
        raise ToolchainError(f"{profile.path}: quantize.smooth_alpha {alpha} is not in [0, 1]")
    model = onnx.load(str(source / MODEL_FILE))
    exact = rewrite_padding_exact(model) if settings.get("padding_exact", True) else {}
    keep = set(matmuls_in_modules(model, list(settings.get("keep_fp32", []))))
    groups = weight_matmul_groups(model, keep)
    outliers = int(settings.get("outlier_channels", 0))
    target_cosine = float(settings.get("target_cosine", 0))
    feeds = read_calibration(source) if alpha > 0 or outliers > 0 or target_cosine > 0 else []
    absmax = None
    if alpha > 0 or outliers > 0:
        absmax = channel_absmax(source / MODEL_FILE, feeds, list(groups))
    weight_qmax = 63 if settings.get("reduce_range", True) else 127
    calibrated, restored = {}, []
    if target_cosine > 0:
        started = time.perf_counter()
        trial = copy.deepcopy(model)
        rewrite_rowwise_int8(trial, groups, weight_qmax, absmax, alpha, outliers, FALLBACK_MASK)
        calibrated = choose_fp32_groups(trial, feeds, len(groups), target_cosine)
        del trial
        restored = [list(groups)[i] for i in calibrated.pop("fp32")]
        keep |= {node.name for x in restored for node in groups.pop(x)}
        calibrated["seconds"] = time.perf_counter() - started
    counts = rewrite_rowwise_int8(model, groups, weight_qmax, absmax, alpha, outliers)
    save_graph(model, target, external)
    return {**counts, "padding_exact": exact, "kept_fp32": sorted(keep),
            "fp32_groups": len(restored),
            **{f"calibrated_{k}": round(v, 6) for k, v in calibrated.items()}}
