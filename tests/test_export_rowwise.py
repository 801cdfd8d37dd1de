"""The int8 profile (row-wise, issue 13): int8 MatMuls with one activation scale per row,
SmoothQuant folded into the weights and RMSNorms, fp32 outlier channels, padding-exact sums.
Checked: the rewrite is exact in real arithmetic, a row's result never depends on the other rows,
and exported tiny models pass verify with exact batch and padding invariance."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from toolchain.atomic import read_manifest
from toolchain.cpu import cpu_has_int8_dot, exact_activation_qmax, int8_pairs_saturate
from toolchain.export.pipeline import export_model_dir
from toolchain.errors import ToolchainError
from toolchain.export.rowwise_int8.fp32_search import (after_moves, path_masks, shortest_meeting,
                                                       upgrade_order)
from toolchain.export.rowwise_int8.gptq import gptq_columns, quantise_columns
from toolchain.export.rowwise_int8.rewrite import (FALLBACK_MASK, calibration_paths,
                                                   rewrite_rowwise_int8, weight_matmul_groups)
from toolchain.export.rowwise_int8.settings import RowwiseSettings
from toolchain.export.rowwise_int8.smoothing import OUTLIER_SHRINK, plan_input
from toolchain.ort_session import ort_session

from test_export_fixtures import make_model_dir, one_thread  # noqa: F401 (fixture)


def _outlier_inputs(rows: int, k: int, seed: int = 0) -> np.ndarray:
    """Activations with two outlier channels, as real decoders have them."""
    x = np.random.default_rng(seed).normal(size=(rows, k))
    x[:, [3, 11]] *= 40.0
    return x


def test_plan_is_exact_in_real_arithmetic():
    """Smoothing and the fp32 outlier path only re-associate x @ W: in float64 the parts add
    back to it, whatever alpha and however many outliers."""
    rng = np.random.default_rng(1)
    mats = [rng.normal(size=(16, 5)), rng.normal(size=(16, 3))]
    x = _outlier_inputs(7, 16)
    for alpha, outliers in [(0.0, 0), (0.5, 0), (0.5, 2), (0.8, 4)]:
        scale, packed, channels, exact = plan_input("x", mats, np.abs(x).max(0), alpha, outliers)
        scaled = x * scale.astype(np.float64)
        rebuilt = scaled @ packed + scaled[:, channels] @ exact.astype(np.float64)
        np.testing.assert_allclose(rebuilt, x @ np.concatenate(mats, axis=1), rtol=1e-5,
                                   atol=1e-5)
        if outliers:
            assert set(channels) >= {3, 11}  # the calibrated largest channels
            assert not packed[channels].any()  # they contribute nothing to the int8 path
            plain_scale = plan_input("x", mats, np.abs(x).max(0), alpha, 0)[0]
            np.testing.assert_array_equal(scale[channels], plain_scale[channels] * OUTLIER_SHRINK)


def _two_matmul_graph(k: int = 32) -> onnx.ModelProto:
    """x -> MatMul(W1), MatMul(W2) (one group: one quantised x); y = y1 + y2."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(size=(k, n)).astype(np.float32), f"w{i}")
             for i, n in ((1, 8), (2, 4))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["y1"], name="mm1"),
             helper.make_node("MatMul", ["x", "w2"], ["y2"], name="mm2"),
             helper.make_node("Concat", ["y1", "y2"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["b", "t", k])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["b", "t", 12])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("alpha,outliers", [(0.0, 0), (0.5, 4)])
