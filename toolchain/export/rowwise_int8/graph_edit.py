"""The row-wise int8 rewrite's edit of an onnx graph: new nodes and initialisers with unique
names, lookups into the graph as it was, and the splice that puts the new nodes in."""

from __future__ import annotations

import collections

import numpy as np


class GraphEdit:
    """New nodes and initialisers for the rewrite, with unique names, and lookups into the
    graph as it was (the rewrite only appends until it splices its nodes in)."""

    def __init__(self, model) -> None:
        self.model = model
        self.initializers: list = []
        self.existing = {i.name: i for i in model.graph.initializer}
        self.producer = {out: n for n in model.graph.node for out in n.output}
        self.uses = collections.Counter(i for n in model.graph.node for i in n.input)

    def const(self, name: str, value) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    @staticmethod
    def node(into: list, op: str, inputs: list[str], output: str, **attrs) -> str:
        from onnx import helper

        into.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def splice(self, replacement: dict[str, list]) -> None:
        """Put each replaced node's new nodes where it stood (a group's where its first MatMul
        stood: its input exists by then, and its other MatMuls' readers all come after it),
        keep only the initialisers still read plus the new ones, and import com.microsoft."""
        from onnx import helper

        graph = self.model.graph
        rewritten = [new for node in graph.node for new in replacement.get(node.name, [node])]
        del graph.node[:]
        graph.node.extend(rewritten)
        read = {i for n in graph.node for i in n.input}
        kept = [i for i in graph.initializer if i.name in read]
        del graph.initializer[:]
        graph.initializer.extend(kept + self.initializers)
        if not any(o.domain == "com.microsoft" for o in self.model.opset_import):
            self.model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
