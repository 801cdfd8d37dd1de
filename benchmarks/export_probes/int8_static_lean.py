#!/usr/bin/env python
"""A feasibility probe, not a profile: the leanest int8 graph ORT's stock ops allow. Every
weight MatMul reads its input quantised with one calibrated scale per tensor (QuantizeLinear,
then MatMulIntegerToFloat with that scale: no per-row max, no row-scale Mul, no reshapes),
SmoothQuant and fp32 outlier channels as in the row-wise profile, padding-exact sums. Writes the
bare graph (speed: ort_op_profile.py) and prints its worst and median cosine to the fp32 graph
on the calibration feeds and on held-out random-id rows.

    .venv/bin/python benchmarks/export_probes/int8_static_lean.py \
        runs/smollm2-135m-study/m3/onnx-fp32 /tmp/static-m3 --outliers 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from toolchain.export.padding_exact import rewrite_padding_exact
from toolchain.export.rowwise_int8.gptq import quantise_columns
from toolchain.export.rowwise_int8.graph_edit import GraphEdit
from toolchain.export.rowwise_int8.rewrite import weight_matmul_groups
from toolchain.export.rowwise_int8.smoothing import plan_input, smoothed_input
from toolchain.export.rowwise_int8.statistics import channel_absmax

from probe_common import calibration_and_held_out, embeddings


def rewrite_static(model, absmax: dict, outliers: int, weight_qmax: int, alpha: float) -> None:
    from onnx import numpy_helper

    groups = weight_matmul_groups(model, set())
    g = GraphEdit(model)
    zero_point = g.const("st_zero_point", np.array(128, np.uint8))
    replacement: dict[str, list] = {}
    for index, (x, nodes) in enumerate(groups.items()):
        p, out = f"st{index}_", []
        mats = [numpy_helper.to_array(g.existing[n.input[1]]).astype(np.float32) for n in nodes]
        input_scale, packed, channels, exact = plan_input(x, mats, absmax[x], alpha, outliers)
        source, _ = smoothed_input(g, out, p, x, input_scale, len(nodes))
        # the calibrated max |x| after smoothing (outlier channels shrunk), per tensor
        scale = g.const(p + "a_scale", np.array((absmax[x] * input_scale).max() / 127,
                                                np.float32))
        quantised = g.node(out, "QuantizeLinear", [source, scale, zero_point], p + "xq")
        quant, column_scale = quantise_columns(packed, weight_qmax)
        picked = (g.node(out, "Gather", [source, g.const(p + "channels", channels)], p + "picked",
                         axis=-1) if len(channels) else None)
        bounds = np.cumsum([0] + [m.shape[1] for m in mats])
        for j, node in enumerate(nodes):
            q, cols = f"{p}{j}_", slice(bounds[j], bounds[j + 1])
            result = node.output[0]
            product = g.node(out, "MatMulIntegerToFloat",
                             [quantised, g.const(q + "w", quant[:, cols]), scale,
                              g.const(q + "w_scale", column_scale[cols]), zero_point],
                             result if picked is None else q + "product",
                             domain="com.microsoft")
            if picked is not None:
                exact_part = g.node(out, "MatMul", [picked, g.const(q + "w_exact", exact[:, cols])],
                                    q + "exact")
                g.node(out, "Add", [product, exact_part], result)
        replacement[nodes[0].name] = out
        for node in nodes[1:]:
            replacement[node.name] = []
    g.splice(replacement)


def main() -> None:
    import onnx

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path, help="an fp32 ONNX artifact")
    p.add_argument("out", type=Path, help="a directory for the bare model.onnx")
    p.add_argument("--outliers", type=int, default=8)
    p.add_argument("--weight-qmax", type=int, default=63)
    p.add_argument("--alpha", type=float, default=0.5)
    args = p.parse_args()
    feeds, held = calibration_and_held_out(args.artifact)
    model = onnx.load(str(args.artifact / "model.onnx"))
    rewrite_padding_exact(model)
    absmax = channel_absmax(args.artifact / "model.onnx", feeds,
                                    list(weight_matmul_groups(model, set())))
    rewrite_static(model, absmax, args.outliers, args.weight_qmax, args.alpha)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(args.out / "model.onnx"))
    for name, rows in (("calibration", feeds), ("held out", held)):
        cosine = np.sum(embeddings(args.artifact, rows) * embeddings(args.out, rows), axis=1)
        print(f"{name}: min cosine {cosine.min():.5f}, median {np.median(cosine):.5f}")


if __name__ == "__main__":
    main()
