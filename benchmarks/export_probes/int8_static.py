#!/usr/bin/env python
"""Static int8 candidate (issue 13): ORT quantize_static, QDQ, per-channel int8 weights, uint8
activations with MinMax scales calibrated on every other probe text, judged on all 16 (cosine to
the fp32 artifact, and each text alone vs in the batch). ``nodown`` keeps the MLP down
projections (K = intermediate size, where real decoders' activation outliers sit) in fp32.

    .venv/bin/python benchmarks/export_probes/int8_static.py /tmp/i13/smol/m5/onnx-fp32 nodown
    # -> /tmp/i13/smol/m5/static_nodown/model.onnx (time it with ort_op_profile.py)
"""

import argparse
import logging
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)

from toolchain.embedder import Embedder
from toolchain.ort_session import ort_session
from toolchain.probe_texts import PROBE_TEXTS


class ProbeTexts(CalibrationDataReader):
    """One text per calibration batch, tokenised under the artifact's contract."""

    def __init__(self, embedder: Embedder, texts: list[str]) -> None:
        self.rows = [embedder.tokenize([t]) for t in texts]

    def get_next(self) -> dict | None:
        return self.rows.pop() if self.rows else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path,
                   help="an fp32 artifact dir (model.onnx, no external data)")
    p.add_argument("mode", choices=["all", "nodown"])
    p.add_argument("--intermediate", type=int, default=1536,
                   help="the backbone's intermediate size: a MatMul weight with this many input "
                        "rows is a down projection (SmolLM2-135M: 1536)")
    args = p.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    embedder = Embedder.from_artifact(args.artifact, provider="cpu")
    tokens = embedder.tokenize(PROBE_TEXTS)
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    reference = embedder.run(ids, mask)
    model = onnx.load(str(args.artifact / "model.onnx"))
    dims = {i.name: tuple(i.dims) for i in model.graph.initializer}
    down = [n.name for n in model.graph.node if n.op_type == "MatMul"
            and dims.get(n.input[1], (0,))[0] == args.intermediate]
    target = args.artifact.parent / f"static_{args.mode}"
    target.mkdir(exist_ok=True)
    quantize_static(str(args.artifact / "model.onnx"), str(target / "model.onnx"),
                    ProbeTexts(embedder, PROBE_TEXTS[::2]), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["MatMul"], per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=down if args.mode == "nodown" else [],
                    calibrate_method=CalibrationMethod.MinMax)
    session, _ = ort_session(str(target / "model.onnx"), None, "cpu")
    run = lambda i, m: session.run(None, {"input_ids": i, "attention_mask": m})[0]  # noqa: E731
    batched = run(ids, mask)
    alone = np.concatenate([run(ids[i:i + 1], mask[i:i + 1]) for i in range(len(ids))])
    print(f"{target}: {len(down) if args.mode == 'nodown' else 0} MatMuls kept fp32; min cosine "
          f"to fp32 {(batched * reference).sum(-1).min():.5f}; alone vs batch max |d| "
          f"{np.abs(batched - alone).max():.2e}")


if __name__ == "__main__":
    main()
