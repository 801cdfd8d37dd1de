"""SmoothQuant's per-channel smoothing (Xiao et al. 2023) and the fp32 outlier channels of one
quantised input: the plan of its scales and weights, and the smoothing folded into an RMSNorm's
weight where it can be (else a Mul). See toolchain/export/rowwise_int8/__init__.py for why."""

from __future__ import annotations

import numpy as np

from toolchain.export.rowwise_int8.graph_edit import GraphEdit

RMSNORMS = {"SimplifiedLayerNormalization": 1, "SkipSimplifiedLayerNormalization": 2}  # gamma input
SMOOTH_CLIP = (1e-2, 1e2)
OUTLIER_SHRINK = 2.0 ** -10  # bounds s_j: a dead channel must not blow its weight row up


def smoothing_scales(absmax: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """s_j = max|x_j|^alpha / max|W_j,:|^(1 - alpha) per input channel, over all of ``weights``
    (the MatMuls that read x), clipped to SMOOTH_CLIP."""
    weight_max = np.max([np.abs(w).max(1) for w in weights], axis=0)
    scale = np.maximum(absmax, 1e-5) ** alpha / np.maximum(weight_max, 1e-5) ** (1 - alpha)
    return np.clip(scale, *SMOOTH_CLIP).astype(np.float32)


def fold_into_norm(graph: GraphEdit, x: str, inverse: np.ndarray, readers: int) -> bool:
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


def plan_input(x: str, mats: list[np.ndarray], absmax: np.ndarray | None, alpha: float,
          outliers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For one input tensor: (input scale, packed weight for the int8 path, outlier channels,
    their fp32 weight rows). x * input_scale @ int8 path + x[channels] * input_scale[channels]
    @ fp32 rows equals x @ concat(mats) in real arithmetic."""
    packed = np.concatenate(mats, axis=1)
    input_scale = np.ones(packed.shape[0], np.float32)
    if absmax is not None and alpha > 0:
        smooth = smoothing_scales(absmax, mats, alpha)
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


def smoothed_input(g: GraphEdit, out: list, prefix: str, x: str, input_scale: np.ndarray,
                   readers: int, fold: bool = True) -> tuple[str, bool]:
    """(the tensor the group's products read, whether the smoothing was folded into an
    RMSNorm): ``x`` itself when no smoothing or when folded, else x * input_scale. ``fold``
    False: never folded (the calibration graph reads x on several paths)."""
    if np.all(input_scale == 1):
        return x, False
    if fold and fold_into_norm(g, x, input_scale, readers):
        return x, True
    return g.node(out, "Mul", [x, g.const(prefix + "input_scale", input_scale)],
                  prefix + "xs"), False
