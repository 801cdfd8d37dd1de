#!/usr/bin/env python
"""int8 candidates written beside one fused fp32 artifact, to time with ort_op_profile.py or
grid.py: MatMulNBits 8-bit in blocks of 128 (int8 compute) and ORT dynamic int8 (per-channel
weights), and any export profile named with --profile (calibrated ones calibrate on the export's
own feeds, tokenised with the source model's tokenizer), each built by the export's own
registered transform (toolchain/export/transforms/). Bare graphs: not verified, for speed only.

    .venv/bin/python benchmarks/export_probes/int8_candidates.py /tmp/i13/smol/m5/onnx-fp32 \
        --profile export/int8.yaml
    # -> /tmp/i13/smol/m5/{nbits128,dyn,int8}/model.onnx (+ details.json)
"""

import argparse
import json
import tempfile
from pathlib import Path

from toolchain.atomic import read_manifest
from toolchain.contract import source_model_dir
from toolchain.export.onnx_export import MODEL_FILE
from toolchain.export.profiles import Profile, load_profile
from toolchain.export.calibration import write_calibration
from toolchain.export.transforms import apply_profile, needs_calibration

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
    p.add_argument("--profile", action="append", default=[], type=Path,
                   help="an export profile YAML to build as well (repeatable)")
    p.add_argument("--only-profiles", action="store_true", help="skip the built-in candidates")
    args = p.parse_args()
    profiles = ([] if args.only_profiles else CANDIDATES) + [load_profile(f) for f in args.profile]
    model = None  # the source model, loaded once if a profile calibrates (its tokenizer)
    if any(needs_calibration(profile) for profile in profiles):
        from toolchain.modeling.model import load_embedding_model

        model = load_embedding_model(source_model_dir(args.artifact, read_manifest(args.artifact)))
    for profile in profiles:
        target = args.artifact.parent / profile.name
        target.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch:
            source = Path(scratch)
            (source / MODEL_FILE).symlink_to((args.artifact / MODEL_FILE).resolve())
            if needs_calibration(profile):
                write_calibration(source, model.tokenizer, model.backbone.config.vocab_size)
            built = apply_profile(source, target, profile, external=False)
        (target / "details.json").write_text(json.dumps(built, indent=1) + "\n")
        print(f"wrote {target / 'model.onnx'} in {built['seconds']} s: {built['details']}")


if __name__ == "__main__":
    main()
