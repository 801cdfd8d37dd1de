#!/usr/bin/env python
"""Is it the weights or the activations? The first --layers decoder layers' weight MatMuls get
the int8 profile's 7-bit weights (smoothed, outlier channels kept exact, GPTQ-rounded) dequantised
back to fp32, so that only weight rounding moves them, and every other MatMul stays fp32; then
the same layers as real row-wise int8 (weights and activations), without and with outlier
channels. Printed: the worst cosine to fp32 over the calibration feeds, and over held-out
random-id rows (the settings probe's 24, plus 24 more, half of them 1-8 tokens long), their 10th
percentile and median, and how many rows fall below verify's 0.99.

    .venv/bin/python benchmarks/export_probes/int8_weight_only_probe.py \
        runs/smollm2-135m-study/m5/onnx-fp32 --layers 12
"""

from __future__ import annotations

import copy

import numpy as np

from toolchain.atomic import read_manifest
from toolchain.export.onnx_export import MODEL_FILE, OUTPUT_NAME
from toolchain.export.rowwise_int8.fp32_search import calibration_embedder, path_masks
from toolchain.export.rowwise_int8.gptq import gptq_columns
from toolchain.export.rowwise_int8.rewrite import (FALLBACK_MASK, calibration_paths,
                                                   rewrite_rowwise_int8, weight_matmul_groups)
from toolchain.export.rowwise_int8.smoothing import plan_input
from toolchain.export.rowwise_int8.statistics import channel_statistics, in_memory_session

from probe_common import calibration_sets, rowwise_parser


GROUPS_PER_LAYER = 4  # q/k/v, o, gate/up, down: the groups of one decoder layer, in graph order


def more_held_out(vocab_size: int, max_length: int, count: int = 24) -> list[dict]:
    rng = np.random.default_rng(4242)
    lengths = [int(rng.integers(1, 9)) if i < count // 2 else int(rng.integers(9, max_length + 1))
               for i in range(count)]
    return [{"input_ids": rng.integers(3, vocab_size, (1, n), dtype=np.int64),
             "attention_mask": np.ones((1, n), dtype=np.int64)} for n in lengths]


def weight_rounding_only(model, groups: dict, absmax: dict, gram: dict, count: int,
                         alpha: float, outliers: int, weight_qmax: int) -> None:
    """The first ``count`` groups' weights replaced in place by their int8 rounding, in fp32."""
    from onnx import numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    for x, nodes in list(groups.items())[:count]:
        mats = [numpy_helper.to_array(weights[n.input[1]]).astype(np.float32) for n in nodes]
        input_scale, packed, channels, _ = plan_input(x, mats, absmax[x], alpha, outliers)
        quant, column_scale = gptq_columns(
            packed, gram[x] * np.outer(input_scale, input_scale), weight_qmax)
        rounded = quant.astype(np.float32) * column_scale * input_scale[:, None]
        rounded[channels] = np.concatenate(mats, axis=1)[channels]  # exact in the profile
        bounds = np.cumsum([0] + [m.shape[1] for m in mats])
        for j, node in enumerate(nodes):
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(
                np.ascontiguousarray(rounded[:, bounds[j]:bounds[j + 1]]), node.input[1]))


def main() -> None:
    import onnx

    p = rowwise_parser(__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=12)
    args = p.parse_args()
    feeds, statistics, held = calibration_sets(args.artifact)
    manifest = read_manifest(args.artifact)
    held += more_held_out(manifest["vocab_size"], manifest["max_length"])
    rows = feeds + held
    base = onnx.load(str(args.artifact / MODEL_FILE))
    groups = weight_matmul_groups(base, set())
    absmax, gram = channel_statistics(args.artifact / MODEL_FILE, feeds, list(groups),
                                              statistics[len(feeds):])
    count = GROUPS_PER_LAYER * args.layers

    def report(name: str, embeddings: np.ndarray, reference: np.ndarray) -> None:
        cosine = np.sum(embeddings * reference, axis=1)
        unseen = cosine[len(feeds):]
        print(f"{name}: calibration {cosine[:len(feeds)].min():.5f}, held out min "
              f"{unseen.min():.5f}, p10 {np.quantile(unseen, 0.1):.5f}, median "
              f"{np.median(unseen):.5f}, rows below 0.99 {int(np.sum(cosine < 0.99))} of "
              f"{len(rows)}", flush=True)

    def plain_embed(model) -> np.ndarray:
        session = in_memory_session(model, None)
        out = np.concatenate([session.run([OUTPUT_NAME], row)[0] for row in rows])
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    reference = plain_embed(copy.deepcopy(base))
    rounded = copy.deepcopy(base)
    weight_rounding_only(rounded, weight_matmul_groups(rounded, set()), absmax, gram,
                         count, args.alpha, args.outliers, 63)
    report(f"weight rounding only, first {args.layers} layers", plain_embed(rounded), reference)
    rewrite_rowwise_int8(base, groups, 63, absmax, args.alpha, args.outliers,
                                 FALLBACK_MASK, gram=gram)
    paths = len(calibration_paths(args.outliers))
    embed = calibration_embedder(base, rows)
    for path, label in ((0, "int8"), (1, "int8 with outlier channels")):
        choice = np.full(len(groups), paths - 1)
        choice[:count] = path
        report(f"{label}, first {args.layers} layers", embed(path_masks(choice, paths)),
               reference)


if __name__ == "__main__":
    main()