def test_rows_do_not_depend_on_their_partners(alpha, outliers):
    """One row's output is bit-identical alone and beside a row 1000x larger (a per-tensor scale
    would crush it), and close to fp32; the two MatMuls share one quantised input, each its own
    int8 product (no packed product to split). 8-bit weights, with the activation codes this CPU
    sums without saturating (fewer where it lacks VNNI/AMX)."""
    model = _two_matmul_graph()
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _outlier_inputs(6, 32).astype(np.float32).reshape(2, 3, 32)
    groups = weight_matmul_groups(model, set())
    absmax = {"x": np.abs(x).reshape(-1, 32).max(0)}
    counts = rewrite_rowwise_int8(model, groups, 127, absmax, alpha, outliers,
                                  activation_qmax=exact_activation_qmax(127))
    assert counts["inputs"] == 1 and counts["matmuls"] == 2
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == 1 and ops.count("MatMulIntegerToFloat") == 2
    assert ops.count("Gemm") == (2 if outliers else 0) and "Split" not in ops  # outlier parts
    products = {n.output[0] for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"}
    assert "MatMul" not in ops and not any(  # the row scales are applied inside the products
        n.op_type == "Mul" and products & set(n.input) for n in model.graph.node)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    alone = session.run(None, {"x": x[:1]})[0]
    loud = x.copy()
    loud[1] *= 1000.0
    together = session.run(None, {"x": loud})[0]
    np.testing.assert_array_equal(alone[0], together[0])
    expected = reference.run(None, {"x": x})[0]
    got = session.run(None, {"x": x})[0]
    cosine = (got * expected).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(
        expected, axis=-1)
    assert cosine.min() > 0.999 and not np.array_equal(got, expected)


@pytest.mark.parametrize("activation_qmax", [127, 63])
def test_activation_codes_stay_in_their_range(activation_qmax):
    """The u8 codes span zero_point +- activation_qmax and no further: at 63 every code is at
    most 127, so that u8 x s8 pairs cannot saturate int16 sums (without VNNI) even with full
    8-bit weights, and the product tracks fp32. At 127 with 8-bit weights the product tracks fp32
    exactly where the CPU is detected to sum in int32 (VNNI/AMX); where it is detected to
    saturate, the saturation shows (cosine below 0.999, as seen on AVX2-only CPUs): the detection
    is checked against ONNX Runtime's real kernel on whichever CPU runs this."""
    model = _two_matmul_graph()
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _outlier_inputs(6, 32).astype(np.float32).reshape(2, 3, 32)
    groups = weight_matmul_groups(model, set())
    rewrite_rowwise_int8(model, groups, 127, {"x": np.abs(x).reshape(-1, 32).max(0)}, 0.5, 2,
                         activation_qmax=activation_qmax)
    [codes] = [n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    model.graph.output.append(helper.make_empty_tensor_value_info(codes))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got, quantised = session.run(None, {"x": x})
    assert quantised.dtype == np.uint8
    assert quantised.min() == 1 and quantised.max() == 2 * activation_qmax + 1  # each row's max
    expected = reference.run(None, {"x": x})[0]
    cosine = (got * expected).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(
        expected, axis=-1)
    if int8_pairs_saturate(127, activation_qmax):
        assert cosine.min() < 0.999
    else:
        assert cosine.min() > 0.999


@pytest.mark.parametrize("flags, vnni, exact_8bit", [
    (frozenset({"avx2"}), False, 64),  # AVX2 only: vpmaddubsw sums pairs in int16
    (frozenset({"avx2", "avx512f", "avx512_vnni"}), True, 127),
    (frozenset({"avx2", "avx_vnni"}), True, 127),
    (frozenset({"avx2", "amx_int8", "amx_bf16"}), True, 127),
])
def test_saturation_detection_on_every_cpu_kind(flags, vnni, exact_8bit):
    """Each CPU kind forced through the detection: int32 accumulation with VNNI or AMX, int16
    pair sums without; 7-bit weights (the shipped profile) never saturate, 8-bit weights only
    with codes past 64 on AVX2 alone (2 x 129 x 127 = 32766 fits int16, 2 x 131 x 127 does not)."""
    assert cpu_has_int8_dot(flags) is vnni
    assert exact_activation_qmax(63, flags) == 127
    assert exact_activation_qmax(127, flags) == exact_8bit
    assert int8_pairs_saturate(127, 65, flags) is not vnni
    assert not int8_pairs_saturate(127, 64, flags)


def _chain_graph(k: int = 32) -> onnx.ModelProto:
    """x -> MatMul(W1) -> h -> MatMul(W2) -> y: two groups, the second reading the first."""
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.normal(size=(k, k)).astype(np.float32), f"w{i}")
             for i in (1, 2)]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["b", k])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["b", k])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_fallback_mask_picks_each_groups_path_exactly():
    """The calibration graph (every group on every path: int8, int8 with outlier channels,
    fp32; a mask input choosing one per group): each choice is bit-identical to the graph
    rewritten with it, and all-fp32 to the original graph."""
    x = _outlier_inputs(5, 32).astype(np.float32)
    absmax = {"x": np.abs(x).max(0), "h": np.full(32, 50.0)}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL

    def run(model, feed):
        return ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"]).run(None, feed)[0]

    def rewritten(in_int8, plain=frozenset(), mask=None):
        model = _chain_graph()
        groups = weight_matmul_groups(model, set())
        groups = {x: nodes for x, nodes in groups.items() if x in in_int8}
        rewrite_rowwise_int8(model, groups, 127, absmax, 0.5, 2, mask, plain=plain)
        return model

    paths = calibration_paths(2)
    assert paths == [0, 2, None]  # no outlier channels, 2, fp32
    dual = rewritten({"x", "h"}, mask=FALLBACK_MASK)
    assert dual.graph.input[-1].name == FALLBACK_MASK
    expected = {(0, 0): rewritten({"x", "h"}, {"x", "h"}), (1, 1): rewritten({"x", "h"}),
                (0, 1): rewritten({"x", "h"}, {"x"}), (1, 2): rewritten({"x"}),
                (2, 0): rewritten({"h"}, {"h"}), (2, 2): _chain_graph()}
    outputs = {}
    for choice, model in expected.items():
        outputs[choice] = run(dual, {"x": x, FALLBACK_MASK: path_masks(np.array(choice), 3)})
        np.testing.assert_array_equal(outputs[choice], run(model, {"x": x}), err_msg=str(choice))
    assert len({out.tobytes() for out in outputs.values()}) == len(outputs)  # all differ


