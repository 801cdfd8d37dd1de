#!/usr/bin/env python
"""Wall time per run and ONNX Runtime kernel time per op type of exported artifacts, one batch
shape, via ORT's own profiler (e.g. a fused graph against the graph as exported).

    .venv/bin/python benchmarks/export_probes/ort_op_profile.py A/onnx-fp32 B/onnx-fp32 \
        --batch 1 --seq 32 --threads 1
"""

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from toolchain.ort_session import session_options


def profile(artifact: Path, batch: int, seq: int, threads: int, runs: int) -> tuple[float, dict]:
    options = session_options(None, threads)  # the artifacts' own settings (level "all")
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    session = ort.InferenceSession(str(artifact / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    feeds = {"input_ids": np.full((batch, seq), 100, np.int64),
             "attention_mask": np.ones((batch, seq), np.int64)}
    for _ in range(3):
        session.run(None, feeds)
    start = time.perf_counter()
    for _ in range(runs):
        session.run(None, feeds)
    wall_ms = (time.perf_counter() - start) / runs * 1e3
    per_op: collections.Counter = collections.Counter()
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1e3 / (runs + 3)
    return wall_ms, dict(per_op.most_common())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifacts", nargs="+", type=Path)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--top", type=int, default=8, help="how many op types to list, largest first")
    args = p.parse_args()
    for artifact in args.artifacts:
        wall, ops = profile(artifact, args.batch, args.seq, args.threads, args.runs)
        top = ", ".join(f"{name} {ms:.2f}" for name, ms in list(ops.items())[:args.top])
        print(f"{artifact}: {wall:.1f} ms a run; kernel ms a run: {top}")


if __name__ == "__main__":
    main()
