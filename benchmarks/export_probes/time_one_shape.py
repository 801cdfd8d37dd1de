#!/usr/bin/env python
"""p50 wall time of ONNX graphs at one batch shape, in alternating rounds (each round runs every
graph once), as ratios to the first: a quick A/B for graph-level changes. Plain timing: ORT's
profiler (ort_op_profile.py) is for where the time goes, not for wall time (with profiling on,
the same graph read 676 and 1000 ms a run in one process, SmolLM2 m3 int8 at 8x128).

    .venv/bin/python benchmarks/export_probes/time_one_shape.py runs/smollm2-135m-study/m3/onnx-fp32 \
        runs/smollm2-135m-study/m3/onnx-int8 --batch 8 --seq 128 --rounds 15
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from toolchain.bench.latency import time_interleaved

from probe_common import GraphRunner


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("graphs", nargs="+", type=Path, help="directories holding model.onnx")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    ids = np.full((args.batch, args.seq), 100, np.int64)
    mask = np.ones((args.batch, args.seq), np.int64)
    runners = [GraphRunner(g / "model.onnx", args.threads) for g in args.graphs]
    samples = time_interleaved({i: (lambda r=r: r.run(ids, mask)) for i, r in enumerate(runners)},
                               warmup=3, repeats=args.rounds)
    times = list(samples.values())
    first = np.median(times[0])
    for graph, record in zip(args.graphs, times):
        print(f"{np.median(record):9.1f} ms  {first / np.median(record):.3f}x  {graph}")


if __name__ == "__main__":
    main()
