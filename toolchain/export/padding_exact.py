"""Padding-exact sums over tokens: the graph's reductions over the token axis rewritten so that
a text's result is bit-identical alone, in a batch, and under either padding side.

Why: ORT's MultiHeadAttention (the fusion of the exported SDPA) and Softmax normalise with MLAS's
softmax, whose vectorised sum assigns keys to accumulators by position, and ReduceSum (a masked
mean over tokens) does the same: extra padding moves their results by ~1e-7. fp32 does not care,
but an int8 graph does: such a change flips an activation's rounding now and then, and a trained
model amplifies the flips (SmolLM2 m5, row-wise int8: padding invariance 0.99901, export/int8.yaml).

What makes a sum exact: a padded token enters it as an exact 0 (attention weight exp(-3.4e38 -
max) = 0, mask 0), and 0 * v + acc is acc, so a sum that is one sequential chain over the tokens
cannot change. MLAS's SGEMM computes each output as one chain over K, but cuts K into blocks
(summed separately, then added) whose size depends on the output width N: 1024 tokens for
N <= 16, 512 to N = 32, 256 to N = 64, 128 above; at N = 1 it takes a path that is not a chain
at all; and a Transpose that ORT fuses into the MatMul (FusedMatMul, A transposed) splits at
128 even at N = 16 (measured: benchmarks/export_large/padding_exact_sums.py, results in
benchmarks/results/export_fusion.md). So every sum over tokens becomes an unfused MatMul with
K = tokens and N <= 16 (CHUNK_WIDTH): exact up to MAX_EXACT_TOKENS tokens, padding included
(right padding is exact at any length: the blocks then start at the same token). Exp is
elementwise and position-independent in ORT (same script).

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
SmolLM2 m3 int8 ran 1.17-1.20x faster at 8x128 (benchmarks/results/export_fusion.md, eighth
measurement). The rewritten attention stays for MultiHeadAttention and for ``compact_tokens:
false``: its exactness rests on MLAS's SGEMM blocking only, not on its softmax kernel.
"""

from __future__ import annotations

import numpy as np

from toolchain.errors import ToolchainError

CHUNK_WIDTH = 16
MAX_EXACT_TOKENS = 1024  # MLAS's K block at N <= CHUNK_WIDTH (see the module docstring)
# MultiHeadAttention inputs this rewrite understands: query, key, value, attention_bias
_MHA_UNSUPPORTED_INPUTS = {3: "bias", 4: "key_padding_mask", 6: "past_key", 7: "past_value"}
_MHA_ATTRIBUTES = {"num_heads", "scale"}
# ONNX Attention (opset 23): q, k, v, attn_mask; the attributes this rewrite honours, and those it
# takes only at their defaults
_ATTENTION_UNSUPPORTED_INPUTS = {4: "past_key", 5: "past_value", 6: "nonpad_kv_seqlen"}
_ATTENTION_DEFAULTS = {"is_causal": 0, "qk_matmul_output_mode": 0, "softcap": 0.0}
_ATTENTION_ATTRIBUTES = {"q_num_heads", "kv_num_heads", "scale", "softmax_precision",
                         *_ATTENTION_DEFAULTS}


def chunk_width(head_dim: int) -> int | None:
    """The widest divisor of ``head_dim`` in [2, CHUNK_WIDTH] (None if there is none)."""
    return next((w for w in range(CHUNK_WIDTH, 1, -1) if head_dim % w == 0), None)


