"""Per-node sensitivity: how much output error each quantized node adds (own activation comparison).

Both graphs expose the float outputs of the compute nodes (Conv, Gemm, MatMul, Add). In a QDQ model
those tensors keep their FP32 names and carry the simulated quantization error, and ORT cannot fuse a
node whose output is a graph output, so the comparison sees exactly what quantization does.
A node's contribution = its output's relative error minus the largest relative error among its inputs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

COMPUTE_OPS = ("Conv", "Gemm", "MatMul", "Add")


def _expose(model, names: list[str]):
    import onnx

    have = {o.name for o in model.graph.output}
    for n in names:
        if n not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    return model


def _run_exposed(path: Path, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    import onnx
    import onnxruntime as ort

    m = _expose(onnx.load(str(path)), names)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outs = [o.name for o in s.get_outputs()]
    got = s.run(None, {s.get_inputs()[0].name: x})
    return dict(zip(outs, got))


def conv_kind(node, weights: dict) -> str:
    """depthwise (one filter per channel), pointwise (1x1), conv (any other), or the op type."""
    if node.op_type != "Conv":
        return node.op_type.lower()
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    w = weights.get(node.input[1])
    if w is not None and group > 1 and group == w.dims[0] and w.dims[1] == 1:
        return "depthwise"
    if w is not None and list(w.dims[2:]) == [1, 1]:
        return "pointwise"
    return "conv"


def by_kind(rows: list[dict]) -> list[dict]:
    """Sensitivity summed up per kind of node: seed 004's "EfficientNet is sensitive", made concrete."""
    kinds = {}
    for r in rows:
        kinds.setdefault(r["kind"], []).append(r["added_error"])
    return sorted(({"kind": k, "nodes": len(v), "mean_added_error": float(np.mean(v)),
                    "max_added_error": float(np.max(v))} for k, v in kinds.items()),
                  key=lambda r: -r["mean_added_error"])


def node_sensitivity(fp32: Path, qdq: Path, x: np.ndarray) -> list[dict]:
    """Quantized compute nodes ranked by the output error they add, largest first."""
    import onnx

    ref_model = onnx.load(str(fp32))
    nodes = [n for n in ref_model.graph.node if n.op_type in COMPUTE_OPS]
    q_tensors = {o for n in onnx.load(str(qdq)).graph.node for o in n.output}
    nodes = [n for n in nodes if n.output[0] in q_tensors]
    names = [n.output[0] for n in nodes]
    ref = _run_exposed(fp32, names, x)
    got = _run_exposed(qdq, names, x)

    def rel(t):
        return float(np.linalg.norm(got[t] - ref[t]) / max(np.linalg.norm(ref[t]), 1e-12)) if t in got and t in ref else 0.0

    errors = {t: rel(t) for t in names}
    weights = {i.name: i for i in ref_model.graph.initializer}
    rows = []
    for n in nodes:
        inherited = max([errors.get(i, 0.0) for i in n.input] + [0.0])
        rows.append({"node": n.name, "op": n.op_type, "kind": conv_kind(n, weights),
                     "output_rel_error": errors[n.output[0]], "added_error": max(0.0, errors[n.output[0]] - inherited)})
    return sorted(rows, key=lambda r: -r["added_error"])
