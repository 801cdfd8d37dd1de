#!/usr/bin/env python
"""Which weight MatMuls of row-wise int8 artifacts stay fp32, layer by layer, and their share of
the weight multiply-adds per token: with int8 products k times faster than fp32, the graph can
be at most 1 / (share + (1 - share) / k) times faster than its fp32 twin (Amdahl).

    .venv/bin/python benchmarks/export_probes/int8_fp32_share.py runs/smollm2-135m-study/m*/onnx-int8

Per layer, the letters name the projections still fp32: q k v o g(ate) u(p) d(own).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def fp32_share(model_file: Path) -> tuple[float, dict]:
    """(fp32 share of the weight multiply-adds per token, {layer: projection letters})."""
    import onnx

    graph = onnx.load(str(model_file), load_external_data=False).graph
    shapes = {i.name: tuple(i.dims) for i in graph.initializer}
    macs = {"fp32": 0, "int8": 0}
    layers: dict = defaultdict(set)
    for node in graph.node:
        if node.op_type == "MatMul" and len(shapes.get(node.input[1], ())) == 2:
            kind = "fp32"
            scopes = next((p.value for p in node.metadata_props
                           if p.key == "pkg.torch.onnx.name_scopes"), "")
            layer = re.search(r"layers\.(\d+)", scopes)
            names = [p for p in PROJECTIONS if p in scopes]
            layers[int(layer.group(1)) if layer else "head"].add(
                names[-1][0] if names else "?")
        elif node.op_type == "MatMulIntegerToFloat":
            kind = "int8"
        else:
            continue
        k, n = shapes[node.input[1]]
        macs[kind] += k * n
    share = macs["fp32"] / max(1, macs["fp32"] + macs["int8"])
    return share, {k: "".join(sorted(v)) for k, v in layers.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifacts", nargs="+", type=Path)
    p.add_argument("--int8-speed", type=float, default=3.0,
                   help="int8 products' speed over fp32 for the bound (default 3: 1047-1370 vs "
                        "386-449 G(FL)OP/s measured, export_fusion.md)")
    args = p.parse_args()
    for artifact in args.artifacts:
        share, layers = fp32_share(artifact / "model.onnx")
        bound = 1 / (share + (1 - share) / args.int8_speed)
        order = sorted(layers, key=lambda k: (isinstance(k, str), k))
        print(f"{artifact}: fp32 share of weight MACs {share:.1%}, bound {bound:.2f}x; "
              + " ".join(f"{k}:{layers[k]}" for k in order))


if __name__ == "__main__":
    main()
