"""The padding-exact attention: com.microsoft.MultiHeadAttention and ONNX Attention (opset 23),
grouped or not, rewritten as e = exp(scores - rowmax(scores)), out = (e @ v) / (e @ 1), with
every sum over keys one exact chain (toolchain/export/padding_exact/emitter.py)."""

from __future__ import annotations

import numpy as np

from toolchain.errors import ToolchainError
from toolchain.export.padding_exact.emitter import GraphEmitter, chunk_width

# MultiHeadAttention inputs this rewrite understands: query, key, value, attention_bias
_MHA_UNSUPPORTED_INPUTS = {3: "bias", 4: "key_padding_mask", 6: "past_key", 7: "past_value"}
_MHA_ATTRIBUTES = {"num_heads", "scale"}
# ONNX Attention (opset 23): q, k, v, attn_mask; the attributes this rewrite honours, and those it
# takes only at their defaults
_ATTENTION_UNSUPPORTED_INPUTS = {4: "past_key", 5: "past_value", 6: "nonpad_kv_seqlen"}
_ATTENTION_DEFAULTS = {"is_causal": 0, "qk_matmul_output_mode": 0, "softcap": 0.0}
_ATTENTION_ATTRIBUTES = {"q_num_heads", "kv_num_heads", "scale", "softmax_precision",
                         *_ATTENTION_DEFAULTS}


