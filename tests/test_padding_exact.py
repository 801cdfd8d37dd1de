"""Padding-exact sums over tokens (toolchain.export.padding_exact, issue 13): each rewrite
computes what it replaces, and a text's results come out bit-identical alone and padded on
either side, beyond the 128 and 256 tokens where MLAS's K blocks of a wider product would split
differently under left padding (benchmarks/export_probes/padding_exact_sums.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from toolchain.errors import ToolchainError
from toolchain.export.padding_exact import rewrite_padding_exact
from toolchain.export.padding_exact.compaction import (compact_to_right_padding,
                                                       gather_back_token_states)
from toolchain.export.padding_exact.emitter import MAX_EXACT_TOKENS

HEADS, HEAD_DIM = 2, 32
WIDTH = HEADS * HEAD_DIM
MASKED = np.finfo(np.float32).min  # what the exported graphs put on a masked key
LENGTHS = (7, 300, 700)
PADS = (("left", 5), ("left", 37), ("right", 9))


def _model(nodes: list, inputs: list, outputs: list, inits: list = (),
           opset: int = 18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid("com.microsoft", 1)])


def _tensor(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _mha_graph(width: int = WIDTH, key_padding_mask: bool = False,
               bnsh: bool = False) -> onnx.ModelProto:
    """``bnsh``: key and value as (B, heads, S, d), as the fused graph passes them once its
    rotary embedding is fused."""
    inputs = ["q", "k", "v", "", "kpm" if key_padding_mask else "", "bias"]
    node = helper.make_node("MultiHeadAttention", inputs, ["out"], domain="com.microsoft",
                            num_heads=HEADS, name="mha")
    kv_shape = ["b", HEADS, "s", width // HEADS] if bnsh else ["b", "s", width]
    graph_inputs = [_tensor("q", ["b", "s", width])] + [_tensor(n, kv_shape) for n in "kv"]
    graph_inputs.append(_tensor("bias", ["b", 1, "s", "s"]))
    if key_padding_mask:
        graph_inputs.append(helper.make_tensor_value_info("kpm", TensorProto.INT32, ["b", "s"]))
    return _model([node], graph_inputs, [_tensor("out", ["b", "s", width])])


def _grouped_mha_graph(heads: int = 4, kv_heads: int = 2,
                       v_by_token: bool = False) -> onnx.ModelProto:
    """MultiHeadAttention over the exporter's repeat_kv of k and v, (B, kv_heads, S, d) ->
    Unsqueeze(axis 2) -> Expand -> Reshape (B, heads, S, d), as grouped-query attention
    exports (Mistral, Qwen2, Llama: fewer key/value heads than query heads). ``v_by_token``: v
    comes in as (B, S, kv_heads, d) and is transposed to (B, kv_heads, S, d) first, as the
    exporter's v is."""
    groups = heads // kv_heads
    nodes = [helper.make_node("Transpose", ["v"], ["v_t"], perm=[0, 2, 1, 3])] if v_by_token else []
    inits = [numpy_helper.from_array(np.array([2], np.int64), "axis2"),
                        numpy_helper.from_array(np.array([1, 1, groups, 1, 1], np.int64), "rep"),
                        numpy_helper.from_array(np.array([0, heads, -1, HEAD_DIM], np.int64),
                                                "heads_shape")]
    for n in "kv":
        source = "v_t" if n == "v" and v_by_token else n
        nodes += [helper.make_node("Unsqueeze", [source, "axis2"], [n + "_u"]),
                  helper.make_node("Expand", [n + "_u", "rep"], [n + "_e"]),
                  helper.make_node("Reshape", [n + "_e", "heads_shape"], [n + "_r"])]
    nodes.append(helper.make_node("MultiHeadAttention", ["q", "k_r", "v_r", "", "", "bias"],
                                  ["out"], domain="com.microsoft", num_heads=heads, name="mha"))
    width = heads * HEAD_DIM
    graph_inputs = [_tensor("q", ["b", "s", width]), _tensor("k", ["b", kv_heads, "s", HEAD_DIM]),
                    _tensor("v", ["b", "s", kv_heads, HEAD_DIM] if v_by_token else
                            ["b", kv_heads, "s", HEAD_DIM])]
    graph_inputs.append(_tensor("bias", ["b", 1, "s", "s"]))
    return onnx.shape_inference.infer_shapes(
        _model(nodes, graph_inputs, [_tensor("out", ["b", "s", width])], inits))


