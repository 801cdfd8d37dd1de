#!/usr/bin/env python
"""Is the int8-blockwise profile's MatMulNBits (8-bit, symmetric, accuracy_level 4)
row-invariant? One node, a (B, T, 576) x (576, 1536) weight, quantised by the profile's own
transform: every row alone, with its batch, and behind 5 zero rows of padding must give the same
output bit for bit (prints max |diff|; 0 means invariant).

    .venv/bin/python benchmarks/export_probes/matmulnbits_rows.py
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from toolchain.export.profiles import load_profile
from toolchain.export.transforms import apply_profile

K, N = 576, 1536  # SmolLM2's hidden size and its fused q/k/v-sized outputs


def main() -> None:
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((K, N), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "T", N])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with tempfile.TemporaryDirectory() as scratch:  # quantised by the shipped profile itself
        source, target = Path(scratch) / "fp32", Path(scratch) / "int8"
        source.mkdir()
        target.mkdir()
        onnx.save(model, str(source / "model.onnx"))
        apply_profile(source, target, load_profile("int8-blockwise"), external=False)
        session = ort.InferenceSession(str(target / "model.onnx"),
                                       providers=["CPUExecutionProvider"])
    run = lambda x: session.run(None, {"x": x})[0]  # noqa: E731
    for length in (1, 2, 7, 40, 300):
        for batch in (1, 16):
            x = rng.standard_normal((batch, length, K), dtype=np.float32)
            whole = run(x)
            alone = np.concatenate([run(x[i:i + 1]) for i in range(batch)])
            padded = run(np.concatenate([np.zeros((batch, 5, K), np.float32), x], axis=1))[:, 5:]
            print(f"B {batch} T {length}: alone {np.abs(whole - alone).max():.3g}, "
                  f"behind padding {np.abs(whole - padded).max():.3g}")


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    main()