def test_upgrade_order_and_its_shortest_prefix():
    """Moves go to the group that damages most, to its next path that damages less (skipping
    an outlier path that does not help); a group that damages nothing never moves. The prefix
    search finds the shortest prefix that meets the target, drawing moves (and measuring a
    group's damage on a path) only up to about twice that prefix."""
    table = np.array([[0.05, 0.01, 0], [0.02, 0.03, 0], [0, 0, 0], [0.04, 0.02, 0]])
    asked = set()

    def damage(group, path):
        asked.add((group, path))
        return table[group, path]

    moves = list(upgrade_order(damage, 4, 3))
    assert moves == [(0, 1), (3, 1), (1, 2), (3, 2), (0, 2)]
    np.testing.assert_array_equal(after_moves(moves[:3], 4), [1, 2, 0, 1])
    runs = []

    def min_cosine(choice):  # damages add up: a stand-in for the graph's worst cosine
        runs.append(choice)
        return 1 - table[np.arange(4), choice].sum()

    for target, length in [(0.92, 1), (0.96, 3), (0.995, 5)]:
        runs.clear()
        choice, reached = shortest_meeting(min_cosine, iter(moves), 4, target)
        assert len(runs) <= 4  # prefixes of 1, 2, 4 (, 5) moves, then bisection
        np.testing.assert_array_equal(choice, after_moves(moves[:length], 4))
        assert reached == pytest.approx(min_cosine(choice)) and reached >= target
    # all moves together still miss an unreachable target: all of them, and their cosine
    choice, reached = shortest_meeting(min_cosine, iter(moves), 4, 1.5)
    np.testing.assert_array_equal(choice, after_moves(moves, 4))
    assert reached == 1.0
    # lazy: meeting the target after the first move asks for group 0's outlier path only
    asked.clear()
    shortest_meeting(min_cosine, upgrade_order(damage, 4, 3), 4, 0.92)
    assert {(g, p) for g, p in asked if p == 1} == {(0, 1)}


