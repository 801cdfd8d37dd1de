"""Token compaction: each row's real tokens moved to its front as the graph's first nodes, so that
ORT's own attention computes a text the same alone, in any batch and under either padding side
(toolchain/export/padding_exact/__init__.py), and the way back to the caller's token order for a
probe of the token states."""

from __future__ import annotations

import numpy as np

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
