"""Per-node sensitivity: how much output error each quantized node adds (own activation comparison).

A node is measured where the next layer reads it: a Conv or Gemm followed by its only consumer Clip/Relu
is one unit (ORT's QDQ quantizer removes that activation and gives the conv the activation's output name
and range), and in the QDQ graph the tensor compared is the dequantized one (`<name>_DequantizeLinear_Output`)
when there is one, so the error includes the node's weight and output-activation quantization. Both graphs
expose those tensors as outputs, which also keeps ORT from fusing across them.
A node's contribution = its output's relative error minus the largest relative error among its inputs,
found by walking back through data-movement ops (Pad, Clip, Flatten, pooling) to the measured producers.

(Before: only nodes whose own output name survived quantization were measured, so every Conv+ReLU6 unit,
all depthwise and expand convolutions of an EfficientNet, was invisible, and a projection conv after one
was charged with the error of the whole block.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from ..artifacts import read_info
from ..data import batch_for
from ..fixed_inputs import arrays
from ..formats.sessions import cpu_session
from ..results import KindError, NodeError, TensorError

COMPUTE_OPS = ("Conv", "Gemm", "MatMul", "Add")


def _expose(model, names: list[str]):
    have = {o.name for o in model.graph.output}
    for n in names:
        if n not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    return model


def _exposed_session(path: Path, names: list[str]):
    m = _expose(onnx.load(str(path)), names)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return cpu_session(m.SerializeToString(), opts)


def _relative_errors(fp32: Path, qdq: Path, pairs: list[tuple[str, str]], x: np.ndarray) -> dict[str, float]:
    """||q - ref|| / ||ref|| per (ref tensor, quantized tensor) pair, accumulated over bounded batches: every
    exposed intermediate of a 224-px EfficientNet is ~30 MB per image, so whole-set runs would not fit."""


    fixed = arrays(read_info(fp32).fixed_inputs)  # a style vector etc., fed beside the image
    ref_s, q_s = _exposed_session(fp32, [r for r, _ in pairs]), _exposed_session(qdq, [q for _, q in pairs])
    ref_out, q_out = [o.name for o in ref_s.get_outputs()], [o.name for o in q_s.get_outputs()]
    num, den, seen = {r: 0.0 for r, _ in pairs}, {r: 0.0 for r, _ in pairs}, set()
    step = 1 if ref_s.get_inputs()[0].shape[0] == 1 else max(1, batch_for(x.shape[-1]) // 2)
    for i in range(0, len(x), step):
        xb = x[i:i + step]
        ref = dict(zip(ref_out, ref_s.run(None, {ref_s.get_inputs()[0].name: xb, **fixed})))
        got = dict(zip(q_out, q_s.run(None, {q_s.get_inputs()[0].name: xb, **fixed})))
        for r, q in pairs:
            if r in ref and q in got:
                seen.add(r)
                num[r] += float(np.sum((got[q].astype(np.float64) - ref[r]) ** 2))
                den[r] += float(np.sum(ref[r].astype(np.float64) ** 2))
        del ref, got
    return {r: float(np.sqrt(num[r]) / max(np.sqrt(den[r]), 1e-12)) for r, _ in pairs if r in seen}


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


def by_kind(rows: list[dict]) -> list[KindError]:
    """Sensitivity summed up per kind of node: seed 004's "EfficientNet is sensitive", made concrete."""
    kinds = {}
    for r in rows:
        kinds.setdefault(r["kind"], []).append(r["added_error"])
    return sorted((KindError(kind=k, nodes=len(v), mean_added_error=float(np.mean(v)),
                             max_added_error=float(np.max(v))) for k, v in kinds.items()),
                  key=lambda r: -r.mean_added_error)


def node_errors(rows: list[dict]) -> list[NodeError]:
    """node_sensitivity's rows as the typed records a report carries."""
    return [NodeError(**{k: r[k] for k in ("node", "op", "kind", "tensor", "output_rel_error", "added_error")})
            for r in rows]


def tensor_errors(rows: list[dict]) -> list[TensorError]:
    """tensor_sensitivity's rows as the typed records a report carries (without the tensor groups)."""
    return [TensorError(tensor=r["tensor"], kind=r["kind"], output_rel_error=r["output_rel_error"],
                        flips=r.get("flips")) for r in rows]


