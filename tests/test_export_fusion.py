"""`poolattn export` fuses the exported graph for ONNX Runtime by default (onnxscript's
fusions; `--no-fuse` skips them), and the opt-in int8 candidates of issue 13: blockwise
(MatMulNBits) and static (QDQ) int8 (benchmarks/results/export_fusion.md)."""

from __future__ import annotations

import pytest

from toolchain.atomic import read_manifest
from toolchain.export.pipeline import export_model_dir
from toolchain.presets import load_preset

from test_export_fixtures import make_model_dir, one_thread  # noqa: F401


def expected_fusions(preset: str, variant: str) -> dict[str, int]:
    """The fused ops in the final graph of these Llama-family models, per layer: two RMSNorms
    fused with the residual add, two rotary embeddings (q, k), one ONNX Attention (the fused
    MultiHeadAttention rewritten: k and v of their own heads, the padding and causal masks as
    a bias); the first norm; the latent heads' GEGLU GELU. Counted in the saved graph, not in
    the rewrites' match counts: a rotary fusion that matched and was then inlined back had
    counted. A count that drops means a fusion stopped holding."""
    layers = int(load_preset(preset).backbone.config["num_hidden_layers"])
    counts = {"Attention": layers, "RotaryEmbedding": 2 * layers,
              "SimplifiedLayerNormalization": 1, "SkipSimplifiedLayerNormalization": 2 * layers}
    if variant != "m1":
        counts["Gelu"] = 1
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
    import onnx

    graph = onnx.load(str(artifact / "model.onnx")).graph
    saved = [node.op_type for node in graph.node]
    assert {op: saved.count(op) for op in manifest["fusions"]} == manifest["fusions"]
    assert "Neg" not in saved  # rotate_half's negation: the rotary was not inlined back
    # k and v reach Attention with their own heads (2 of 4), not repeated to the query's
    config = load_preset(preset).backbone.config
    heads = {(a.name, a.i) for n in graph.node if n.op_type == "Attention" for a in n.attribute}
    assert heads == {("q_num_heads", config["num_attention_heads"]),
                     ("kv_num_heads", config["num_key_value_heads"])}
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


@pytest.mark.parametrize("preset,variant", [("tiny-mistral", "m5"), ("tiny-llama", "m1")])
def test_static_int8_is_batch_invariant_and_keeps_the_listed_modules_fp32(tmp_path, preset,
                                                                           variant):
    """Static int8: fixed activation scales calibrated at export, so a text embeds the same alone
    or in a batch; MatMuls inside the profile's keep_fp32 modules keep their float weights."""
    import onnx

    from toolchain.export.graph_files import matmuls_in_modules

    model_dir = make_model_dir(tmp_path, preset, variant)
    [(artifact, report)] = export_model_dir(model_dir, ["int8-static"], threads=1,
                                            log=lambda *_: None)
    assert report["passed"], report["failures"]
    assert report["batch_invariance"]["max_abs"] <= 1e-6
    assert 0.99 <= report["parity_texts"]["min_cosine"] < 1 - 1e-9  # quantised, not exact
    model = onnx.load(str(artifact / "model.onnx"))
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    float_weights = {i.name for i in model.graph.initializer
                     if i.data_type == onnx.TensorProto.FLOAT}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    int8 = [n.name for n in matmuls if producer.get(n.input[1]) == "DequantizeLinear"]
    layers = int(load_preset(preset).backbone.config["num_hidden_layers"])
    assert len(int8) == 2 * layers  # the MLP gate and up projections of every layer
    kept = set(matmuls_in_modules(model, ["self_attn", "mlp.down_proj", "model.head"]))
    kept_weights = [n.input[1] for n in matmuls if n.name in kept and n.input[1] in float_weights]
    assert len(kept_weights) >= 5 * layers and not kept & set(int8)


def test_static_int8_needs_the_exports_calibration_feeds(tmp_path):
    from toolchain.errors import ToolchainError
    from toolchain.export.transforms import apply_profile
    from toolchain.export.profiles import load_profile

    (tmp_path / "out").mkdir()
    with pytest.raises(ToolchainError, match="calibration.npz: missing"):
        apply_profile(tmp_path, tmp_path / "out", load_profile("int8-static"), False)
