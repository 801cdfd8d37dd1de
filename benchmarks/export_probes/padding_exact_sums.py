#!/usr/bin/env python
"""Which ONNX Runtime sums over tokens are bit-exact under padding: the measurements behind
toolchain/export/padding_exact/.

For a MatMul (1, 9, L, L+pad) x (1, 9, L+pad, N) whose padded K entries are exact zeros in A,
is each output bit-identical to the unpadded product, with the padding on the left or the
right of K? Printed per output width N: the lengths L (pads 1, 5, 37) where it is not. Then the
same for x^T @ ones (the Transpose that ORT fuses into FusedMatMul at ORT_ENABLE_ALL) and for
Exp at shifted positions.

    .venv/bin/python benchmarks/export_probes/padding_exact_sums.py
"""

import argparse

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

LENGTHS = (8, 60, 120, 127, 130, 200, 250, 260, 300, 500, 600, 1000, 1100)
PADS = (1, 5, 37)


def session(nodes, inputs, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        name, TensorProto.FLOAT, [None] * rank) for name, rank in inputs],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.graph_optimization_level = level
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def matmul_widths(rng) -> None:
    run = session([helper.make_node("MatMul", ["a", "b"], ["c"])], [("a", 4), ("b", 4)]).run
    for width in (1, 8, 16, 17, 32, 64, 65):
        inexact = []
        for length in LENGTHS:
            for pad in PADS:
                a = rng.random((1, 9, length, length)).astype(np.float32)
                b = rng.standard_normal((1, 9, length, width)).astype(np.float32)
                reference = run(None, {"a": a, "b": b})[0]
                for side in ("left", "right"):
                    zeros = np.zeros((1, 9, length, pad), np.float32)
                    junk = rng.standard_normal((1, 9, pad, width)).astype(np.float32)
                    a_pad = np.concatenate([zeros, a] if side == "left" else [a, zeros], -1)
                    b_pad = np.concatenate([junk, b] if side == "left" else [b, junk], -2)
                    if not np.array_equal(run(None, {"a": a_pad, "b": b_pad})[0], reference):
                        inexact.append(f"{side} L{length}+{pad}")
        lefts = sorted({int(s.split()[1][1:].split("+")[0]) for s in inexact if "left" in s})
        rights = [s for s in inexact if "right" in s]
        print(f"MatMul N={width:3d}: left padding inexact at L = {lefts or 'none'}; "
              f"right padding inexact: {rights or 'none'}")


def transposed_sum(rng) -> None:
    """x (1, L, 64) summed over L as Transpose(x) @ ones(L, 16), at two optimisation levels."""
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["xt", "ones"], ["c"])]
    for name, level in (("basic", ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
                        ("all (FusedMatMul)", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
        run = session(nodes, [("x", 3), ("ones", 2)], level).run
        inexact = []
        for length in LENGTHS:
            x = rng.standard_normal((1, length, 64)).astype(np.float32)
            reference = run(None, {"x": x, "ones": np.ones((length, 16), np.float32)})[0]
            for pad in PADS:
                padded = np.concatenate([np.zeros((1, pad, 64), np.float32), x], 1)
                ones = np.ones((length + pad, 16), np.float32)
                if not np.array_equal(run(None, {"x": padded, "ones": ones})[0], reference):
                    inexact.append(f"L{length}+{pad}")
        print(f"Transpose -> MatMul(ones, N=16), level {name}: left padding inexact at "
              f"{inexact or 'none'}")


def exp_positions(rng) -> None:
    run = session([helper.make_node("Exp", ["a"], ["c"])], [("a", 4)]).run
    inexact = 0
    for length in (3, 8, 13, 64, 100, 130, 517):
        for pad in (1, 5, 7, 37):
            a = (5 * rng.standard_normal((1, 9, length, length))).astype(np.float32)
            reference = run(None, {"a": a})[0]
            masked = np.full((1, 9, length, pad), -3e38, np.float32)
            left = run(None, {"a": np.concatenate([masked, a], -1)})[0][..., pad:]
            right = run(None, {"a": np.concatenate([a, masked], -1)})[0][..., :length]
            inexact += (not np.array_equal(reference, left)) + (not np.array_equal(reference, right))
    print(f"Exp at shifted positions: {inexact} inexact cases of 56")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(f"onnxruntime {ort.__version__}, 2 threads")
    generator = np.random.default_rng(0)
    matmul_widths(generator)
    transposed_sum(generator)
    exp_positions(generator)