def test_target_cosine_restores_fp32_groups_until_met(tmp_path, monkeypatch):
    """With a calibration target above what all-int8 reaches, the most damaging groups go back
    to fp32 until the target holds, and the written graph (rewritten without them: no smoothing
    folded for them) reaches it on the calibration texts against the fp32 graph. The
    calibration sessions take the path of graphs over protobuf's 2 GiB (a scratch file with
    external data), forced here."""
    import toolchain.export.rowwise_int8.statistics as statistics
    from toolchain.embedder import Embedder
    from toolchain.export.profiles import profile_dir
    from toolchain.probe_texts import CALIBRATION_TEXTS

    opened = []
    monkeypatch.setattr(statistics, "PROTOBUF_BYTES", 0)
    monkeypatch.setattr(statistics, "ort_session", lambda model, *a, **k: (
        opened.append(model), ort_session(model, *a, **k))[1])

    model_dir = make_model_dir(tmp_path, "tiny-mistral", "m5")
    _perturb_norms(model_dir)
    target = 0.99999  # all-int8 measures 0.99996 on this model (GPTQ; 0.9998 rounding to nearest)
    profile = tmp_path / "int8-target.yaml"
    text = (profile_dir() / "int8.yaml").read_text()
    assert "target_cosine: 0.999 " in text and "\nname: int8\n" in text
    profile.write_text(text.replace("\nname: int8\n", "\nname: int8-target\n").replace(
        "target_cosine: 0.999 ", f"target_cosine: {target} "))
    [(fp32, _), (artifact, report)] = export_model_dir(
        model_dir, ["fp32", str(profile)], out=tmp_path / "out", threads=1, log=lambda *_: None)
    assert report["passed"], report["failures"]
    details = read_manifest(artifact)["transform"]
    assert details["calibrated_all_int8_min_cosine"] < target <= details["calibrated_min_cosine"]
    assert details["kept_fp32"], "the target is above all-int8: some group must stay fp32"
    assert len(opened) == 2 and all(str(path).endswith("model.onnx") for path in opened)
    ops = [n.op_type for n in onnx.load(str(artifact / "model.onnx")).graph.node]
    assert 0 < ops.count("QuantizeLinear") == details["inputs"]
    assert ops.count("MatMulIntegerToFloat") == details["matmuls"]
    # the written graph, not only the calibration graph, meets the target (texts one a batch,
    # as calibrated)
    embed = [Embedder.open(a, threads=1) for a in (fp32, artifact)]
    cosines = [(embed[0].encode([t]) @ embed[1].encode([t]).T).item() for t in CALIBRATION_TEXTS]
    assert min(cosines) >= target - 1e-6


def _perturb_norms(model_dir) -> None:
    """RMSNorm weights unlike each other, as trained ones are: the exporter merges identical
    initialisers (a random-init model's all-ones norms become one shared tensor), and a shared
    norm weight must not take one input's smoothing."""
    from toolchain.modeling import save_embedding_model
    from toolchain.modeling.model import load_embedding_model

    model = load_embedding_model(model_dir)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in model.backbone.named_parameters():
            if "norm" in name:
                param.mul_(1 + 0.1 * torch.rand(param.shape, generator=gen))
    save_embedding_model(model, model_dir)


@pytest.mark.parametrize("preset,variant,fuse", [("tiny-mistral", "m5", True),
                                                 ("tiny-llama", "m1", False)])