class _Rewriter:
    """Emits the new nodes and initialisers with unique names, with the graph's static shapes."""

    def __init__(self, model) -> None:
        from onnx import numpy_helper

        self.numpy_helper = numpy_helper
        self.nodes: list = []
        self.initializers: list = []
        self.shapes = {v.name: v.type.tensor_type.shape for v in (
            *model.graph.value_info, *model.graph.input, *model.graph.output)}
        self.constants = {i.name: i for i in model.graph.initializer}
        self.producers = {o: n for n in model.graph.node for o in n.output}
        self.tiled: dict[tuple[str, int], str] = {}  # (attention bias, groups) -> its tiling
        self.index = 0
        self.one = self.const("px_one", np.array(1.0, np.float32))
        self.last = self.const("px_last", np.array([-1], np.int64))

    def const(self, name: str, value) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, kind: str, inputs: list[str], name: str, output: str | None = None,
           **attrs) -> str:
        from onnx import helper

        output = output or name
        self.nodes.append(helper.make_node(kind, inputs, [output], name=name, **attrs))
        return output

    def dims(self, name: str) -> list | None:
        """Static dims (int) or symbols (str) of a value, None if unknown."""
        shape = self.shapes.get(name)
        if shape is None:
            return None
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in shape.dim]

    def prefix(self, kind: str) -> str:
        self.index += 1
        return f"px{self.index}_{kind}_"

    def values_and_ones(self, p: str, v: str, lead: list[int], perm: list[int],
                        chunk: int) -> str:
        """v (..., d) with a chunk of ones after its d columns, split into chunks of ``chunk``
        columns: Pad, Reshape (``lead`` zeros, then (chunks + 1, chunk)), Transpose ``perm``."""
        padded = self.op("Pad", [v, self.const(p + "pads", np.array([0, chunk])), self.one,
                                 self.last], p + "padded")
        return self.op("Transpose", [self.op("Reshape", [padded, self.const(
            p + "split_chunks", np.array([0] * len(lead) + [-1, chunk]))], p + "v")],
            p + "values_and_ones", perm=perm)

    def weighted_sum(self, p: str, scores: str, values: str, chunks: int) -> str:
        """softmax(scores) @ v as e @ [v | 1]: scores (..., T, S), values (..., chunks + 1, S,
        w) from :meth:`values_and_ones` -> (..., chunks, T, w) (each chunk divided by the ones
        chunk)."""
        shifted = self.op("Sub", [scores, self.op("ReduceMax", [scores, self.last], p + "row_max",
                                                  keepdims=1)], p + "shifted")
        weights = self.op("Unsqueeze", [self.op("Exp", [shifted], p + "exp"),
                                        self.const(p + "chunk_axis", np.array([-3]))],
                          p + "exp_chunked")
        products = self.op("MatMul", [weights, values], p + "products")
        # all w columns of the ones chunk hold the same sum: keeping them all, the Div broadcasts
        # over the chunk axis only (spans of T * w) rather than over w too (spans of 1): 0.30
        # vs 1.33 ms for (8, 9, 4, 128, 16), 1 thread, ORT 1.32
        numerator = self.op("Slice", [products, self.const(p + "zero", np.array([0])), self.const(
            p + "chunks", np.array([chunks])), self.const(p + "chunk_axes", np.array([-3]))],
            p + "numerator")
        denominator = self.op("Slice", [products, self.const(p + "den_start", np.array([chunks])),
                                        self.const(p + "den_end", np.array([chunks + 1])),
                                        self.const(p + "den_axes", np.array([-3]))],
                              p + "denominator")
        return self.op("Div", [numerator, denominator], p + "chunked_out")

    def unrepeated(self, name: str, heads: int, head_dim: int) -> tuple[str, int] | None:
        """(kv, groups) if ``name`` (B, heads, S, d) is the exporter's repeat_kv of kv (B,
        heads / groups, S, d): Reshape(Expand(Unsqueeze(kv, axis 2))), each kv head repeated
        ``groups`` times in a row (grouped-query attention); None otherwise."""
        reshape = self.producers.get(name)
        expand = self.producers.get(reshape.input[0]) if reshape is not None else None
        unsqueeze = self.producers.get(expand.input[0]) if expand is not None else None
        if (reshape is None or reshape.op_type != "Reshape" or expand is None
                or expand.op_type != "Expand" or unsqueeze is None
                or unsqueeze.op_type != "Unsqueeze" or len(unsqueeze.input) < 2
                or unsqueeze.input[1] not in self.constants):
            return None
        axes = self.numpy_helper.to_array(self.constants[unsqueeze.input[1]]).tolist()
        kv, repeated = self.dims(unsqueeze.input[0]), self.dims(expand.output[0])
        if axes not in ([2], [-3]) or not kv or len(kv) != 4 or not repeated:
            return None
        kv_heads = kv[1]
        if (not isinstance(kv_heads, int) or kv_heads >= heads or heads % kv_heads
                or kv[3] != head_dim or repeated[1:3] != [kv_heads, heads // kv_heads]):
            return None
        return unsqueeze.input[0], heads // kv_heads

    def tiled_bias(self, bias: str, groups: int) -> str:
        """An attention bias (B, 1, T, S) repeated ``groups`` times along T, once per graph:
        the grouped scores (B, kv heads, groups * T, S) read it as they are."""
        key = (bias, groups)
        if groups == 1:
            return bias
        if key not in self.tiled:
            self.tiled[key] = self.op("Concat", [bias] * groups,
                                      f"px_{len(self.tiled)}_tiled_bias", axis=2)
        return self.tiled[key]

    def attention(self, node) -> bool:
        """The rewrite of one MultiHeadAttention; True if it took the grouped form."""
        from onnx import helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        extra = [f"input {name}" for i, name in _MHA_UNSUPPORTED_INPUTS.items()
                 if len(node.input) > i and node.input[i]]
        extra += [f"attribute {a}" for a in sorted(set(attrs) - _MHA_ATTRIBUTES)]
        heads, (q, k, v) = int(attrs["num_heads"]), node.input[:3]
        width = (self.dims(q) or [None])[-1]
        head_dim = width // heads if isinstance(width, int) and width % heads == 0 else None
        chunk = chunk_width(head_dim) if head_dim else None
        if extra or chunk is None:
            why = ", ".join(extra) or f"width {width} for {heads} heads"
            raise ToolchainError(f"node {node.name}: MultiHeadAttention with {why} is not "
                                 f"supported by the padding-exact rewrite")
        p = self.prefix("attention")
        bias = node.input[5] if len(node.input) > 5 and node.input[5] else None
        scale = attrs.get("scale") or 1 / np.sqrt(head_dim)
        grouped = [self.unrepeated(x, heads, head_dim) for x in (k, v)]
        if (all(grouped) and grouped[0][1] == grouped[1][1]
                and (bias is None or (self.dims(bias) or [None, None])[1] == 1)):
            (k, groups), (v, _) = grouped
            kv_heads = self.dims(k)[1]
            keys_t = self.op("Transpose", [k], p + "k_t", perm=[0, 1, 3, 2])
            # v (B, kv heads, S, d), or the (B, S, kv heads, d) it was transposed from (the
            # exporter's layout): the values' own transpose then does the head split as well
            source = self.producers.get(v)
            perm = [0, 1, 3, 2, 4]
            if (source is not None and source.op_type == "Transpose"
                    and [a.ints for a in source.attribute if a.name == "perm"] == [[0, 2, 1, 3]]):
                v, perm = source.input[0], [0, 2, 3, 1, 4]
        else:
            # key and value come as (B, S, H*d), or as (B, H, S, d) when the rotary fusion holds
            # (k is then rotated and expanded to the query's heads in that layout)
            kv_heads, groups = heads, 1
            if len(self.dims(k) or ()) == 4:
                keys_t = self.op("Transpose", [k], p + "k_heads_t", perm=[0, 1, 3, 2])
                perm = [0, 1, 3, 2, 4]
            else:
                split = self.const(p + "split_heads", np.array([0, 0, heads, head_dim]))
                keys_t = self.op("Transpose", [self.op("Reshape", [k, split], p + "k")],
                                 p + "k_heads_t", perm=[0, 2, 3, 1])
                v = self.op("Reshape", [v, split], p + "v_heads")  # (B, S, H, d)
                perm = [0, 2, 3, 1, 4]
        values = self.values_and_ones(p, v, [0, 0, 0], perm, chunk)  # (B, kv, chunks + 1, S, w)
        self.grouped_attention(node, p, keys_t, values, kv_heads, groups, bias, scale, head_dim,
                               chunk)
        return groups > 1

    def grouped_attention(self, node, p: str, keys_t: str, values: str, kv_heads: int,
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
        query = self.op("Reshape", [self.op("Transpose", [self.op("Reshape", [
            node.input[0], self.const(p + "split_groups", np.array(
                [0, 0, kv_heads, groups, head_dim]))], p + "q")], p + "q_groups",
            perm=[0, 2, 3, 1, 4]), self.const(p + "stack_groups", np.array(
                [0, 0, -1, head_dim]))], p + "q_stacked")  # (B, kv heads, groups * T, d)
        scores = self.op("Mul", [self.op("MatMul", [query, keys_t], p + "qk"),
                                 self.const(p + "scale", np.array(scale, np.float32))], p + "scores")
        if bias:
            scores = self.op("Add", [scores, self.tiled_bias(bias, groups)], p + "biased")
        out = self.weighted_sum(p, scores, values, chunks)  # (B, kv, chunks, groups * T, w)
        out = self.op("Reshape", [out, self.const(p + "split_out", np.array(
            [0, 0, 0, groups, -1, chunk]))], p + "out_groups")  # (B, kv, chunks, groups, T, w)
        merged = self.op("Transpose", [out], p + "merged", perm=[0, 4, 1, 3, 2, 5])
        self.op("Reshape", [merged, self.const(p + "merge_heads", np.array([0, 0, width]))],
                p + "out", node.output[0])

    def onnx_attention(self, node) -> bool:
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
        width = (self.dims(q) or [None])[-1]
        head_dim = (width // heads if heads and kv_heads and isinstance(width, int)
                    and width % heads == 0 and heads % kv_heads == 0 else None)
        chunk = chunk_width(head_dim) if head_dim else None
        bias = node.input[3] if len(node.input) > 3 and node.input[3] else None
        groups = heads // kv_heads if head_dim else 0
        if bias and groups > 1 and (self.dims(bias) or [None, None])[1] != 1:
            extra.append(f"attention mask of shape {self.dims(bias)}")
        if (len(self.dims(q) or ()) != 3 or len(self.dims(k) or ()) != 3
                or len(self.dims(v) or ()) != 3):
            extra.append("q, k, v not all (B, S, heads * d)")
        if extra or chunk is None:
            why = ", ".join(extra) or f"width {width} for {heads} heads"
            raise ToolchainError(f"node {node.name}: Attention with {why} is not supported by "
                                 f"the padding-exact rewrite")
        p = self.prefix("attention")
        split = self.const(p + "split_kv", np.array([0, 0, kv_heads, head_dim]))
        keys_t = self.op("Transpose", [self.op("Reshape", [k, split], p + "k")], p + "k_t",
                         perm=[0, 2, 3, 1])  # (B, kv heads, d, S)
        values = self.values_and_ones(p, self.op("Reshape", [v, split], p + "v_heads"),
                                      [0, 0, 0], [0, 2, 3, 1, 4], chunk)
        self.grouped_attention(node, p, keys_t, values, kv_heads, groups, bias,
                               attrs.get("scale") or 1 / np.sqrt(head_dim), head_dim, chunk)
        return groups > 1

    def softmax_matmul(self, softmax, matmul, nan_to_zero: bool = False) -> None:
        """Softmax(axis -1) -> MatMul(p, v (..., S, d)) with d static; ``nan_to_zero``: the
        probabilities went through Where(IsNaN(p), 0, p) first (the exporter's SDPA: a row with
        every key masked is all NaN), so NaN output rows become 0 as they would."""
        v = matmul.input[1]
        dims = self.dims(v)
        head_dim = dims[-1] if dims and isinstance(dims[-1], int) else None
        chunk = chunk_width(head_dim) if head_dim else None
        if chunk is None or len(dims) < 2:
            raise ToolchainError(f"node {matmul.name}: attention values of shape {dims} are not "
                                 f"supported by the padding-exact rewrite")
        p, chunks, rank = self.prefix("softmax"), head_dim // chunk, len(dims)
        lead = list(range(rank - 2))
        values = self.values_and_ones(p, v, [0] * (rank - 1), lead + [rank - 1, rank - 2, rank],
                                      chunk)  # (..., chunks + 1, S, w)
        out = self.weighted_sum(p, softmax.input[0], values, chunks)  # (..., chunks, T, w)
        merged = self.op("Transpose", [out], p + "merged", perm=lead + [rank - 1, rank - 2, rank])
        result = self.op("Reshape", [merged, self.const(
            p + "merge", np.array([0] * (rank - 1) + [head_dim]))], p + "out",
            None if nan_to_zero else matmul.output[0])
        if nan_to_zero:
            self.op("Where", [self.op("IsNaN", [result], p + "nan"), self.const(
                p + "nan_zero", np.array(0.0, np.float32)), result], p + "nan_to_zero",
                matmul.output[0])

    def token_sum(self, node) -> None:
        """ReduceSum(x (B, T, W), axes [1]) as ones (w, T) @ x in column chunks (B, W/w, T, w),
        first row. (x^T @ ones would read x through a transpose, which ORT fuses into its
        MatMul, and the fused kernel is not one chain per output: measured.)"""
        from onnx import helper

        width = (self.dims(node.input[0]) or [None])[-1]
        chunk = chunk_width(width) if isinstance(width, int) else None
        if chunk is None:
            raise ToolchainError(f"node {node.name}: a sum over tokens of width {width} is not "
                                 f"supported by the padding-exact rewrite")
        p = self.prefix("token_sum")
        keepdims = next((helper.get_attribute_value(a) for a in node.attribute
                         if a.name == "keepdims"), 1)
        columns = self.op("Transpose", [self.op("Reshape", [node.input[0], self.const(
            p + "split", np.array([0, 0, width // chunk, chunk]))], p + "chunked")],
            p + "columns", perm=[0, 2, 1, 3])  # (B, W/w, T, w)
        tokens = self.op("Slice", [self.op("Shape", [node.input[0]], p + "shape"),
                                   self.const(p + "one", np.array([1])),
                                   self.const(p + "two", np.array([2]))], p + "tokens")
        ones = self.op("Expand", [self.one, self.op("Concat", [self.const(
            p + "rows", np.array([chunk])), tokens], p + "ones_shape", axis=0)], p + "ones")
        sums = self.op("MatMul", [ones, columns], p + "sums")  # (B, W/w, w, w), rows equal
        first = self.op("Slice", [sums, self.const(p + "zero", np.array([0])), p + "one",
                                  self.const(p + "row_axis", np.array([2]))], p + "first")
        shape = [0, 1, width] if keepdims else [0, width]
        self.op("Reshape", [first, self.const(p + "out_shape", np.array(shape))], p + "out",
                node.output[0])

    def is_token_sum(self, node) -> bool:
        if node.op_type != "ReduceSum" or len(node.input) < 2:
            return False
        axes = self.constants.get(node.input[1])
        dims = self.dims(node.input[0])
        # width 1 is the mask's token count: an integer sum, exact in any order
        return (axes is not None and dims is not None and len(dims) == 3
                and list(self.numpy_helper.to_array(axes)) in ([1], [-2])
                and isinstance(dims[1], str) and dims[2] != 1)


def _nan_guard(softmax, readers: dict[str, list], constants: dict) -> tuple:
    """(IsNaN, Where) if the Softmax's only readers are Where(IsNaN(p), 0, p), else ()."""
    from onnx import numpy_helper

    p = softmax.output[0]
    nodes = {n.op_type: n for n in readers.get(p, [])}
    if len(readers.get(p, [])) != 2 or set(nodes) != {"IsNaN", "Where"}:
        return ()
    is_nan, where = nodes["IsNaN"], nodes["Where"]
    zero = constants.get(where.input[1])
    zero = None if zero is None else numpy_helper.to_array(zero)
    if (readers.get(is_nan.output[0], []) != [where] or where.input[0] != is_nan.output[0]
            or where.input[2] != p or zero is None or zero.size != 1 or zero.item() != 0):
        return ()
    return is_nan, where


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


COMPACTED_ORDER = "px_compact_to"  # (B, S): where each of the caller's tokens went


def compact_to_right_padding(model, ids: str, mask: str) -> None:
    """Rewrite ``model`` (in place) to move each row's real tokens to its front, in order, as
    its first nodes: every reader of ``ids`` and ``mask`` reads the compacted (right-padded)
    pair instead. A row's token j goes to cumsum(mask)[j] - 1 if real, else to its row's real
    count + its rank among the padded ones (COMPACTED_ORDER): a permutation, so ScatterElements
    writes every position once.

    Why: with real tokens first, a text's tokens sit at the same positions alone or in any
    batch, under either padding side, so ORT's own attention computes them the same: its
    products' K blocks start at token 0 and its softmax's sum over keys puts key j in the same
    lane at any length (MLAS, measured: tests/test_padding_exact.py); a padded key adds an
    exact 0."""
    from onnx import helper, numpy_helper

    graph = model.graph
    p = "px_compact_"
    one = numpy_helper.from_array(np.array(1, np.int64), p + "one")
    axis = numpy_helper.from_array(np.array(1, np.int64), p + "axis")
    axes = numpy_helper.from_array(np.array([1], np.int64), p + "axes")
    compacted = {ids: p + "input_ids", mask: p + "attention_mask"}
    for node in graph.node:
        node.input[:] = [compacted.get(name, name) for name in node.input]
    made = [
        helper.make_node("CumSum", [mask, axis.name], [p + "real_rank"]),
        helper.make_node("Sub", [one.name, mask], [p + "padded"]),
        helper.make_node("CumSum", [p + "padded", axis.name], [p + "padded_rank"]),
        helper.make_node("ReduceSum", [mask, axes.name], [p + "real_count"], keepdims=1),
        helper.make_node("Add", [p + "real_count", p + "padded_rank"], [p + "padded_end"]),
        helper.make_node("Cast", [mask], [p + "is_real"], to=9),  # BOOL
        helper.make_node("Where", [p + "is_real", p + "real_rank", p + "padded_end"],
                         [p + "rank"]),
        helper.make_node("Sub", [p + "rank", one.name], [COMPACTED_ORDER]),
        helper.make_node("ScatterElements", [ids, COMPACTED_ORDER, ids], [compacted[ids]],
                         axis=1),
        helper.make_node("ScatterElements", [mask, COMPACTED_ORDER, mask], [compacted[mask]],
                         axis=1),
    ]
    kept = list(graph.node)
    del graph.node[:]
    graph.node.extend(made + kept)
    graph.initializer.extend([one, axis, axes])


def gather_back_token_states(model, token_states: str) -> None:
    """If ``model``'s tokens are compacted (:func:`compact_to_right_padding`), make
    ``token_states`` (B, S, H) hold its values in the caller's token order (its producer and
    readers move to another name); else leave it as it is. For a copy that exposes the value
    (verify's probe), not the shipped graph: nothing there reads it, and ORT would still run it."""
    from onnx import helper, numpy_helper

    graph = model.graph
    if not any(COMPACTED_ORDER in node.output for node in graph.node):
        return
    p = "px_compact_"
    inner = p + "token_states"
    for node in graph.node:
        node.output[:] = [inner if name == token_states else name for name in node.output]
        node.input[:] = [inner if name == token_states else name for name in node.input]
    last = numpy_helper.from_array(np.array([2], np.int64), p + "last")
    graph.node.extend([
        helper.make_node("Unsqueeze", [COMPACTED_ORDER, last.name], [p + "gather_index"]),
        helper.make_node("GatherND", [inner, p + "gather_index"], [token_states], batch_dims=1)])
    graph.initializer.append(last)


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
    rewriter = _Rewriter(model)
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
        guard = _nan_guard(node, readers, rewriter.constants)
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
            counts["grouped_attention"] += rewriter.attention(node)
            counts["attention"] += 1
        elif node.op_type == "Attention" and node.domain in ("", "ai.onnx") and compact_tokens:
            kept.append(node)
            counts["stock_attention"] += 1
            continue
        elif node.op_type == "Attention" and node.domain in ("", "ai.onnx"):
            counts["grouped_attention"] += rewriter.onnx_attention(node)
            counts["attention"] += 1
        elif id(node) in softmax_of:
            softmax, guard = softmax_of[id(node)]
            rewriter.softmax_matmul(softmax, node, nan_to_zero=bool(guard))
            counts["softmax_matmul"] += 1
        elif rewriter.is_token_sum(node):
            rewriter.token_sum(node)
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
