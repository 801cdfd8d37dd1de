"""Padding-exact sums over tokens: the graph's reductions over the token axis rewritten so that
a text's result is bit-identical alone, in a batch, and under either padding side.

Why: ORT's MultiHeadAttention (the fusion of the exported SDPA) and Softmax normalise with MLAS's
softmax, whose vectorised sum assigns keys to accumulators by position, and ReduceSum (a masked
mean over tokens) does the same: extra padding moves their results by ~1e-7. fp32 does not care,
but an int8 graph does: such a change flips an activation's rounding now and then, and a trained
model amplifies the flips (SmolLM2 m5, row-wise int8: padding invariance 0.99901,
benchmarks/results/history/export_fusion_measurements.md, "the study's trained soups").

What makes a sum exact: a padded token enters it as an exact 0 (attention weight exp(-3.4e38 -
max) = 0, mask 0), and 0 * v + acc is acc, so a sum that is one sequential chain over the tokens
cannot change. MLAS's SGEMM computes each output as one chain over K, but cuts K into blocks
(summed separately, then added) whose size depends on the output width N: 1024 tokens for
N <= 16, 512 to N = 32, 256 to N = 64, 128 above; at N = 1 it takes a path that is not a chain
at all; and a Transpose that ORT fuses into the MatMul (FusedMatMul, A transposed) splits at
128 even at N = 16 (measured: benchmarks/export_probes/padding_exact_sums.py, results in
benchmarks/results/history/export_fusion_measurements.md, "padding-exact sums"). So every sum
over tokens becomes an unfused MatMul with K = tokens and N <= 16 (CHUNK_WIDTH): exact up to
MAX_EXACT_TOKENS tokens, padding included (right padding is exact at any length: the blocks then
start at the same token). Exp is elementwise and position-independent in ORT (same script).

The rewrites (each counted in the returned dict):
- attention: com.microsoft.MultiHeadAttention (q of shape (B, S, H*d), k and v of that shape or
  (B, H, S, d), attention_bias), or ONNX Attention (opset 23: q, k, v of shape (B, S, heads*d),
  an additive attn_mask); grouped_attention (counted in attention too): k and v have fewer
  heads than q (Attention's kv_num_heads, or MultiHeadAttention's k and v the exporter's
  repeat_kv, which the rewrite reads from before the repeat);
- softmax_matmul: Softmax over the last axis whose only reader is MatMul(p, v) (the heads'
  cross-attention over tokens), directly or through Where(IsNaN(p), 0, p) (the unfused graph's
  attention, as the exporter writes SDPA);
- token_sum: ReduceSum over axis 1 of a (B, tokens, W > 1) tensor (masked means; at W = 1 it
  is the mask's token count, an integer sum, exact in any order).
Attention becomes  e = exp(scores - rowmax(scores)),  out = (e @ v) / (e @ 1): v in column chunks
of at most CHUNK_WIDTH, the ones in a chunk of their own (dividing after the product also saves a
pass over the (S, S) weights).

With ``compact_tokens`` (the int8 profile's default) ONNX Attention is left as ORT runs it and
the graph's inputs are compacted instead (:func:`compact_to_right_padding`): each row's real
tokens first, so that they sit at the same positions alone, in any batch and under either padding
side. ORT's Attention is then exact as it is: its products' K blocks start at token 0 (right
padding, above), and MLAS's softmax sums key j into lane j mod 16 (AVX-512) or j mod 8 (FMA3) of
one accumulator, in order, the tail masked into the same lanes (SoftmaxKernelAvx512F.S,
TransKernelFma3.S), so trailing padded keys add exact zeros. tests/test_padding_exact.py checks
the property on the machine it runs on, and verify gates invariance at export. It costs a
permutation of the ids instead of the rewritten attention's extra passes over (B, heads, T, S):
SmolLM2 m3 int8 ran 1.17-1.20x faster at 8x128 (benchmarks/results/history/
export_fusion_measurements.md, "real tokens first"; grid: export_grid_compact_tokens.json). The
rewritten attention stays for MultiHeadAttention and for ``compact_tokens: false``: its
exactness rests on MLAS's SGEMM blocking only, not on its softmax kernel.
"""

from __future__ import annotations