def _onnx_attention_graph(heads: int = 4, kv_heads: int = 2, **attrs) -> onnx.ModelProto:
    """ONNX Attention (opset 23) as toolchain.export.ort_fusion writes it: q, k, v by token,
    k and v of their own heads, an additive mask."""
    node = helper.make_node("Attention", ["q", "k", "v", "bias"], ["out"], name="attention",
                            q_num_heads=heads, kv_num_heads=kv_heads, **attrs)
    inputs = [_tensor("q", ["b", "s", heads * HEAD_DIM]), _tensor("k", ["b", "s", kv_heads *
                                                                      HEAD_DIM]),
              _tensor("v", ["b", "s", kv_heads * HEAD_DIM]), _tensor("bias", ["b", 1, "s", "s"])]
    return _model([node], inputs, [_tensor("out", ["b", "s", heads * HEAD_DIM])], opset=23)


def _softmax_graph(head_dim: int = 12, nan_guard: bool = False) -> onnx.ModelProto:
    """A head's cross-attention over tokens: 3 latents query S tokens (head width 12, as the
    compact head's 72 at SmolLM2 width is not a multiple of 16). ``nan_guard``: the
    probabilities go through Where(IsNaN(p), 0, p), as in the exporter's unfused SDPA."""
    nodes = [helper.make_node("Softmax", ["scores"], ["p"], axis=-1, name="softmax"),
             helper.make_node("MatMul", ["pg" if nan_guard else "p", "v"], ["out"], name="pv")]
    inits = []
    if nan_guard:
        nodes[1:1] = [helper.make_node("IsNaN", ["p"], ["nan"], name="isnan"),
                      helper.make_node("Where", ["nan", "zero", "p"], ["pg"], name="where")]
        inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    return _model(nodes, [_tensor("scores", ["b", HEADS, 3, "s"]),
                          _tensor("v", ["b", HEADS, "s", head_dim])],
                  [_tensor("out", ["b", HEADS, 3, head_dim])], inits)


def _token_sum_graph(keepdims: int) -> onnx.ModelProto:
    node = helper.make_node("ReduceSum", ["x", "axes"], ["out"], keepdims=keepdims, name="sum")
    return _model([node], [_tensor("x", ["b", "s", WIDTH])], [_tensor("out", None)],
                  [numpy_helper.from_array(np.array([1], np.int64), "axes")])


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _rewritten(model: onnx.ModelProto, kind: str) -> ort.InferenceSession:
    counts = rewrite_padding_exact(model)
    assert counts == {k: int(k == kind) for k in ("attention", "grouped_attention",
                                                   "softmax_matmul", "token_sum",
                                                   "stock_attention", "compacted")}
    return _session(model)


def _pad(text: np.ndarray, pad: int, side: str, axis: int, rng, fill=None) -> np.ndarray:
    """``text`` with ``pad`` junk (or ``fill``) entries on ``side`` along ``axis``."""
    shape = list(text.shape)
    shape[axis] = pad
    junk = (50 * rng.normal(size=shape) if fill is None else np.full(shape, fill))
    parts = [junk.astype(np.float32), text] if side == "left" else [text, junk.astype(np.float32)]
    return np.concatenate(parts, axis=axis)


def _rows(length: int, pad: int, side: str) -> slice:
    return slice(pad, None) if side == "left" else slice(0, length)


def _attention_feeds(rng, length: int, pad: int, side: str, causal: bool,
                     bnsh: bool = False, heads: int = HEADS, kv_heads: int = HEADS) -> dict:
    """One text of ``length`` tokens (the same q/k/v rows whatever the padding) and ``pad``
    padded positions of junk on ``side``; ``bnsh``: key and value as (B, kv_heads, S, d)."""
    widths = {"q": heads * HEAD_DIM, "k": kv_heads * HEAD_DIM, "v": kv_heads * HEAD_DIM}
    text = {n: rng.normal(size=(1, length, w)).astype(np.float32) for n, w in widths.items()}
    feeds = {n: _pad(x, pad, side, 1, rng) for n, x in text.items()}
    if bnsh:
        for n in "kv":
            feeds[n] = np.ascontiguousarray(
                feeds[n].reshape(1, length + pad, kv_heads, -1).transpose(0, 2, 1, 3))
    total = length + pad
    valid = np.zeros(total, bool)
    valid[_rows(length, pad, side)] = True
    allowed = valid[None, :] & (np.tril(np.ones((total, total), bool)) if causal
                                else np.ones((total, total), bool))
    feeds["bias"] = np.where(allowed, 0, MASKED).astype(np.float32)[None, None]
    return feeds


