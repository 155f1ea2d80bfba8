"""Multiply-accumulates of an ONNX graph at batch 1, counted from shapes (Conv, ConvTranspose, Gemm, MatMul).

How far a latency is from the machine's limit: MACs / measured INT8 GEMM peak is the time the arithmetic alone
needs (bench/anchors.py). Counted on the FP32 file; its quantized forms do the same arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from pathlib import Path

import numpy as np
import onnx

from ..errors import ModelFileError
from ..formats.sessions import cpu_session


@dataclass
class MacCount:
    total: int
    by_op: dict[str, int] = field(default_factory=dict)
    by_node: list[tuple[str, str, int]] = field(default_factory=list)   # (node name, op type, MACs)


def _shapes(model) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
        out[vi.name] = dims
    for init in model.graph.initializer:
        out[init.name] = list(init.dims)
    return out


COUNTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _shapes_by_running(model) -> dict[str, list[int]]:
    """Shapes ONNX's inference leaves open (pads computed at run time, as in the style network): run the graph
    once on zeros in ONNX Runtime with every counted node's data input and output exposed."""

    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = {n for node in m.graph.node if node.op_type in COUNTED for n in (node.input[0], node.output[0])}
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in sorted(names - have))
    s = cpu_session(m.SerializeToString())
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
    feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], types.get(i.type, np.float32))
             for i in s.get_inputs()}
    outs = s.run(None, feeds)
    return {o.name: list(v.shape) for o, v in zip(s.get_outputs(), outs)}


def _node_macs(node, shapes: dict[str, list[int]]) -> int:
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "Conv":
        w, y = shapes.get(node.input[1]), shapes.get(node.output[0])
        return prod(y) * prod(w[1:]) if w and y and all(y) else 0         # W is (Cout, Cin/group, kh, kw)
    if node.op_type == "ConvTranspose":
        w, x = shapes.get(node.input[1]), shapes.get(node.input[0])
        return prod(x) * prod(w[1:]) if w and x and all(x) else 0         # W is (Cin, Cout/group, kh, kw)
    if node.op_type in ("Gemm", "MatMul"):
        a, y = shapes.get(node.input[0]), shapes.get(node.output[0])
        if not a or not y or not all(y):
            return 0
        trans_a = "transA" in attrs and attrs["transA"].i
        k = a[-2] if trans_a else a[-1]
        return prod(y) * k
    return 0


def count_macs(path: str | Path, image_shape: tuple[int, int, int] | None = None) -> MacCount:
    """MACs of one image through `path`: the batch dimension fixed at 1, and the image input's (C, H, W) set to
    `image_shape` where the graph leaves them open (a fully convolutional model)."""

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelFileError(f"cannot read {path} to count its MACs ({type(exc).__name__})") from exc
    for i, inp in enumerate(model.graph.input):
        dims = inp.type.tensor_type.shape.dim
        want = [1, *image_shape] if i == 0 and image_shape and len(dims) == 4 else [1]
        for d, v in zip(dims, want):
            if not d.HasField("dim_value"):
                d.dim_value = v
    shapes = _shapes(model)
    if any(not all(shapes.get(n.output[0]) or [0]) for n in model.graph.node if n.op_type in COUNTED):
        shapes.update(_shapes_by_running(model))
    res = MacCount(total=0)
    for node in model.graph.node:
        n = _node_macs(node, shapes)
        if n:
            res.by_node.append((node.name, node.op_type, n))
            res.by_op[node.op_type] = res.by_op.get(node.op_type, 0) + n
            res.total += n
    return res