from toolchain.errors import ToolchainError
from toolchain.export.padding_exact.attention import multihead_attention, onnx_attention
from toolchain.export.padding_exact.compaction import compact_to_right_padding
from toolchain.export.padding_exact.emitter import GraphEmitter
from toolchain.export.padding_exact.softmax_matmul import nan_guard, softmax_matmul
from toolchain.export.padding_exact.token_sum import is_token_sum, token_sum


def _live(nodes: list, graph_outputs: set[str]) -> list:
    """``nodes`` without those whose outputs nothing reads (the repeat_kv the grouped attention
    bypasses), in order."""
    nodes = list(nodes)
    while True:
        read = graph_outputs | {name for n in nodes for name in n.input}
        live = [n for n in nodes if any(o in read for o in n.output if o)]
        if len(live) == len(nodes):
            return live
        nodes = live


def rewrite_padding_exact(model, compact_tokens: bool = False) -> dict[str, int]:
    """Rewrite ``model`` (an onnx.ModelProto, in place) as the module docstring says; returns
    {rewrite: count}. ``compact_tokens``: ONNX Attention kept as it is (counted as
    stock_attention) and the graph's input_ids and attention_mask compacted to real tokens first
    (:func:`compact_to_right_padding`).

    Raises:
        ToolchainError: an attention this rewrite cannot make exact (MultiHeadAttention inputs or
        attributes beyond q, k, v, attention_bias, num_heads, scale; a head width without a
        divisor in [2, CHUNK_WIDTH]), named by node.
    """
    if next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < 18:
        raise ToolchainError("the padding-exact rewrite needs opset >= 18 (ReduceMax with axes "
                             "as an input)")
    rewriter = GraphEmitter(model)
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    # softmax -> its one MatMul reader, rewritten where the MatMul is (both inputs exist there);
    # also through Where(IsNaN(p), 0, p) (the exporter's unfused SDPA), whose nodes go with it
    softmax_of: dict[int, tuple] = {}
    for node in model.graph.node:
        if node.op_type != "Softmax":
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), -1)
        if axis not in (-1, len(rewriter.dims(node.input[0]) or []) - 1):
            continue
        guard = nan_guard(node, readers, rewriter.constants)
        probabilities = guard[-1].output[0] if guard else node.output[0]
        reader = readers.get(probabilities, [])
        if (len(reader) == 1 and reader[0].op_type == "MatMul"
                and reader[0].input[0] == probabilities):
            softmax_of[id(reader[0])] = (node, guard)
    # by identity: the exporter's node names are not guaranteed unique or present
    paired = {id(n) for softmax, guard in softmax_of.values() for n in (softmax, *guard)}
    counts = {"attention": 0, "grouped_attention": 0, "softmax_matmul": 0, "token_sum": 0,
              "stock_attention": 0, "compacted": 0}
    kept = []
    for node in model.graph.node:
        if id(node) in paired:
            continue
        if node.op_type == "MultiHeadAttention" and node.domain == "com.microsoft":
            counts["grouped_attention"] += multihead_attention(rewriter, node)
            counts["attention"] += 1
        elif node.op_type == "Attention" and node.domain in ("", "ai.onnx") and compact_tokens:
            kept.append(node)
            counts["stock_attention"] += 1
            continue
        elif node.op_type == "Attention" and node.domain in ("", "ai.onnx"):
            counts["grouped_attention"] += onnx_attention(rewriter, node)
            counts["attention"] += 1
        elif id(node) in softmax_of:
            softmax, guard = softmax_of[id(node)]
            softmax_matmul(rewriter, softmax, node, nan_to_zero=bool(guard))
            counts["softmax_matmul"] += 1
        elif is_token_sum(rewriter, node):
            token_sum(rewriter, node)
            counts["token_sum"] += 1
        else:
            kept.append(node)
            continue
        kept.extend(rewriter.nodes)
        rewriter.nodes.clear()
    del model.graph.node[:]
    model.graph.node.extend(_live(kept, {o.name for o in model.graph.output}))
    model.graph.initializer.extend(rewriter.initializers)
    if compact_tokens:
        from toolchain.export.onnx_export import INPUT_NAMES

        compact_to_right_padding(model, *INPUT_NAMES)
        counts["compacted"] = 1
    return counts
