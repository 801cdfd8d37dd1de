#!/usr/bin/env python
"""Issue 13's one benchmark run: exported graphs against eager PyTorch and the machine's own
MatMul limit, on one grid, interleaved.

Each group is one model: its ONNX artifacts (e.g. as exported, fused, int8) and its merged
PyTorch model, timed in alternating rounds per shape (time_interleaved), so that load drift on a
shared machine hits every contender alike. The limit is ONNX Runtime's best fp32 rate on single
MatMul graphs (toolchain.bench.latency.ort_matmul_limit), measured before and after the timing.
Achieved GFLOP/s = analytic FLOPs of the model (backbone + head) / p50.

    .venv/bin/python benchmarks/export_probes/grid.py \
        --group smollm2-m5=runs/smollm2-135m-study/m5/onnx-fp32,/tmp/m5/onnx-fp32-fused \
        --group tiny-m5=runs/tiny-mistral/m5/onnx-fp32,runs/tiny-mistral/m5/onnx-int8 \
        --grid 1x32,8x128,2x512,8x512 --threads 2 --out benchmarks/results/export_grid.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Interleaved contenders must not steal each other's cores: idle threads sleep instead of
# spinning (torch's OpenMP here, ORT's pool via allow_spinning below). Set before torch loads.
# Measured cost: at tiny shapes this slows eager torch ~3x (tiny m1 8x128: 28.4 ms here, 9.5 ms
# in `make bench`), so compare tiny models' eager rows with `poolattn bench`'s, not these.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from toolchain.bench.artifacts import inspect_artifact, open_artifact, torch_source
from toolchain.bench.latency import (machine_info, make_inputs, ort_matmul_limit,
                                     parse_grid, percentiles, time_interleaved)
from toolchain.bench.pipeline import source_macs

from probe_common import GraphRunner


def label_of(path: Path) -> str:
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest.get("kind") != "onnx_artifact":
        return "eager"
    fused = "fused" if manifest.get("fusions") else "as exported"
    return f"{manifest['profile']['name']} ({fused})"


def time_group(paths: list[Path], shapes, threads: int, warmup: int, repeats: int) -> list[dict]:
    """paths: artifact dirs (the first one's merged model is timed as "eager"), or
    LABEL:path for bare graphs (a model.onnx, or a directory holding one) and for artifacts
    whose labels would collide."""
    graphs = {}
    for path in paths:
        label, _, bare = str(path).partition(":")
        if bare:
            graph = Path(bare) / "model.onnx" if Path(bare).is_dir() else Path(bare)
        else:
            inspect_artifact(path)  # manifest and sha256s checked
            label, graph = label_of(path), path / "model.onnx"
        if label in graphs:
            raise SystemExit(f"two graphs labelled {label!r} in one group: name one LABEL:PATH")
        graphs[label] = graph
    source = torch_source(inspect_artifact(next(p for p in paths if ":" not in str(p))))
    eager = open_artifact(inspect_artifact(source), "cpu", threads)
    runners = {label: GraphRunner(graph, threads) for label, graph in graphs.items()}
    runners["eager"] = eager
    rows = []
    for batch, seq_len in shapes:
        feed = make_inputs(eager, batch, seq_len)  # one input for all
        calls = {name: (lambda r=r: r.run(*feed)) for name, r in runners.items()}
        samples = time_interleaved(calls, warmup=warmup, repeats=repeats)
        flop = 2 * batch * source_macs(source, seq_len)
        for name, ms in samples.items():
            stats = percentiles(ms)
            rows.append({"graph": name, "shape": f"{batch}x{seq_len}", **stats,
                         "repeats": len(ms), "gflops": flop / 1e9 / (stats["p50_ms"] / 1e3)})
        print(" | ".join(f"{r['graph']} {r['p50_ms']:.1f}" for r in rows[-len(samples):]),
              f"({batch}x{seq_len})", flush=True)
    return rows


def markdown(result: dict) -> str:
    """One table per group: p50 ms per shape, x eager (speedup), and % of the fp32 MatMul
    limit (analytic fp32-equivalent FLOPs / p50: int8 graphs can pass 100 %)."""
    out = []
    for name, rows in result["groups"].items():
        shapes = list(dict.fromkeys(r["shape"] for r in rows))
        eager = {r["shape"]: r["p50_ms"] for r in rows if r["graph"] == "eager"}
        out += [f"**{name}** (p50 ms; x eager; % of the MatMul limit)", "",
                "| graph | " + " | ".join(shapes) + " |", "|---|" + "---|" * len(shapes)]
        for graph in dict.fromkeys(r["graph"] for r in rows):
            cells = {r["shape"]: r for r in rows if r["graph"] == graph}
            out.append(f"| {graph} | " + " | ".join(
                f"{cells[s]['p50_ms']:.1f}; {eager[s] / cells[s]['p50_ms']:.2f}x; "
                f"{cells[s]['percent_of_limit']:.0f} %" for s in shapes) + " |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--group", action="append", required=True,
                   help="NAME=ARTIFACT[,ARTIFACT...] (ONNX artifacts of one merged model)")
    p.add_argument("--grid", default="1x32,8x128,2x512,8x512")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--render", action="store_true", help="only print --out's tables")
    args = p.parse_args()
    if args.render:
        print(markdown(json.loads(args.out.read_text())))
        return
    shapes = parse_grid(args.grid)
    start = time.time()
    result = {"command": " ".join(sys.argv), "machine": machine_info(),
              "settings": vars(args) | {"out": str(args.out),
                                        "OMP_WAIT_POLICY": os.environ["OMP_WAIT_POLICY"],
                                        "ort_allow_spinning": 0},
              "limit_before": ort_matmul_limit(args.threads), "groups": {}}
    for spec in args.group:
        name, _, paths = spec.partition("=")
        result["groups"][name] = time_group([Path(x) for x in paths.split(",")], shapes,
                                            args.threads, args.warmup, args.repeats)
    result["limit_after"] = ort_matmul_limit(args.threads)
    result["seconds"] = round(time.time() - start, 1)
    limit = max(result["limit_before"]["gflops"], result["limit_after"]["gflops"])
    for rows in result["groups"].values():
        for row in rows:
            row["percent_of_limit"] = 100 * row["gflops"] / limit
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    print(f"limit {limit:.0f} GFLOP/s; wrote {args.out} ({result['seconds']} s)")


if __name__ == "__main__":
    main()
