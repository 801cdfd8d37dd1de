#!/usr/bin/env python
"""How a row-wise int8 setting does on a trained model before any export: the all-int8 graph's
worst cosine to fp32 on the calibration feeds and on held-out random-id rows, and (without
--quick) how many groups the profile's target_cosine search (rowwise_int8.choose_paths) sends
back to fp32 and how many it gives outlier channels, to reach 0.997 / 0.998 / 0.999 on the
calibration feeds.

    .venv/bin/python benchmarks/export_large/int8_settings_probe.py \
        runs/smollm2-135m-study/m5/onnx-fp32 --weight-qmax 127 --activation-qmax 127 --quick

weight-qmax 63 is the profile's reduce_range (7-bit weights); activation-qmax 63 keeps every u8
code <= 127, which cannot saturate the int16 pair sums of ORT's u8 x s8 kernels without VNNI.
The search skips padding_exact (one text a feed: no padding), so its figures are the
calibration's, not verify's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from toolchain.atomic import read_manifest  # noqa: E402
from toolchain.contract import source_model_dir  # noqa: E402
from toolchain.export import rowwise_int8 as rowwise  # noqa: E402
from toolchain.export.optimize import read_calibration, write_calibration  # noqa: E402
from toolchain.modeling.model import load_embedding_model  # noqa: E402

TARGETS = (0.997, 0.998, 0.999)


def held_out_rows(max_length: int, vocab_size: int, count: int = 24) -> list[dict]:
    """Random-id rows like the calibration's (lengths geometric from 1 to max_length, jittered),
    from a seed neither the calibration nor verify uses."""
    rng = np.random.default_rng(777)
    rows = []
    for i in range(count):
        length = min(max_length, max(1, round(max_length ** (i / (count - 1)))
                                     + int(rng.integers(0, 3))))
        rows.append({"input_ids": rng.integers(3, vocab_size, (1, length), dtype=np.int64),
                     "attention_mask": np.ones((1, length), dtype=np.int64)})
    return rows


def calibration_sets(artifact: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """The export's calibration feeds for ``artifact``'s model, the same with the rows it reads
    only for statistics (GPTQ's X^T X), and the held-out rows."""
    reference = load_embedding_model(source_model_dir(artifact, read_manifest(artifact)))
    with tempfile.TemporaryDirectory() as scratch:
        write_calibration(Path(scratch), reference.tokenizer,
                          reference.backbone.config.vocab_size)
        feeds = read_calibration(Path(scratch))
        statistics = read_calibration(Path(scratch), statistics_rows=True)
    return feeds, statistics, held_out_rows(reference.tokenizer.max_length,
                                            reference.backbone.config.vocab_size)


def calibration_and_held_out(artifact: Path) -> tuple[list[dict], list[dict]]:
    """The export's calibration feeds for ``artifact``'s model, and the held-out rows."""
    feeds, _, held = calibration_sets(artifact)
    return feeds, held


def main() -> None:
    import onnx

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", type=Path, help="an fp32 ONNX artifact")
    p.add_argument("--weight-qmax", type=int, default=63)
    p.add_argument("--activation-qmax", type=int, default=127)
    p.add_argument("--outliers", type=int, default=8)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--weight-rounding", choices=rowwise.WEIGHT_ROUNDINGS, default="nearest")
    p.add_argument("--quick", action="store_true", help="the all-int8 cosines only")
    args = p.parse_args()
    feeds, statistics, held = calibration_sets(args.artifact)
    started = time.perf_counter()
    model = onnx.load(str(args.artifact / "model.onnx"))
    groups = rowwise.weight_matmul_groups(model, set())
    absmax, gram = rowwise.channel_statistics(
        args.artifact / "model.onnx", feeds, list(groups),
        statistics[len(feeds):] if args.weight_rounding == "gptq" else None)
    rowwise.rewrite_rowwise_int8(model, groups, args.weight_qmax, absmax, args.alpha,
                                 args.outliers, rowwise.FALLBACK_MASK,
                                 activation_qmax=args.activation_qmax, gram=gram)
    embed = rowwise._embedder(model, feeds + held)
    count, paths = len(groups), len(rowwise.calibration_paths(args.outliers))
    fp32 = embed(rowwise.path_masks(np.full(count, paths - 1), paths))

    def worst(choice: np.ndarray) -> tuple[float, float]:
        cosine = np.sum(embed(rowwise.path_masks(choice, paths)) * fp32, axis=1)
        return float(cosine[:len(feeds)].min()), float(cosine[len(feeds):].min())

    def calibration(choice: np.ndarray) -> float:
        return worst(choice)[0]

    # every group int8 with the setting's outlier channels (the last int8 path)
    result = {"setting": {k: v for k, v in vars(args).items() if k not in ("artifact", "quick")},
              "groups": count, "all_int8": worst(np.full(count, paths - 2)), "targets": {}}
    print(f"all int8 (calibration, held out): {result['all_int8']}", flush=True)
    if not args.quick:
        damage = rowwise.group_damage(calibration, count, paths)  # measured once, shared
        for target in TARGETS:
            moves = rowwise.upgrade_order(damage, count, paths)
            choice, reached = rowwise.shortest_meeting(calibration, moves, count, target)
            result["targets"][str(target)] = {
                "fp32_groups": int(np.sum(choice == paths - 1)),
                "outlier_groups": int(np.sum((choice > 0) & (choice < paths - 1))),
                "calibration": reached, "held_out": worst(choice)[1]}
            print(f"target {target}: {result['targets'][str(target)]}", flush=True)
    result["seconds"] = round(time.perf_counter() - started)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
