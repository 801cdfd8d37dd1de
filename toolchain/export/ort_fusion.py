"""onnxscript's ONNX Runtime fusions on the exported graph, made to hold for this graph.

``optimize_for_ort`` (RMSNorm, SkipRMSNorm, rotary embedding, SDPA -> MultiHeadAttention, GELU)
runs with two corrections, both found on the exported Llama-family graphs:

- Rotary: the exporter writes the rotary angles as Mul(positions, inv_freq), which the cos/sin
  cache fusion does not match. Its rotary fusions were then undone at the end of the pass (the
  manifest still counted them), so they are first rewritten to HF's inv_freq @ positions form.
  The cache the fusion builds has ReduceMax(position_ids) + 1 rows, fewer than the sequence
  when every text of a batch is padded, which ORT's RotaryEmbedding refuses; it is replaced by
  a constant cache over the backbone's max_position_embeddings.
- No GroupQueryAttention (it matches once the rotary does): ORT's CPU kernel takes a sequence's
  tokens to be its first seqlens_k + 1 (right padding), and this graph also serves left-padded
  batches. The fusion's com.microsoft MultiHeadAttention, which takes the mask as a bias, needs
  k and v repeated to the query's heads (the exporter's repeat_kv copies them) and in (B, H, S,
  d); it is then replaced by ONNX's own Attention (opset 23), which takes the same bias, k and
  v of their own (fewer) heads, and all three by token (B, S, heads * d): the repeat and the
  transposes go, the rotary embedding of k runs on (B, S, kv heads * d). The same outputs, bit
  for bit, on SmolLM2; 1.06x the graph's speed at 8x128 and 1.02-1.03x at 8x512
  (benchmarks/results/export_grid_onnx_attention.json; benchmarks/results/history/
  export_fusion_measurements.md, "attention over k and v of their own heads").
"""

from __future__ import annotations

import collections
import contextlib

import numpy as np

from toolchain.errors import ToolchainError

# ops the fusions leave in the final graph: what the manifest counts, so a fusion that is
# matched and then undone cannot pass for one that holds
FUSED_OPS = ("Attention", "MultiHeadAttention", "RotaryEmbedding", "SimplifiedLayerNormalization",
             "SkipSimplifiedLayerNormalization", "Gelu", "FastGelu", "BiasGelu")
ATTENTION_OPSET = 23  # ONNX's Attention op


def fuse_for_ort(model, max_positions: int) -> dict[str, int]:
    """Fuse the exported ``onnx_ir`` model in place for ONNX Runtime.

    Args:
        model: the exporter's ``onnx_ir`` model.
        max_positions: rows of the rotary cos/sin caches (the backbone's max_position_embeddings).

    Returns:
        {fused op type: count in the final graph}, for every op type in FUSED_OPS present.
    """
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    _rotary_angles_as_matmul().apply_to_model(model)
    with _without_group_query_attention():
        optimize_for_ort(model)
    _static_rotary_caches(model, max_positions)
    _attention_as_onnx_attention(model)
    return fused_op_counts(model)


def fused_op_counts(model) -> dict[str, int]:
    """{op type: nodes} of FUSED_OPS in an ``onnx_ir`` model's main graph."""
    counts = collections.Counter(n.op_type for n in model.graph if n.op_type in FUSED_OPS)
    return dict(sorted(counts.items()))


@contextlib.contextmanager
def _without_group_query_attention():
    from onnxscript.rewriter.ort_fusions import _core

    fuse_gqa = _core.fuse_gqa
    _core.fuse_gqa = lambda *args, **kwargs: 0
    try:
        yield
    finally:
        _core.fuse_gqa = fuse_gqa


def _rotary_angles_as_matmul():
    """Mul(Cast(Unsqueeze(position_ids)), inv_freq (E,)) -> Transpose(inv_freq (1, E, 1) @
    Cast(Unsqueeze(position_ids, 1))): the same products, so the same angles."""
    import onnx_ir as ir
    from onnxscript.rewriter import pattern

    def as_mul(op, position_ids, inv_freq, axes):
        return op.Mul(op.Cast(op.Unsqueeze(position_ids, axes), to=ir.DataType.FLOAT), inv_freq)

    def is_rotary(context, position_ids, inv_freq, axes, **_) -> bool:
        # positions (B, S) unsqueezed at the end, times a constant vector: nothing else
        last_axis = axes.const_value is not None and axes.const_value.numpy().tolist() in (
            [-1], [2])
        return (last_axis and inv_freq.const_value is not None
                and len(inv_freq.shape or ()) == 1 and len(position_ids.shape or ()) == 2)

    def as_matmul(op, position_ids, inv_freq, axes):
        column = inv_freq.const_value.numpy().astype(np.float32).reshape(1, -1, 1)
        positions = op.Cast(op.Unsqueeze(position_ids, op.Constant(value_ints=[1])),
                            to=ir.DataType.FLOAT)
        return op.Transpose(op.MatMul(op.Constant(value=ir.tensor(column)), positions),
                            perm=[0, 2, 1])

    return pattern.RewriteRule(as_mul, as_matmul, is_rotary)


