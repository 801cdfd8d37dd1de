"""`poolattn export --fuse`: onnxscript's ONNX Runtime fusions on the exported graph, and the
blockwise int8 profile (MatMulNBits). Issue 13, in progress: both are opt-in until they measure
better than the plain graph / dynamic int8 at every shape (benchmarks/results/export_fusion.md)."""

from __future__ import annotations

import pytest

from toolchain.atomic import read_manifest
from toolchain.export.pipeline import export_model_dir
from toolchain.presets import load_preset

from test_export_fixtures import make_model_dir, one_thread  # noqa: F401


def expected_fusions(preset: str, variant: str) -> dict[str, int]:
    """What matches on these Llama-family graphs today, per layer: two RMSNorms (one fused with
    the residual add), two rotary embeddings (q, k), one attention (SDPA, then rewritten as
    com.microsoft MultiHeadAttention, which takes the padding and causal masks); the final norm;
    the latent heads' GEGLU GELU. A count that drops means a rewrite stopped matching."""
    layers = int(load_preset(preset).backbone.config["num_hidden_layers"])
    counts = {"rms_normalization": 2 * layers + 1, "skip_rms_normalization": 2 * layers,
              "rotary_embedding": 2 * layers, "sdpa": layers, "sdpa_via_mha": layers}
    if variant != "m1":
        counts["erf_gelu"] = 1
    return counts


@pytest.mark.parametrize("preset,variant", [("tiny-mistral", "m1"), ("tiny-qwen2", "m5")])
def test_fused_graph_matches_every_fusion_and_passes_verify(tmp_path, preset, variant):
    """Causal (m1) and bidirectional (m5): the fused graph passes the unchanged gates (parity,
    batch and padding invariance, the attention probe on the fused graph)."""
    model_dir = make_model_dir(tmp_path, preset, variant)
    [(artifact, report)] = export_model_dir(model_dir, ["fp32"], threads=1, fuse=True,
                                            log=lambda *_: None)
    assert report["passed"], report["failures"]
    assert report["parity_texts"]["max_abs"] <= 1e-4
    manifest = read_manifest(artifact)
    assert manifest["fusions"] == expected_fusions(preset, variant)
    assert report["attention_probe"]["observed"] == manifest["attention"]


def test_blockwise_int8_is_batch_invariant(tmp_path):
    """MatMulNBits quantises activations per row and block, so a text's embedding does not
    depend on its batch partners (dynamic int8's per-tensor scales do: cosine ~0.9995)."""
    model_dir = make_model_dir(tmp_path, "tiny-mistral", "m5")
    [(artifact, report)] = export_model_dir(model_dir, ["int8-blockwise"], threads=1,
                                            log=lambda *_: None)
    assert report["passed"], report["failures"]
    assert report["batch_invariance"]["max_abs"] <= 1e-6
    assert 0.99 <= report["parity_texts"]["min_cosine"] < 1 - 1e-9  # quantised, not exact
    manifest = read_manifest(artifact)
    assert manifest["profile"]["quantization"] == "blockwise_int8"
    import onnx

    ops = {node.op_type for node in onnx.load(str(artifact / "model.onnx")).graph.node}
    assert "MatMulNBits" in ops
