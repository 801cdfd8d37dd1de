"""What a saved graph asks of the ONNX Runtime that loads it: its real opset imports, the op
types of each domain, and the oldest onnxruntime release that implements them.

The release table is ONNX Runtime's own version matrix (docs/Versioning.md: the ONNX opset
each release implements) plus the ops that arrived later than their opset: the CPU kernel of
ONNX ``Attention`` (opset 23) came in 1.23, so a fused graph needs 1.23 even though 1.22
implements opset 23's other ops. A profile may also name the runtimes it was run on
(``targets``: benchmarks/deploy/old_ort.py runs the graph under them).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

# default-domain opset -> first onnxruntime release implementing it (ORT docs/Versioning.md)
OPSET_RELEASES = {17: "1.13", 18: "1.14", 19: "1.15", 20: "1.17", 21: "1.18", 22: "1.20",
                  23: "1.23"}
# (domain, op) -> first release with a CPU kernel for it, where later than its opset's release
OP_RELEASES = {("", "Attention"): "1.23"}


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def graph_ops(model_path: Path) -> tuple[dict[str, int], dict[str, list[str]]]:
    """(opset imports {domain: version}, {domain: sorted op types used}) of a saved graph
    (main graph and functions; external weights are not read)."""
    import onnx

    proto = onnx.load(str(model_path), load_external_data=False)
    imports = {entry.domain or "": int(entry.version) for entry in proto.opset_import}
    used: dict[str, set[str]] = defaultdict(set)
    nodes = list(proto.graph.node) + [n for f in proto.functions for n in f.node]
    for node in nodes:
        used[node.domain or ""].add(node.op_type)
    return imports, {domain: sorted(ops) for domain, ops in sorted(used.items())}


def runtime_facts(model_path: Path, targets: list[str] | None = None) -> dict:
    """The manifest's ``runtime`` block: opset imports, op types per domain, the oldest
    onnxruntime that implements them (and why), and the profile's tested ``targets``."""
    imports, ops = graph_ops(model_path)
    opset = imports.get("", 0)
    minimum = OPSET_RELEASES.get(opset, "unknown")
    basis = [f"default-domain opset {opset}: onnxruntime {minimum}"]
    for (domain, op), release in OP_RELEASES.items():
        if (op in ops.get(domain, []) and minimum != "unknown"
                and _version_key(release) > _version_key(minimum)):
            minimum = release
            basis.append(f"{domain or 'ai.onnx'}::{op} CPU kernel: onnxruntime {release}")
    return {"opset_imports": imports, "op_types": ops, "min_onnxruntime": minimum,
            "min_onnxruntime_basis": basis, "tested_onnxruntime": list(targets or [])}
