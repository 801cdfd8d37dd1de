"""The shipped graph with its probe value re-exposed, for verify's check of the attention mode."""

from __future__ import annotations

from pathlib import Path

from toolchain.errors import ToolchainError
from toolchain.export.onnx_export import PROBE_VALUE
from toolchain.export.padding_exact.compaction import gather_back_token_states


def with_probe_output(model_path: Path):
    """The shipped graph with PROBE_VALUE re-exposed as a second output (weights not loaded),
    in the caller's token order where the graph compacts its tokens (the int8 profile).

    Returns an onnx.ModelProto whose external data (if any) still points next to ``model_path``.
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    produced = {out for node in model.graph.node for out in node.output}
    if PROBE_VALUE not in produced:
        raise ToolchainError(f"{model_path}: graph has no internal value {PROBE_VALUE!r}; "
                             "cannot probe its attention mode")
    gather_back_token_states(model, PROBE_VALUE)
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(PROBE_VALUE))
    return model
