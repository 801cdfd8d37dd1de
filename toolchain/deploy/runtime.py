"""What a saved graph asks of the ONNX Runtime that loads it: its real opset imports, the op
types of each domain, and the oldest onnxruntime release that implements them.

The release table is ONNX Runtime's own version matrix (docs/Versioning.md: the ONNX opset
each release implements; opset 23 checked here: 1.22.1 refuses it at load) plus the ops whose
CPU kernel came later than their opset (seen, not documented). A profile may also name the
runtimes it was run on (``runtime_targets``: benchmarks/deploy/old_ort.py runs the graph there).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

# default-domain opset -> first onnxruntime release implementing it (ORT docs/Versioning.md)
OPSET_RELEASES = {17: "1.13", 18: "1.14", 19: "1.15", 20: "1.17", 21: "1.18", 22: "1.20",
                  23: "1.23"}
# (domain, op, from opset) -> first release with a CPU kernel for it, where later than the
# opset's release. Seen with benchmarks/deploy/old_ort.py: onnxruntime 1.22.1 refuses opset 23
# at load; 1.23.2 runs the fused fp32 graph (Attention) but has no QuantizeLinear(23) kernel,
# which the int8 graph needs; 1.24.4 runs both.
OP_RELEASES = {("", "Attention", 23): "1.23", ("", "QuantizeLinear", 23): "1.24"}


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
    for (domain, op, from_opset), release in OP_RELEASES.items():
        if (op in ops.get(domain, []) and imports.get(domain, 0) >= from_opset
                and minimum != "unknown"
                and _version_key(release) > _version_key(minimum)):
            minimum = release
            basis.append(f"{domain or 'ai.onnx'}::{op} CPU kernel: onnxruntime {release}")
    return {"opset_imports": imports, "op_types": ops, "min_onnxruntime": minimum,
            "min_onnxruntime_basis": basis, "tested_onnxruntime": list(targets or [])}
