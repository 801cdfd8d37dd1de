#!/usr/bin/env python
"""int8 candidates written beside one fused fp32 artifact, to time with ort_op_profile.py:
MatMulNBits 8-bit in blocks of 128 (int8 compute) and ORT dynamic int8 (per-channel weights),
each built by the export's own registered transform (toolchain.export.optimize).

    .venv/bin/python benchmarks/export_large/int8_candidates.py /tmp/i13/smol/m5/onnx-fp32
    # -> /tmp/i13/smol/m5/nbits128/model.onnx, /tmp/i13/smol/m5/dyn/model.onnx
"""

import argparse
from pathlib import Path

from toolchain.export.optimize import apply_profile
from toolchain.export.profiles import Profile

CANDIDATES = [
    Profile("nbits128", quantization="blockwise_int8",
            quantize={"block_size": 128, "accuracy_level": 4}),
    Profile("dyn", quantization="dynamic_int8",
            quantize={"op_types": ["MatMul"], "weight_type": "qint8", "per_channel": True}),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path,
                   help="an fp32 artifact dir (model.onnx, no external data)")
    args = p.parse_args()
    for profile in CANDIDATES:
        target = args.artifact.parent / profile.name
        target.mkdir(exist_ok=True)
        apply_profile(args.artifact, target, profile, external=False)
        print(f"wrote {target / 'model.onnx'}")


if __name__ == "__main__":
    main()