def _static_rotary_caches(model, max_positions: int) -> None:
    """Point every com.microsoft RotaryEmbedding at constant (max_positions, E) caches, computed
    from the inv_freq (1, E) of the MatMul that fed its per-call Cos / Sin."""
    from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass

    caches: dict[bytes, tuple] = {}
    for node in model.graph:
        if node.op_type != "RotaryEmbedding" or node.domain != "com.microsoft":
            continue
        inv_freq = _cache_inv_freq(node)
        key = inv_freq.tobytes()
        if key not in caches:
            positions = np.arange(max_positions, dtype=np.float32).reshape(-1, 1)
            table = positions * inv_freq  # one fp32 product each, as the graph's MatMul (K=1)
            caches[key] = tuple(
                _initializer(model, f"rotary_{name}_cache_{len(caches)}", fn(table))
                for name, fn in (("cos", np.cos), ("sin", np.sin)))
        node.replace_input_with(2, caches[key][0])
        node.replace_input_with(3, caches[key][1])
        # ONNX's shape inference does not know this op, and readers of the graph downstream
        # (the padding-exact rewrite) need the attention inputs' widths: shape in, shape out
        node.outputs[0].shape, node.outputs[0].type = node.inputs[0].shape, node.inputs[0].type
    RemoveUnusedNodesPass()(model)
    ShapeInferencePass()(model)


def _cache_inv_freq(node) -> np.ndarray:
    """inv_freq (1, E) of the cos/sin-cache fusion's per-call cache, Cos(MatMul(positions,
    inv_freq)), that feeds a RotaryEmbedding node."""
    cos = node.inputs[2].producer()
    angles = cos.inputs[0].producer() if cos is not None and cos.op_type == "Cos" else None
    inv_freq = (angles.inputs[1].const_value
                if angles is not None and angles.op_type == "MatMul" else None)
    if inv_freq is None:
        raise ToolchainError(f"node {node.name}: RotaryEmbedding's cos cache is not Cos(MatMul("
                             f"positions, constant inv_freq)); onnxscript's cos/sin-cache "
                             f"fusion changed: see toolchain/export/ort_fusion.py")
    return inv_freq.numpy().astype(np.float32).reshape(1, -1)


def _initializer(model, name: str, array: np.ndarray):
    import onnx_ir as ir

    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.FLOAT),
                     const_value=ir.tensor(array.astype(np.float32), name=name))
    model.graph.register_initializer(value)
    return value


def _attention_as_onnx_attention(model) -> None:
    """Every MultiHeadAttention (q by token, k and v as the fusion leaves them, an optional
    attention bias, nothing else) as ONNX Attention over k and v of their own heads, by token;
    see the module docstring. The default domain's opset becomes ATTENTION_OPSET."""
    from onnx_ir.passes.common import RemoveUnusedNodesPass, ShapeInferencePass

    converted, flat = 0, _by_token_shape()
    for node in list(model.graph):
        if node.op_type != "MultiHeadAttention" or node.domain != "com.microsoft":
            continue
        inputs = list(node.inputs)
        q = inputs[0]
        if (len(inputs) > 6 or any(len(inputs) > i and inputs[i] is not None for i in (3, 4))
                or set(node.attributes) - {"num_heads", "scale"}
                or len(q.shape or ()) != 3 or not isinstance(q.shape[2], int)):
            continue  # a form this graph does not produce: left as it is
        heads = node.attributes["num_heads"].as_int()
        head_dim = q.shape[2] // heads
        added: list = []
        keys = _by_token(inputs[1], heads, head_dim, q, flat, added)
        values = _by_token(inputs[2], heads, head_dim, q, flat, added)
        if keys is None or values is None or keys[1] != values[1]:
            continue
        _insert_attention(model, node, q, keys, values, inputs[5] if len(inputs) > 5 else None,
                          heads, added)
        converted += 1
    if converted:  # else the graph is as _static_rotary_caches left it: pruned and inferred
        model.opset_imports[""] = max(model.opset_imports.get("", 0), ATTENTION_OPSET)
        model.graph.register_initializer(flat)
        RemoveUnusedNodesPass()(model)
        ShapeInferencePass()(model)


