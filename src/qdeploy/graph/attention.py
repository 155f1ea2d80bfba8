"""Whether an ONNX graph is a transformer's: the quantizers choose their transformer recipes on it (NNCF's
model type, the auto search's MatMul-only candidates)."""
from __future__ import annotations

from pathlib import Path

import onnx


def has_attention(path: Path) -> bool:
    """Whether the graph has attention: a Softmax fed (through scaling, masking, bias adds) by a MatMul whose two
    inputs are both computed tensors, not a weight."""
    g = onnx.load(str(path), load_external_data=False).graph
    consts = {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in g.node for o in n.output}
    for n in g.node:
        if n.op_type != "Softmax":
            continue
        todo, seen = [n.input[0]], 0
        while todo and seen < 8:   # walk back a few elementwise steps to the scores' MatMul
            t, seen = todo.pop(), seen + 1
            p = producer.get(t)
            if p is None:
                continue
            if p.op_type == "MatMul" and not (set(p.input) & consts):
                return True
            if p.op_type in ("Add", "Mul", "Div", "Sub", "Where", "Reshape", "Cast"):
                todo += [i for i in p.input if i not in consts]
    return False
