"""The weighted layers of a quantized file, each matched with the float node it was made from.

ORT's quantizer keeps node names (QOperator adds "_quant"), so each Conv/Gemm of the pre-processed FP32 graph can
be found again in the INT8 file: in QDQ as a Conv/Gemm fed by DequantizeLinear weight (and bias), in QOperator as a
QLinearConv or QGemm. Post-hoc passes that rewrite the file's integers (weight rounding, bias correction) work on
this list; anything else weighted is counted as skipped.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import numpy_helper


def statistics_key(graph, calib, fixed: dict | None = None, *rest) -> tuple:
    """What calibration statistics depend on: the graph's bytes, the images' bytes, the fixed extra inputs, and
    `rest` (a method, its options, the tensors asked for). The passes that cache their last statistics (activation
    ranges, bias-correction means, GPTQ's second moments) key them with this."""
    digest = lambda a: hashlib.sha256(np.ascontiguousarray(a)).hexdigest()  # noqa: E731
    return (hashlib.sha256(Path(graph).read_bytes()).hexdigest(), digest(calib),
            tuple((k, digest(v)) for k, v in sorted((fixed or {}).items())), *rest)


class RecentStats:
    """The last `size` (statistics_key -> statistics) entries, the least recently used dropped first: the auto
    search goes through calibration methods and sizes per format and again per target, so one remembered entry
    was recomputed on every switch (an entropy histogram pass is ~15 s on the shared ResNet18 here)."""

    def __init__(self, size: int):
        self.size, self.items = size, {}

    def get(self, key):
        value = self.items.pop(key, None)
        if value is not None:
            self.items[key] = value
        return value

    def put(self, key, value) -> None:
        self.items.pop(key, None)
        self.items[key] = value
        while len(self.items) > self.size:
            self.items.pop(next(iter(self.items)))

    def clear(self) -> None:
        self.items.clear()


def attr(node, name: str, default):
    a = next((a for a in node.attribute if a.name == name), None)
    if a is None:
        return default
    return list(a.ints) if a.ints else (a.s.decode() if a.s else a.i)


@dataclass
class QLayer:
    source: object            # the float node (pre-processed FP32 graph)
    kind: str                 # "Conv" | "Gemm": how to read the weight's layout
    node: object              # the quantized node (Conv/Gemm in QDQ, QLinearConv/QGemm in QOperator)
    w_name: str               # the integer weight initializer
    w_scale: np.ndarray
    w_zp: np.ndarray
    axis: int                 # the weight's quantization axis (per-channel scales)
    b_name: str | None        # the INT32 bias initializer, if any
    b_scale: np.ndarray | None

    def dequant(self, w_int: np.ndarray) -> np.ndarray:
        shape = [1] * w_int.ndim
        per_axis = self.w_scale.ndim > 0 and self.w_scale.size > 1
        if per_axis:
            shape[self.axis] = -1
        s = self.w_scale.astype(np.float64).reshape(shape) if per_axis else self.w_scale.astype(np.float64).reshape(())
        z = self.w_zp.astype(np.float64).reshape(shape) if per_axis else self.w_zp.astype(np.float64).reshape(())
        return (w_int.astype(np.float64) - z) * s


def find_layers(src, q) -> tuple[list[QLayer], int]:
    """(layers, skipped) for the loaded ONNX models `src` (float) and `q` (its quantized file)."""

    float_w = {i.name for i in src.graph.initializer}
    src_nodes = {n.name: n for n in src.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 1
                 and n.input[1] in float_w and not attr(n, "transA", 0)}
    inits = {i.name: i for i in q.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    arr = lambda name: numpy_helper.to_array(inits[name])  # noqa: E731

    layers, skipped = [], 0
    for n in q.graph.node:
        try:
            if n.op_type in ("Conv", "Gemm") and n.name in src_nodes:
                dw = producer.get(n.input[1])
                if not (dw is not None and dw.op_type == "DequantizeLinear" and dw.input[0] in inits):
                    skipped += 1
                    continue
                db = producer.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
                has_b = db is not None and db.op_type == "DequantizeLinear" and db.input[0] in inits
                zp = arr(dw.input[2]) if len(dw.input) > 2 and dw.input[2] else np.zeros((), np.int8)
                layers.append(QLayer(src_nodes[n.name], n.op_type, n, dw.input[0], arr(dw.input[1]), zp,
                                     attr(dw, "axis", 1), db.input[0] if has_b else None,
                                     arr(db.input[1]).astype(np.float64) if has_b else None))
            elif n.op_type in ("QLinearConv", "QGemm") and n.name.removesuffix("_quant") in src_nodes:
                w_at, b_at = (3, 8) if n.op_type == "QLinearConv" else (3, 6)
                if n.input[w_at] not in inits:
                    skipped += 1
                    continue
                w_scale = arr(n.input[w_at + 1])
                axis = 0 if n.op_type == "QLinearConv" else (0 if attr(n, "transB", 0) else 1)
                has_b = len(n.input) > b_at and n.input[b_at] in inits
                b_scale = arr(n.input[1]).astype(np.float64) * w_scale.astype(np.float64) if has_b else None
                layers.append(QLayer(src_nodes[n.name.removesuffix("_quant")],
                                     "Conv" if n.op_type == "QLinearConv" else "Gemm", n, n.input[w_at], w_scale,
                                     arr(n.input[w_at + 2]), axis, n.input[b_at] if has_b else None, b_scale))
            elif n.op_type in ("Conv", "Gemm", "QLinearConv", "QGemm"):
                skipped += 1
        except KeyError:       # a weight or scale computed at run time, not an initializer
            skipped += 1
    return layers, skipped
