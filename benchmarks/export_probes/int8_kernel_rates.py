#!/usr/bin/env python
"""ORT's int8 GEMM kernels against fp32 on one MatMul shape: MatMulIntegerToFloat with u8
activations and s8 weights (the VNNI path on CPUs that have it), with u8 weights (u8 x u8: no
int16 saturation without VNNI), and a plain fp32 MatMul; interleaved, median of the rounds.

    .venv/bin/python benchmarks/export_probes/int8_kernel_rates.py --m 1024 --k 576 --n 1536 \
        --threads 1
"""

from __future__ import annotations

import argparse

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from toolchain.bench.latency import time_interleaved
from toolchain.cpu import recorded_flags


def int8_graph(m: int, k: int, n: int, unsigned_weights: bool, rng) -> bytes:
    weights = rng.integers(-127, 128, (k, n)).astype(np.int8)
    inits = [numpy_helper.from_array(np.array(1.0, np.float32), "a_scale"),
             numpy_helper.from_array(np.full(n, 0.01, np.float32), "b_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "a_zero_point")]
    inputs = ["a", "b", "a_scale", "b_scale", "a_zero_point"]
    if unsigned_weights:  # the same values, stored u8 around a zero point of 128
        weights = (weights.astype(np.int16) + 128).astype(np.uint8)
        inits.append(numpy_helper.from_array(np.array(128, np.uint8), "b_zero_point"))
        inputs.append("b_zero_point")
    inits.append(numpy_helper.from_array(weights, "b"))
    node = helper.make_node("MatMulIntegerToFloat", inputs, ["y"], domain="com.microsoft")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "a", TensorProto.UINT8, [m, k])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [m, n])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(
        "com.microsoft", 1)]).SerializeToString()


def fp32_graph(m: int, k: int, n: int, rng) -> bytes:
    weights = numpy_helper.from_array(rng.normal(size=(k, n)).astype(np.float32), "b")
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "a", TensorProto.FLOAT, [m, k])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [m, n])], initializer=[weights])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", type=int, default=1024)
    p.add_argument("--k", type=int, default=576)
    p.add_argument("--n", type=int, default=1536)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=12)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    # idle pools that spin steal the cores of the session being timed (three sessions here)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    graphs = {"u8 x s8": int8_graph(args.m, args.k, args.n, False, rng),
              "u8 x u8": int8_graph(args.m, args.k, args.n, True, rng),
              "fp32": fp32_graph(args.m, args.k, args.n, rng)}
    sessions = {name: ort.InferenceSession(g, options, providers=["CPUExecutionProvider"])
                for name, g in graphs.items()}
    feeds = {"a": rng.integers(0, 256, (args.m, args.k)).astype(np.uint8)}
    fp32_feeds = {"a": rng.normal(size=(args.m, args.k)).astype(np.float32)}
    calls = {name: (lambda s=session, f=fp32_feeds if name == "fp32" else feeds: s.run(None, f))
             for name, session in sessions.items()}
    samples = time_interleaved(calls, warmup=2, repeats=args.rounds - 2)
    print(f"MatMul {args.m}x{args.k}x{args.n}, {args.threads} thread(s), cpu {recorded_flags()}")
    for name, ms in samples.items():
        median = float(np.median(ms)) / 1e3
        print(f"{name}: {median * 1e3:.2f} ms, {2 * args.m * args.k * args.n / median / 1e9:.1f} "
              f"G(FL)OP/s")


if __name__ == "__main__":
    main()