def _assert_matches_and_bit_exact(exact, reference, feeds, length: int) -> None:
    """``exact`` computes what ``reference`` does on a text alone, and the text's rows come out
    bit-identical padded on either side; ``feeds(pad, side)`` builds the inputs."""
    out = exact.run(None, feeds(0, "left"))[0]
    np.testing.assert_allclose(out, reference.run(None, feeds(0, "left"))[0], rtol=1e-5,
                               atol=2e-6)
    for side, pad in PADS:
        np.testing.assert_array_equal(
            exact.run(None, feeds(pad, side))[0][:, _rows(length, pad, side)], out)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("causal,bnsh", [(True, False), (False, False), (True, True)])
def test_attention_matches_mha_and_is_bit_exact_under_padding(length, causal, bnsh):
    assert length + 37 <= MAX_EXACT_TOKENS
    reference = _session(_mha_graph(bnsh=bnsh))
    exact = _rewritten(_mha_graph(bnsh=bnsh), "attention")
    _assert_matches_and_bit_exact(exact, reference, lambda pad, side: _attention_feeds(
        np.random.default_rng(length), length, pad, side, causal, bnsh), length)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("causal,v_by_token", [(True, False), (False, False), (True, True)])
def test_grouped_attention_reads_kv_before_the_repeat_and_is_bit_exact(length, causal,
                                                                       v_by_token):
    """Grouped-query attention: the rewrite reads k and v before repeat_kv (whose copies go,
    with v's transpose when v comes by token), computes what MultiHeadAttention over the
    repeated k and v does, and is exact under padding."""
    graph = _grouped_mha_graph(v_by_token=v_by_token)
    counts = rewrite_padding_exact(graph)
    assert counts == {"attention": 1, "grouped_attention": 1, "softmax_matmul": 0,
                      "token_sum": 0, "stock_attention": 0, "compacted": 0}
    bypassed = {n + suffix for n in "kv" for suffix in ("_u", "_e", "_r")} | {"v_t"}
    assert not bypassed & {o for n in graph.graph.node for o in n.output}  # never computed
    exact, reference = _session(graph), _session(_grouped_mha_graph(v_by_token=v_by_token))

    def feeds(pad: int, side: str) -> dict:
        f = _attention_feeds(np.random.default_rng(length), length, pad, side, causal, True, 4, 2)
        if v_by_token:
            f["v"] = np.ascontiguousarray(f["v"].transpose(0, 2, 1, 3))
        return f

    _assert_matches_and_bit_exact(exact, reference, feeds, length)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("causal,kv_heads", [(True, 2), (False, 2), (True, 4)])
def test_onnx_attention_matches_and_is_bit_exact_under_padding(length, causal, kv_heads):
    """ONNX Attention with fewer k/v heads than q heads (grouped) and with as many: the rewrite
    computes what ORT's Attention does and is exact under padding."""
    graph = _onnx_attention_graph(kv_heads=kv_heads)
    counts = rewrite_padding_exact(graph)
    assert counts == {"attention": 1, "grouped_attention": int(kv_heads < 4),
                      "softmax_matmul": 0, "token_sum": 0, "stock_attention": 0,
                      "compacted": 0}
    exact, reference = _session(graph), _session(_onnx_attention_graph(kv_heads=kv_heads))

    _assert_matches_and_bit_exact(exact, reference, lambda pad, side: _attention_feeds(
        np.random.default_rng(length), length, pad, side, causal, False, 4, kv_heads), length)


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("nan_guard", [False, True])
def test_softmax_matmul_matches_and_is_bit_exact_under_padding(length, nan_guard):
    """With the NaN guard, a query whose every key is masked (-inf) comes out 0, as it did."""
    rng = np.random.default_rng(length)
    scores = 3 * rng.normal(size=(1, HEADS, 3, length)).astype(np.float32)
    if nan_guard:
        scores[0, 1, 2] = -np.inf
    v = rng.normal(size=(1, HEADS, length, 12)).astype(np.float32)
    graph = _softmax_graph(nan_guard=nan_guard)
    exact = _rewritten(graph, "softmax_matmul")
    assert not {"IsNaN", "Where"} & {n.op_type for n in graph.graph.node if
                                     not n.name.startswith("px")}  # the guard went with it
    out = exact.run(None, {"scores": scores, "v": v})[0]
    expected = _session(_softmax_graph(nan_guard=nan_guard)).run(
        None, {"scores": scores, "v": v})[0]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=2e-6)
    if nan_guard:
        assert not out[0, 1, 2].any() and np.isfinite(out).all()
    masked = -np.inf if nan_guard else MASKED  # a finite pad would unmask the -inf row
    for side, pad in PADS:
        feeds = {"scores": _pad(scores, pad, side, 3, rng, masked), "v": _pad(v, pad, side, 2, rng)}
        np.testing.assert_array_equal(exact.run(None, feeds)[0], out)


