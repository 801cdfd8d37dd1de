#!/usr/bin/env python
"""int8 candidates written beside one fused fp32 artifact, to time with ort_op_profile.py:
MatMulNBits 8-bit in blocks of 128 (int8 compute) and ORT dynamic int8 (per-channel weights).

    .venv/bin/python benchmarks/export_large/int8_candidates.py /tmp/i13/smol/m5/onnx-fp32
    # -> /tmp/i13/smol/m5/nbits128/model.onnx, /tmp/i13/smol/m5/dyn/model.onnx
"""

import argparse
import logging
from pathlib import Path

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path,
                   help="an fp32 artifact dir (model.onnx, no external data)")
    args = p.parse_args()
    source = args.artifact / "model.onnx"
    logging.getLogger().setLevel(logging.ERROR)  # the quantizers' pre-processing hints
    nbits = args.artifact.parent / "nbits128"
    nbits.mkdir(exist_ok=True)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), bits=8, block_size=128,
                                     is_symmetric=True, accuracy_level=4)
    quantizer.process()
    onnx.save(quantizer.model.model, str(nbits / "model.onnx"))
    dynamic = args.artifact.parent / "dyn"
    dynamic.mkdir(exist_ok=True)
    quantize_dynamic(str(source), str(dynamic / "model.onnx"), op_types_to_quantize=["MatMul"],
                     weight_type=QuantType.QInt8, per_channel=True)
    print(f"wrote {nbits / 'model.onnx'} and {dynamic / 'model.onnx'}")


if __name__ == "__main__":
    main()
