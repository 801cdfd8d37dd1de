"""An exported graph's files and module scopes, shared by the profile transforms: writing a graph
as the artifact's model.onnx (+ model.onnx.data), and finding MatMuls by the module that traced
them."""

from __future__ import annotations

from pathlib import Path

from toolchain.export.onnx_export import DATA_FILE, MODEL_FILE


def graph_files(external: bool) -> list[str]:
    """The files a graph occupies in an artifact: model.onnx, plus its data file if external."""
    return [MODEL_FILE] + ([DATA_FILE] if external else [])


def save_graph(model, target: Path, external: bool) -> None:
    """Write ``model`` (an onnx.ModelProto) as ``target``/model.onnx, its tensors in the one
    model.onnx.data if ``external``."""
    import onnx

    onnx.save_model(model, str(target / MODEL_FILE), save_as_external_data=external,
                    all_tensors_to_one_file=True, location=DATA_FILE, size_threshold=1024)


def rename_external(target: Path, external: bool) -> None:
    """ORT's quantizers name their data file themselves; rewrite it as the one model.onnx.data."""
    if not external:
        return
    import onnx

    model = onnx.load(str(target / MODEL_FILE))
    for stray in target.glob("*.data"):
        stray.unlink()
    save_graph(model, target, external)


def matmuls_in_modules(model, patterns: list[str]) -> list[str]:
    """MatMul nodes that the exporter traced inside a module whose path contains one of
    ``patterns`` (the dynamo exporter records each node's module path in its metadata, under
    pkg.torch.onnx.name_scopes)."""
    names = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        scopes = next((p.value for p in node.metadata_props
                       if p.key == "pkg.torch.onnx.name_scopes"), "")
        if any(pattern in scopes for pattern in patterns):
            names.append(node.name)
    return names