def _by_token_shape():
    """The Reshape target (0, 0, -1): (B, S, n, d) -> (B, S, n * d)."""
    import onnx_ir as ir

    return ir.Value(name="attention_by_token_shape", shape=ir.Shape([3]),
                    type=ir.TensorType(ir.DataType.INT64),
                    const_value=ir.tensor(np.array([0, 0, -1], np.int64),
                                          name="attention_by_token_shape"))


def _insert_attention(model, mha, q, keys: tuple, values: tuple, bias, heads: int,
                      added: list) -> None:
    import onnx_ir as ir

    attributes = [ir.AttrInt64("q_num_heads", heads), ir.AttrInt64("kv_num_heads", keys[1])]
    if "scale" in mha.attributes:
        attributes.append(ir.AttrFloat32("scale", mha.attributes["scale"].as_float()))
    old = mha.outputs[0]
    out = ir.Value(name=f"{old.name}_attention", shape=ir.Shape(list(q.shape)), type=q.type)
    attention = ir.Node("", "Attention", [q, keys[0], values[0]] + ([bias] if bias is not None
                                                                      else []),
                        attributes, outputs=[out], name=f"{mha.name}_as_attention")
    model.graph.insert_before(mha, [*added, attention])
    old.replace_all_uses_with(out)
    model.graph.remove(mha, safe=True)


def _by_token(x, heads: int, head_dim: int, q, flat, added: list) -> tuple | None:
    """(x as (B, S, n * d), n): ``x`` (B, S, heads * d), or (B, heads, S, d) possibly the
    exporter's repeat_kv of (B, n, S, d), read before the repeat. New nodes go to ``added``."""
    import onnx_ir as ir

    if len(x.shape or ()) == 3:
        return x, heads
    kv = _before_repeat(x, heads) or x
    n = kv.shape[1] if len(kv.shape or ()) == 4 else None
    if not isinstance(n, int) or kv.shape[3] != head_dim:
        return None

    def by_token_shape():
        return ir.Shape([q.shape[0], q.shape[1], n * head_dim])

    def merged(tokens_first) -> object:  # (B, S, n, d) -> (B, S, n * d), no copy
        out = ir.Value(name=f"{kv.name}_by_token_merged", shape=by_token_shape(), type=kv.type)
        added.append(ir.Node("", "Reshape", [tokens_first, flat], outputs=[out]))
        return out

    producer = kv.producer()
    if _is_head_transpose(producer):  # v: Transpose((B, S, n, d)) -> (B, n, S, d)
        return merged(producer.inputs[0]), n
    if (producer is not None and producer.op_type == "RotaryEmbedding"
            and _is_head_transpose(producer.inputs[0].producer())):
        # k: rotated after the same transpose; rotate (B, S, n * d) instead (num_heads kept)
        rotated = ir.Value(name=f"{kv.name}_by_token", shape=by_token_shape(), type=kv.type)
        attributes = [ir.Attr(a.name, a.type, a.value) for a in producer.attributes.values()]
        added.append(ir.Node(producer.domain, "RotaryEmbedding",
                             [merged(producer.inputs[0].producer().inputs[0]),
                              *producer.inputs[1:]], attributes, outputs=[rotated]))
        return rotated, n
    tokens_first = ir.Value(name=f"{kv.name}_tokens_first", type=kv.type)
    added.append(ir.Node("", "Transpose", [kv], [ir.AttrInt64s("perm", [0, 2, 1, 3])],
                         outputs=[tokens_first]))
    return merged(tokens_first), n


def _is_head_transpose(node) -> bool:
    perm = node.attributes.get("perm") if node is not None else None
    return (node is not None and node.op_type == "Transpose" and perm is not None
            and list(perm.as_ints()) == [0, 2, 1, 3])


def _before_repeat(x, heads: int):
    """kv (B, n, S, d) if ``x`` (B, heads, S, d) is Reshape(Expand(Unsqueeze(kv, axis 2))), the
    exporter's repeat_kv (each of the n heads repeated heads / n times in a row), else None."""
    reshape = x.producer()
    expand = reshape.inputs[0].producer() if reshape is not None and reshape.op_type == "Reshape" \
        else None
    unsqueeze = expand.inputs[0].producer() if expand is not None and expand.op_type == "Expand" \
        else None
    if unsqueeze is None or unsqueeze.op_type != "Unsqueeze" or len(unsqueeze.inputs) < 2:
        return None
    axes, kv = unsqueeze.inputs[1].const_value, unsqueeze.inputs[0]
    repeated = expand.outputs[0].shape
    if axes is None or axes.numpy().tolist() not in ([2], [-3]) or len(kv.shape or ()) != 4:
        return None
    n = kv.shape[1]
    if (not isinstance(n, int) or heads % n or repeated is None or len(repeated) != 5
            or list(repeated[1:3]) != [n, heads // n]):
        return None
    return kv
