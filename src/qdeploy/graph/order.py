"""Node order for memory: reductions placed next to what they read."""
from __future__ import annotations

import onnx


def place_after_producers(model, readers: list) -> None:
    """Put each node of `readers` (new nodes, or nodes of the graph, which are moved) right after the producer of
    its first input (or first, when that input is a graph input), in place. ORT runs nodes in this order and frees a tensor after its last
    reader: a reduction appended at the end of the graph keeps its tensor alive to the end of the run, one placed
    here lets it go as soon as its own consumers ran."""

    pending: dict[str, list] = {}
    for n in readers:
        pending.setdefault(n.input[0], []).append(n)
    moved = {id(n) for n in readers}
    order = [n for i in model.graph.input for n in pending.pop(i.name, [])]
    for n in model.graph.node:
        if id(n) in moved:
            continue
        order.append(n)
        for o in n.output:
            order += pending.pop(o, [])
    order += [n for v in pending.values() for n in v]
    copies = [onnx.NodeProto() for _ in order]
    for dst, src in zip(copies, order):
        dst.CopyFrom(src)
    del model.graph.node[:]
    model.graph.node.extend(copies)