@pytest.mark.parametrize("keepdims", [0, 1])
def test_token_sum_matches_and_is_bit_exact_under_padding(keepdims):
    for length in LENGTHS:
        rng = np.random.default_rng(length)
        x = rng.normal(size=(1, length, WIDTH)).astype(np.float32)
        exact = _rewritten(_token_sum_graph(keepdims), "token_sum")
        out = exact.run(None, {"x": x})[0]
        np.testing.assert_allclose(out, x.sum(1, keepdims=bool(keepdims)), rtol=1e-5, atol=1e-4)
        for side, pad in PADS:  # a masked mean's padded rows are exact zeros
            padded = _pad(x, pad, side, 1, rng, 0.0)
            np.testing.assert_array_equal(exact.run(None, {"x": padded})[0], out)


def test_unsupported_attention_is_refused_by_name():
    with pytest.raises(ToolchainError, match="node mha: .*input key_padding_mask"):
        rewrite_padding_exact(_mha_graph(key_padding_mask=True))
    with pytest.raises(ToolchainError, match="node mha: .*width 34 for 2 heads"):
        rewrite_padding_exact(_mha_graph(width=34))  # 17 a head: no divisor in [2, 16]
    with pytest.raises(ToolchainError, match="node attention: Attention with attribute "
                                             "is_causal=1"):
        rewrite_padding_exact(_onnx_attention_graph(is_causal=1))
    with pytest.raises(ToolchainError, match="node pv: attention values of shape"):
        rewrite_padding_exact(_softmax_graph(head_dim=17))


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("causal,kv_heads", [(True, 2), (False, 2), (True, 4)])
def test_ort_attention_is_bit_exact_under_right_padding(length, causal, kv_heads):
    """What compact_to_right_padding relies on: ORT's own Attention computes a text's rows
    bit-identically with any number of padded positions after it (its products' K blocks
    start at token 0, its softmax sums key j in the same lane at any length), in a batch too.
    Fails on a CPU or ORT build where that does not hold (then: compact_tokens false)."""
    stock = _session(_onnx_attention_graph(kv_heads=kv_heads))

    def feeds(pad: int) -> dict:
        return _attention_feeds(np.random.default_rng(length), length, pad, "right", causal,
                                False, 4, kv_heads)

    alone = stock.run(None, feeds(0))[0]
    for pad in (1, 9, 37, 300):
        f = feeds(pad)
        partner = {n: np.random.default_rng(pad).normal(size=x.shape).astype(np.float32)
                   for n, x in f.items() if n != "bias"}
        partner["bias"] = np.zeros_like(f["bias"])  # every key of the partner is real
        batch = {n: np.concatenate([f[n], partner[n]]) for n in f}
        for run in (f, batch):
            np.testing.assert_array_equal(stock.run(None, run)[0][:1, :length], alone)


def _compaction_graph() -> onnx.ModelProto:
    """input_ids and attention_mask as read by a graph: passed out as they are, and "states"
    (B, S, 1), a per-token value from the ids (the probe's last hidden state, say)."""
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"])
            for n in ("input_ids", "attention_mask")]
    nodes = [helper.make_node("Identity", ["input_ids"], ["ids_seen"]),
             helper.make_node("Identity", ["attention_mask"], ["mask_seen"]),
             helper.make_node("Cast", ["input_ids"], ["ids_float"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["ids_float", "last"], ["states"])]
    outputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "s"])
               for n in ("ids_seen", "mask_seen")]
    return _model(nodes, ints, outputs, [numpy_helper.from_array(np.array([2], np.int64),
                                                                 "last")])


def test_compaction_moves_real_tokens_first_and_gathers_states_back():
    """Every reader of the ids and mask sees each row's real tokens first, in order (left,
    right, inner padding, none, all), and the per-token states come back in the caller's
    token order."""
    model = _compaction_graph()
    compact_to_right_padding(model, "input_ids", "attention_mask")
    gather_back_token_states(model, "states")
    model.graph.output.append(_tensor("states", ["b", "s", 1]))
    mask = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 1, 0, 1], [1, 1, 1, 1, 1],
                     [0, 0, 0, 0, 0]], np.int64)
    ids = np.arange(10, 35, dtype=np.int64).reshape(5, 5)
    ids_seen, mask_seen, states = _session(model).run(
        None, {"input_ids": ids, "attention_mask": mask})
    for row in range(len(ids)):
        real, padded = ids[row][mask[row] == 1], ids[row][mask[row] == 0]
        np.testing.assert_array_equal(ids_seen[row], np.concatenate([real, padded]))
        np.testing.assert_array_equal(mask_seen[row], np.sort(mask[row])[::-1])
    np.testing.assert_array_equal(states[..., 0], ids.astype(np.float32))