def test_rowwise_int8_passes_verify_batch_invariant(tmp_path, preset, variant, fuse):
    """Bidirectional on the fused graph (smoothing folded into its RMSNorms) and causal on the
    plain graph (smoothing as a Mul): verify passes, a text embeds identically alone or in any
    batch, every weight MatMul of the backbone and head is int8, and the manifest counts them."""
    model_dir = make_model_dir(tmp_path, preset, variant)
    _perturb_norms(model_dir)
    [(artifact, report)] = export_model_dir(model_dir, ["int8"], threads=1, fuse=fuse,
                                            log=lambda *_: None)
    assert report["passed"], report["failures"]
    assert report["batch_invariance"]["max_abs"] <= 1e-6
    # padding-exact sums over tokens: padding moves a text by rounding in the last (fp32) ops
    # only, not by flipped int8 roundings (batch invariance measured 7.5e-5 on the fused m5
    # with its attention rewritten but not its masked means)
    assert max(f["max_abs"] for f in report["padding_invariance"].values()) <= 1e-6
    assert 0.99 <= report["parity_texts"]["min_cosine"] < 1 - 1e-9  # quantised, not exact
    details = read_manifest(artifact)["transform"]
    graph = onnx.load(str(artifact / "model.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert details["name"] == "quantize_rowwise_int8" and details["weight_rounding"] == "gptq"
    exact = details["padding_exact"]  # tokens compacted; m5's per-layer masked means
    # real tokens first (compact_tokens): the fused graph's ONNX Attention runs as it is
    assert exact["compacted"] == 1 and exact["attention"] == 0
    layers = read_manifest(artifact)["fusions"].get("Attention", 0)
    assert exact["stock_attention"] == layers and (layers > 0) == fuse
    assert exact["token_sum"] == (layers if variant == "m5" else 0)
    assert fuse or exact["softmax_matmul"] > 0  # the unfused SDPA's, through its NaN guard
    assert ops.count("QuantizeLinear") == details["inputs"] > 0  # one per group
    assert ops.count("MatMulIntegerToFloat") == details["matmuls"] > details["inputs"]
    assert (details["norms_folded"] > 0) == fuse  # only the fused graph has RMSNorm nodes
    weights = {i.name: i for i in graph.initializer}
    fp32 = [n for n in graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    assert len(fp32) == len(details["kept_fp32"])  # what the calibration search restored
    # fp32 outlier channels (8 weight rows) only in the groups the search gave them to
    outliers = [n for n in graph.node if n.op_type == "Gemm"]
    assert (len(outliers) > 0) == (details["outlier_inputs"] > 0)
    assert all(numpy_helper.to_array(weights[n.input[1]]).shape[0] == 8 for n in outliers)


def _correlated_inputs(rows: int, k: int, seed: int) -> np.ndarray:
    """Activations that live near a low-dimensional subspace, as a decoder's do."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(5).normal(size=(12, k))
    return rng.normal(size=(rows, 12)) @ basis + 0.2 * rng.normal(size=(rows, k))


def test_gptq_rounding_moves_unseen_products_less_than_nearest():
    """GPTQ keeps nearest rounding's column scales and code range and the zero rows of outlier
    channels, and on inputs it was not fitted to moves x @ W several times less; with
    uncorrelated inputs of equal variance it has nothing to compensate and is nearest rounding,
    as it is for a channel the calibration never excites."""
    k, n = 96, 40
    weights = np.random.default_rng(6).normal(size=(k, n)).astype(np.float32)
    weights[[3, 50]] = 0  # outlier channels' rows (:func:`plan_input`)
    seen, unseen = _correlated_inputs(2000, k, 7), _correlated_inputs(2000, k, 8)
    nearest, nearest_scale = quantise_columns(weights, 63)
    quant, scale = gptq_columns(weights, seen.T @ seen, 63)
    np.testing.assert_array_equal(scale, nearest_scale)
    assert quant.dtype == np.int8 and np.abs(quant).max() <= 63 and not quant[[3, 50]].any()

    def moved(codes: np.ndarray) -> float:
        exact = unseen @ weights
        return float(np.linalg.norm(unseen @ (codes * scale) - exact) / np.linalg.norm(exact))
    assert moved(quant) < 0.5 * moved(nearest)
    np.testing.assert_array_equal(gptq_columns(weights, np.eye(k), 63)[0], nearest)
    silent = seen.copy()
    silent[:, 7] = 0  # a channel the calibration never excites: nothing to weigh it by
    np.testing.assert_array_equal(gptq_columns(weights, silent.T @ silent, 63)[0][7], nearest[7])


def test_weight_rounding_is_checked():
    with pytest.raises(ToolchainError, match=r"int8\.yaml: quantize\.weight_rounding 'stochastic'"):
        RowwiseSettings.parse({"weight_rounding": "stochastic"}, "int8.yaml")
    assert RowwiseSettings.parse({"weight_rounding": "gptq"}, "int8.yaml").gptq
    assert not RowwiseSettings.parse({}, "int8.yaml").gptq


def test_calibration_keeps_its_statistics_rows_apart(tmp_path):
    """The rows written only for statistics (GPTQ's X^T X) come after the feeds the search runs
    and only when asked for; the texts and random rows before them are unchanged by them."""
    from toolchain.export.calibration import read_calibration, write_calibration
    from toolchain.modeling import build_embedding_model
    from toolchain.probe_texts import CALIBRATION_TEXTS

    tokenizer = build_embedding_model("tiny-llama", "m1").tokenizer
    for name, statistics_rows in (("a", 6), ("b", 0)):
        (tmp_path / name).mkdir()
        write_calibration(tmp_path / name, tokenizer, 500, random_rows=4,
                          statistics_rows=statistics_rows)
    feeds = read_calibration(tmp_path / "a")
    everything = read_calibration(tmp_path / "a", statistics_rows=True)
    assert len(feeds) == len(CALIBRATION_TEXTS) + 4 and len(everything) == len(feeds) + 6
    assert len(read_calibration(tmp_path / "a", random_rows=False)) == len(CALIBRATION_TEXTS)
    for mine, theirs in zip(everything, read_calibration(tmp_path / "b")):
        np.testing.assert_array_equal(mine["input_ids"], theirs["input_ids"])
    lengths = [row["input_ids"].shape[1] for row in everything[len(feeds):]]
    assert all(1 <= n <= tokenizer.max_length for n in lengths) and len(set(lengths)) > 1