PASS_THROUGH = ("Clip", "Relu", "Pad", "Flatten", "GlobalAveragePool", "AveragePool", "MaxPool", "Reshape",
                "Transpose", "Squeeze", "Unsqueeze", "Identity")


def _units(model) -> list[tuple[object, str]]:
    """(compute node, the tensor the next layer reads): a lone Clip/Relu consumer is folded into the node."""
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    units = []
    for n in model.graph.node:
        if n.op_type not in COMPUTE_OPS:
            continue
        out, after = n.output[0], consumers.get(n.output[0], [])
        if len(after) == 1 and after[0].op_type in ("Clip", "Relu"):
            out = after[0].output[0]
        units.append((n, out))
    return units


def node_sensitivity(fp32: Path, qdq: Path, x: np.ndarray) -> list[dict]:
    """Quantized compute nodes ranked by the output error they add, largest first."""

    ref_model = onnx.load(str(fp32))
    q_graph = onnx.load(str(qdq)).graph
    q_tensors = {o for n in q_graph.node for o in n.output}
    dequantized = {o for n in q_graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    # only nodes the quantizer touched (an input read through DequantizeLinear): with --op-types Conv the
    # graph's Adds stay FP32 and must not be charged with the error their inputs bring
    quantized = {n.name for n in q_graph.node if any(i in dequantized for i in n.input)}
    units = [(n, t) for n, t in _units(ref_model) if t in q_tensors and n.name in quantized]

    def q_name(t: str) -> str:
        dq = f"{t}_DequantizeLinear_Output"
        return dq if dq in q_tensors else t

    errors = _relative_errors(fp32, qdq, [(t, q_name(t)) for _, t in units], x)
    producer = {o: n for n in ref_model.graph.node for o in n.output}
    weights = {i.name: i for i in ref_model.graph.initializer}

    memo: dict[str, float] = {}

    def inherited(tensor: str, depth: int = 0) -> float:
        """The error a tensor already carries: its own when measured, else the largest among the measured
        tensors it is computed from (through data-movement ops, and through unquantized ops such as the
        Sub/Pow/Div of a decomposed instance norm)."""
        if tensor in errors or depth > 64:
            return errors.get(tensor, 0.0)
        if tensor not in memo:
            p = producer.get(tensor)
            if p is None:
                memo[tensor] = 0.0  # graph input or initializer
            else:
                srcs = p.input[:1] if p.op_type in PASS_THROUGH else [i for i in p.input if i and i not in weights]
                memo[tensor] = max([inherited(i, depth + 1) for i in srcs] + [0.0])
        return memo[tensor]

    rows = []
    for n, t in units:
        if t not in errors:
            continue
        before = max([inherited(i) for i in n.input if i not in weights] + [0.0])
        rows.append({"node": n.name, "op": n.op_type, "kind": conv_kind(n, weights), "tensor": t,
                     "output_rel_error": errors[t], "added_error": max(0.0, errors[t] - before)})
    return sorted(rows, key=lambda r: -r["added_error"])


# ops whose output holds its input's values (ORT gives both the same scale): a tensor and such copies of it are one
# quantization site, quantized and kept float together
VALUE_PRESERVING = ("Pad", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "MaxPool")


def quantized_activations(qdq_graph, fp32_tensors: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """FP32-graph tensor name -> (scale, zero point) of every activation the QDQ graph quantizes. ORT renames a
    graph output it quantizes to `<name>_QuantizeLinear_Input`; a fused Conv+Clip keeps the Clip's name."""

    consts = {i.name: numpy_helper.to_array(i) for i in qdq_graph.initializer}
    out = {}
    for n in qdq_graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in consts:
            continue
        t = n.input[0]
        if t not in fp32_tensors and t.endswith("_QuantizeLinear_Input"):
            t = t[: -len("_QuantizeLinear_Input")]
        if t in fp32_tensors and n.input[1] in consts and len(n.input) > 2 and n.input[2] in consts:
            out[t] = (consts[n.input[1]], consts[n.input[2]])
    return out


def _sites(model, params: dict) -> dict[str, list[str]]:
    """Root tensor -> the quantized tensors that carry its values (itself, then its padded/reshaped copies)."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def root(t: str) -> str:
        p = producer.get(t)
        while p is not None and p.op_type in VALUE_PRESERVING and p.input[0] in params:
            t = p.input[0]
            p = producer.get(t)
        return t

    sites: dict[str, list[str]] = {}
    for t in params:
        sites.setdefault(root(t), []).append(t)
    return sites


def float_site_nodes(model, tensors: list[str]) -> list[str]:
    """The nodes to leave unquantized so that these tensors stay float: ORT quantizes a tensor when its producer
    or any consumer is quantized, so both go, the producer together with the Conv a Clip/Relu follows."""
    producer = {o: n for n in model.graph.node for o in n.output}
    names = []
    for t in tensors:
        p = producer.get(t)
        while p is not None:
            names.append(p.name)
            if p.op_type not in ("Clip", "Relu") + VALUE_PRESERVING or p.input[0] in tensors:
                break
            p = producer.get(p.input[0])
        names += [n.name for n in model.graph.node if t in n.input]
    return [n for n in dict.fromkeys(names) if n]


def _fake_quantized(model, tensors: list[str], params: dict):
    """A copy of the FP32 graph in which these tensors alone pass through QuantizeLinear -> DequantizeLinear."""

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inputs = {i.name for i in g.input}
    for k, t in enumerate(tensors):
        scale, zp = params[t]
        s_name, z_name, raw = f"__fq{k}_scale", f"__fq{k}_zp", f"__fq{k}_raw"
        g.initializer.extend([numpy_helper.from_array(np.asarray(scale), s_name),
                              numpy_helper.from_array(np.asarray(zp), z_name)])
        if t in inputs:  # the graph input keeps its name: its consumers read the fake-quantized copy
            for n in g.node:
                n.input[:] = [raw if i == t else i for i in n.input]
            src, dst, at = t, raw, 0
        else:  # the producer writes `raw`; Q/DQ give back `t` to every consumer and graph output
            at = next(i for i, n in enumerate(g.node) if t in n.output) + 1
            p = g.node[at - 1]
            p.output[:] = [raw if o == t else o for o in p.output]
            src, dst = raw, t
        g.node.insert(at, helper.make_node("DequantizeLinear", [f"__fq{k}_q", s_name, z_name], [dst]))
        g.node.insert(at, helper.make_node("QuantizeLinear", [src, s_name, z_name], [f"__fq{k}_q"]))
    return m


def tensor_sensitivity(fp32: Path, qdq: Path, x: np.ndarray, log=None) -> list[dict]:
    """Each activation the QDQ graph quantizes, quantized ALONE in the FP32 graph (the QDQ graph's scale and zero
    point): the end-to-end error that one tensor costs the model's output, largest first.

    Unlike node_sensitivity's local error, this sees amplification downstream: on the ImageNet EfficientNet-Lite0,
    the stem's ReLU6 output (values ~3 +- 0.5 in a [0, 6] range, fed to a depthwise conv that takes differences)
    costs 10 points of agreement alone while its own relative error is tiny. Each row also names the nodes to keep
    unquantized for the tensor to stay float (float_site_nodes)."""


    model = onnx.load(str(fp32))
    tensors = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    params = quantized_activations(onnx.load(str(qdq)).graph, tensors)
    sites = _sites(model, params)
    fixed = arrays(read_info(fp32).fixed_inputs)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3

    def outputs(m) -> np.ndarray:
        s = cpu_session(m.SerializeToString(), opts)
        name = s.get_inputs()[0].name
        step = 1 if s.get_inputs()[0].shape[0] == 1 else 16
        return np.concatenate([s.run(None, {name: x[i:i + step], **fixed})[0] for i in range(0, len(x), step)])

    ref = outputs(model).astype(np.float64)
    producer = {o: n for n in model.graph.node for o in n.output}
    weights = {i.name: i for i in model.graph.initializer}
    rows = []
    for root, group in sites.items():
        got = outputs(_fake_quantized(model, group, params))
        p = producer.get(root)
        while p is not None and p.op_type in ("Clip", "Relu"):
            p = producer.get(p.input[0])
        row = {"tensor": root, "tensors": group, "producer": p.name if p is not None else "(input)",
               "kind": conv_kind(p, weights) if p is not None else "input",
               "output_rel_error": float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-12)),
               "nodes": float_site_nodes(model, group)}
        if ref.ndim == 2 and ref.shape[1] > 1:
            row["flips"] = float(np.mean(got.argmax(1) != ref.argmax(1)))
        rows.append(row)
        if log:
            log(f"  tensor {root}: output rel error {row['output_rel_error']:.4f}")
    return sorted(rows, key=lambda r: -r["output_rel_error"])