def unrepeated(em: GraphEmitter, name: str, heads: int,
               head_dim: int) -> tuple[str, int] | None:
    """(kv, groups) if ``name`` (B, heads, S, d) is the exporter's repeat_kv of kv (B,
    heads / groups, S, d): Reshape(Expand(Unsqueeze(kv, axis 2))), each kv head repeated
    ``groups`` times in a row (grouped-query attention); None otherwise."""
    reshape = em.producers.get(name)
    expand = em.producers.get(reshape.input[0]) if reshape is not None else None
    unsqueeze = em.producers.get(expand.input[0]) if expand is not None else None
    if (reshape is None or reshape.op_type != "Reshape" or expand is None
            or expand.op_type != "Expand" or unsqueeze is None
            or unsqueeze.op_type != "Unsqueeze" or len(unsqueeze.input) < 2
            or unsqueeze.input[1] not in em.constants):
        return None
    axes = em.numpy_helper.to_array(em.constants[unsqueeze.input[1]]).tolist()
    kv, repeated = em.dims(unsqueeze.input[0]), em.dims(expand.output[0])
    if axes not in ([2], [-3]) or not kv or len(kv) != 4 or not repeated:
        return None
    kv_heads = kv[1]
    if (not isinstance(kv_heads, int) or kv_heads >= heads or heads % kv_heads
            or kv[3] != head_dim or repeated[1:3] != [kv_heads, heads // kv_heads]):
        return None
    return unsqueeze.input[0], heads // kv_heads


def tiled_bias(em: GraphEmitter, bias: str, groups: int) -> str:
    """An attention bias (B, 1, T, S) repeated ``groups`` times along T, once per graph:
    the grouped scores (B, kv heads, groups * T, S) read it as they are."""
    key = (bias, groups)
    if groups == 1:
        return bias
    if key not in em.tiled:
        em.tiled[key] = em.op("Concat", [bias] * groups,
                              f"px_{len(em.tiled)}_tiled_bias", axis=2)
    return em.tiled[key]


def multihead_attention(em: GraphEmitter, node) -> bool:
    """The rewrite of one MultiHeadAttention; True if it took the grouped form."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    extra = [f"input {name}" for i, name in _MHA_UNSUPPORTED_INPUTS.items()
             if len(node.input) > i and node.input[i]]
    extra += [f"attribute {a}" for a in sorted(set(attrs) - _MHA_ATTRIBUTES)]
    heads, (q, k, v) = int(attrs["num_heads"]), node.input[:3]
    width = (em.dims(q) or [None])[-1]
    head_dim = width // heads if isinstance(width, int) and width % heads == 0 else None
    chunk = chunk_width(head_dim) if head_dim else None
    if extra or chunk is None:
        why = ", ".join(extra) or f"width {width} for {heads} heads"
        raise ToolchainError(f"node {node.name}: MultiHeadAttention with {why} is not "
                             f"supported by the padding-exact rewrite")
    p = em.prefix("attention")
    bias = node.input[5] if len(node.input) > 5 and node.input[5] else None
    scale = attrs.get("scale") or 1 / np.sqrt(head_dim)
    grouped = [unrepeated(em, x, heads, head_dim) for x in (k, v)]
    if (all(grouped) and grouped[0][1] == grouped[1][1]
            and (bias is None or (em.dims(bias) or [None, None])[1] == 1)):
        (k, groups), (v, _) = grouped
        kv_heads = em.dims(k)[1]
        keys_t = em.op("Transpose", [k], p + "k_t", perm=[0, 1, 3, 2])
        # v (B, kv heads, S, d), or the (B, S, kv heads, d) it was transposed from (the
        # exporter's layout): the values' own transpose then does the head split as well
        source = em.producers.get(v)
        perm = [0, 1, 3, 2, 4]
        if (source is not None and source.op_type == "Transpose"
                and [a.ints for a in source.attribute if a.name == "perm"] == [[0, 2, 1, 3]]):
            v, perm = source.input[0], [0, 2, 3, 1, 4]
    else:
        # key and value come as (B, S, H*d), or as (B, H, S, d) when the rotary fusion holds
        # (k is then rotated and expanded to the query's heads in that layout)
        kv_heads, groups = heads, 1
        if len(em.dims(k) or ()) == 4:
            keys_t = em.op("Transpose", [k], p + "k_heads_t", perm=[0, 1, 3, 2])
            perm = [0, 1, 3, 2, 4]
        else:
            split = em.const(p + "split_heads", np.array([0, 0, heads, head_dim]))
            keys_t = em.op("Transpose", [em.op("Reshape", [k, split], p + "k")],
                           p + "k_heads_t", perm=[0, 2, 3, 1])
            v = em.op("Reshape", [v, split], p + "v_heads")  # (B, S, H, d)
            perm = [0, 2, 3, 1, 4]
    values = em.values_and_ones(p, v, [0, 0, 0], perm, chunk)  # (B, kv, chunks + 1, S, w)
    grouped_attention(em, node, p, keys_t, values, kv_heads, groups, bias, scale, head_dim,
                      chunk)
    return groups > 1


def grouped_attention(em: GraphEmitter, node, p: str, keys_t: str, values: str, kv_heads: int,
                      groups: int, bias: str | None, scale: float, head_dim: int,
                      chunk: int) -> None:
    """Attention over k, v of ``kv_heads`` heads, each serving ``groups`` query heads (1:
    plain multi-head attention): keys_t (B, kv heads, d, S), values (B, kv heads, chunks + 1,
    S, w) from :meth:`values_and_ones`. Each kv head's query heads are stacked along T, (B,
    kv heads, groups * T, d), so k and v are never repeated (copies, and transposes of
    them). A score is one sum over d, an output one sum over S with N <= CHUNK_WIDTH
    (:meth:`weighted_sum`): exact under padding."""
    chunks = head_dim // chunk
    width = kv_heads * groups * head_dim
    query = em.op("Reshape", [em.op("Transpose", [em.op("Reshape", [
        node.input[0], em.const(p + "split_groups", np.array(
            [0, 0, kv_heads, groups, head_dim]))], p + "q")], p + "q_groups",
        perm=[0, 2, 3, 1, 4]), em.const(p + "stack_groups", np.array(
            [0, 0, -1, head_dim]))], p + "q_stacked")  # (B, kv heads, groups * T, d)
    scores = em.op("Mul", [em.op("MatMul", [query, keys_t], p + "qk"),
                           em.const(p + "scale", np.array(scale, np.float32))], p + "scores")
    if bias:
        scores = em.op("Add", [scores, tiled_bias(em, bias, groups)], p + "biased")
    out = em.weighted_sum(p, scores, values, chunks)  # (B, kv, chunks, groups * T, w)
    out = em.op("Reshape", [out, em.const(p + "split_out", np.array(
        [0, 0, 0, groups, -1, chunk]))], p + "out_groups")  # (B, kv, chunks, groups, T, w)
    merged = em.op("Transpose", [out], p + "merged", perm=[0, 4, 1, 3, 2, 5])
    em.op("Reshape", [merged, em.const(p + "merge_heads", np.array([0, 0, width]))],
          p + "out", node.output[0])


def onnx_attention(em: GraphEmitter, node) -> bool:
    """The rewrite of one ONNX Attention (opset 23) with q, k, v by token (B, S, heads *
    d) and an additive attention mask, as toolchain.export.ort_fusion writes it; True if
    its k and v have fewer heads than q (grouped)."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    heads, kv_heads = attrs.get("q_num_heads"), attrs.get("kv_num_heads")
    extra = [f"input {name}" for i, name in _ATTENTION_UNSUPPORTED_INPUTS.items()
             if len(node.input) > i and node.input[i]]
    extra += [f"output {i}" for i, name in enumerate(node.output) if i and name]
    extra += [f"attribute {a}={attrs[a]}" for a in sorted(attrs) if a not in
              _ATTENTION_ATTRIBUTES or (a in _ATTENTION_DEFAULTS and attrs[a] !=
                                        _ATTENTION_DEFAULTS[a])]
    q, k, v = node.input[:3]
    width = (em.dims(q) or [None])[-1]
    head_dim = (width // heads if heads and kv_heads and isinstance(width, int)
                and width % heads == 0 and heads % kv_heads == 0 else None)
    chunk = chunk_width(head_dim) if head_dim else None
    bias = node.input[3] if len(node.input) > 3 and node.input[3] else None
    groups = heads // kv_heads if head_dim else 0
    if bias and groups > 1 and (em.dims(bias) or [None, None])[1] != 1:
        extra.append(f"attention mask of shape {em.dims(bias)}")
    if (len(em.dims(q) or ()) != 3 or len(em.dims(k) or ()) != 3
            or len(em.dims(v) or ()) != 3):
        extra.append("q, k, v not all (B, S, heads * d)")
    if extra or chunk is None:
        why = ", ".join(extra) or f"width {width} for {heads} heads"
        raise ToolchainError(f"node {node.name}: Attention with {why} is not supported by "
                             f"the padding-exact rewrite")
    p = em.prefix("attention")
    split = em.const(p + "split_kv", np.array([0, 0, kv_heads, head_dim]))
    keys_t = em.op("Transpose", [em.op("Reshape", [k, split], p + "k")], p + "k_t",
                   perm=[0, 2, 3, 1])  # (B, kv heads, d, S)
    values = em.values_and_ones(p, em.op("Reshape", [v, split], p + "v_heads"),
                                [0, 0, 0], [0, 2, 3, 1, 4], chunk)
    grouped_attention(em, node, p, keys_t, values, kv_heads, groups, bias,
                      attrs.get("scale") or 1 / np.sqrt(head_dim), head_dim, chunk)
    return groups > 1
