#!/usr/bin/env python
"""Worst cosine of graphs to an fp32 artifact, one text a run, on the int8 calibration feeds and
on held-out random-id rows (int8_settings_probe.py's), for bare graphs that verify never saw
(int8_rebuild.py's ablations).

    .venv/bin/python benchmarks/export_probes/int8_accuracy.py runs/smollm2-135m-study/m3/onnx-fp32 \
        /tmp/m3-no-outliers
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


from probe_common import calibration_and_held_out, embeddings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fp32", type=Path, help="the fp32 artifact (also names the source model)")
    p.add_argument("graphs", nargs="+", type=Path, help="directories holding model.onnx")
    args = p.parse_args()
    feeds, held = calibration_and_held_out(args.fp32)
    reference = [embeddings(args.fp32, rows) for rows in (feeds, held)]
    for graph in args.graphs:
        worst = [float(np.min(np.sum(embeddings(graph, rows) * ref, axis=1)))
                 for rows, ref in zip((feeds, held), reference)]
        print(f"{graph}: worst cosine {worst[0]:.5f} calibration, {worst[1]:.5f} held out")


if __name__ == "__main__":
    main()
