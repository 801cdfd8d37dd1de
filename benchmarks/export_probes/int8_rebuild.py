#!/usr/bin/env python
"""Rebuild a row-wise int8 graph from an fp32 artifact with an int8 artifact's choices (which
groups stay fp32, which take outlier channels) and no calibration search, for graph-level
ablations: the same choices under a changed rewrite, no outlier channels, the attention
rewritten padding-exact instead of the tokens compacted (--compact-tokens no), or no
padding-exact sums at all. A bare graph (no verify, no manifest): time it with
time_one_shape.py, compare it with int8_accuracy.py.

    .venv/bin/python benchmarks/export_probes/int8_rebuild.py runs/smollm2-135m-study/m3/onnx-fp32 \
        runs/smollm2-135m-study/m3/onnx-int8 /tmp/m3-no-outliers --outliers 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from toolchain.atomic import read_manifest
from toolchain.export.onnx_export import MODEL_FILE
from toolchain.export.padding_exact import rewrite_padding_exact
from toolchain.export.rowwise_int8.rewrite import rewrite_rowwise_int8, weight_matmul_groups
from toolchain.export.rowwise_int8.settings import RowwiseSettings
from toolchain.export.rowwise_int8.statistics import channel_statistics

from probe_common import calibration_sets


def main() -> None:
    import onnx

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fp32", type=Path, help="the fp32 artifact the int8 one was built from")
    p.add_argument("int8", type=Path, help="the int8 artifact whose choices to reuse")
    p.add_argument("out", type=Path, help="directory for the rebuilt model.onnx")
    p.add_argument("--outliers", type=int, default=None,
                   help="outlier channels in every int8 group (default: the artifact's choice)")
    p.add_argument("--no-padding-exact", action="store_true")
    p.add_argument("--compact-tokens", choices=["yes", "no"], default=None,
                   help="real tokens first and ONNX Attention as it is (default: the artifact's "
                        "profile setting; yes where the profile predates it)")
    args = p.parse_args()
    manifest = read_manifest(args.int8)  # once: it checks every file's sha256
    details = manifest["transform"]
    settings = RowwiseSettings.parse(manifest["profile"].get("quantize"), args.int8)
    feeds, statistics, _ = calibration_sets(args.fp32)
    model = onnx.load(str(args.fp32 / MODEL_FILE))
    if not args.no_padding_exact:
        compact = (settings.compact_tokens if args.compact_tokens is None
                   else args.compact_tokens == "yes")
        print(rewrite_padding_exact(model, compact_tokens=compact))
    groups = weight_matmul_groups(model, set(details["kept_fp32"]))
    # with GPTQ, the same X^T X as the export's: over its calibration rows, from the fp32 graph
    absmax, gram = channel_statistics(args.fp32 / MODEL_FILE, feeds, list(groups),
                                              statistics[len(feeds):] if settings.gptq else None)
    outliers = settings.outliers
    # the artifact's groups with outlier channels: those with a Gather of picked channels (its
    # groups are numbered in this order, rw<i>_)
    built = {n.output[0] for n in onnx.load(str(args.int8 / MODEL_FILE), load_external_data=False)
             .graph.node}
    plain = frozenset(x for i, x in enumerate(groups) if f"rw{i}_picked" not in built)
    if args.outliers is not None:
        outliers, plain = args.outliers, frozenset()
    counts = rewrite_rowwise_int8(model, groups, settings.weight_qmax, absmax,
                                          settings.alpha, outliers, plain=plain, gram=gram)
    args.out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(args.out / MODEL_FILE))
    print(f"wrote {args.out / MODEL_FILE}: {counts}")


if __name__ == "__main__":
    main()
