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
  batches. Attention stays com.microsoft MultiHeadAttention, which takes the mask as a bias.
"""

from __future__ import annotations

import collections
import contextlib

import numpy as np

from toolchain.errors import ToolchainError

# ops the fusions leave in the final graph: what the manifest counts, so a fusion that is
# matched and then undone cannot pass for one that holds
FUSED_OPS = ("MultiHeadAttention", "RotaryEmbedding", "SimplifiedLayerNormalization",
             "SkipSimplifiedLayerNormalization", "Gelu", "FastGelu", "BiasGelu")


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
