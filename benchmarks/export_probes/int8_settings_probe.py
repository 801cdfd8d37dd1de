#!/usr/bin/env python
"""How a row-wise int8 setting does on a trained model before any export: the all-int8 graph's
worst cosine to fp32 on the calibration feeds and on held-out random-id rows, and (without
--quick) how many groups the profile's target_cosine search (rowwise_int8/fp32_search.py) sends
back to fp32 and how many it gives outlier channels, to reach 0.997 / 0.998 / 0.999 on the
calibration feeds.

    .venv/bin/python benchmarks/export_probes/int8_settings_probe.py \
        runs/smollm2-135m-study/m5/onnx-fp32 --weight-qmax 127 --activation-qmax 127 --quick

weight-qmax 63 is the profile's reduce_range (7-bit weights); activation-qmax 63 keeps every u8
code <= 127, which cannot saturate the int16 pair sums of ORT's u8 x s8 kernels without VNNI.
The search skips padding_exact (one text a feed: no padding), so its figures are the
calibration's, not verify's.
"""

from __future__ import annotations

import json
import time

import numpy as np

from toolchain.export.rowwise_int8.fp32_search import (calibration_embedder, group_damage,
                                                       path_masks, shortest_meeting,
                                                       upgrade_order)
from toolchain.export.rowwise_int8.rewrite import (FALLBACK_MASK, calibration_paths,
                                                   rewrite_rowwise_int8, weight_matmul_groups)
from toolchain.export.rowwise_int8.settings import WEIGHT_ROUNDINGS
from toolchain.export.rowwise_int8.statistics import channel_statistics

from probe_common import calibration_sets, rowwise_parser


TARGETS = (0.997, 0.998, 0.999)


def main() -> None:
    import onnx

    p = rowwise_parser(__doc__.splitlines()[0])
    p.add_argument("--weight-qmax", type=int, default=63)
    p.add_argument("--activation-qmax", type=int, default=127)
    p.add_argument("--weight-rounding", choices=WEIGHT_ROUNDINGS, default="nearest")
    p.add_argument("--quick", action="store_true", help="the all-int8 cosines only")
    args = p.parse_args()
    feeds, statistics, held = calibration_sets(args.artifact)
    started = time.perf_counter()
    model = onnx.load(str(args.artifact / "model.onnx"))
    groups = weight_matmul_groups(model, set())
    absmax, gram = channel_statistics(
        args.artifact / "model.onnx", feeds, list(groups),
        statistics[len(feeds):] if args.weight_rounding == "gptq" else None)
    rewrite_rowwise_int8(model, groups, args.weight_qmax, absmax, args.alpha,
                                 args.outliers, FALLBACK_MASK,
                                 activation_qmax=args.activation_qmax, gram=gram)
    embed = calibration_embedder(model, feeds + held)
    count, paths = len(groups), len(calibration_paths(args.outliers))
    fp32 = embed(path_masks(np.full(count, paths - 1), paths))

    def worst(choice: np.ndarray) -> tuple[float, float]:
        cosine = np.sum(embed(path_masks(choice, paths)) * fp32, axis=1)
        return float(cosine[:len(feeds)].min()), float(cosine[len(feeds):].min())

    def calibration(choice: np.ndarray) -> float:
        return worst(choice)[0]

    # every group int8 with the setting's outlier channels (the last int8 path)
    result = {"setting": {k: v for k, v in vars(args).items() if k not in ("artifact", "quick")},
              "groups": count, "all_int8": worst(np.full(count, paths - 2)), "targets": {}}
    print(f"all int8 (calibration, held out): {result['all_int8']}", flush=True)
    if not args.quick:
        damage = group_damage(calibration, count, paths)  # measured once, shared
        for target in TARGETS:
            moves = upgrade_order(damage, count, paths)
            choice, reached = shortest_meeting(calibration, moves, count, target)
            result["targets"][str(target)] = {
                "fp32_groups": int(np.sum(choice == paths - 1)),
                "outlier_groups": int(np.sum((choice > 0) & (choice < paths - 1))),
                "calibration": reached, "held_out": worst(choice)[1]}
            print(f"target {target}: {result['targets'][str(target)]}", flush=True)
    result["seconds"] = round(time.perf_counter() - started)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
