"""ONNX files that an ONNX Runtime host runs with the numbers qdeploy verified, under that host's own settings.

qdeploy opens every session with WeightBiasQuantization off (sessions.py): at load time it would quantize, per
tensor, the float weight of a Conv/Gemm fed by a DequantizeLinear -- exactly the nodes a recipe keeps float (auto's
fallback, excluded nodes). A host that cannot turn one transformer off (Triton's onnxruntime backend sets only a
graph level; a user's plain InferenceSession sets nothing) would serve other numbers. The transformer matches the op
types Conv, ConvTranspose and Gemm only, so the same float node written as ORT's FusedConv / FusedGemm without an
activation, or with the Relu that follows it folded in (the same math and kernel: ORT's own level-2 fusion turns
such a Conv, or Conv+Relu, into a FusedConv) is left alone,
while every other optimisation, the integer fusions and the CPU's NCHWc layout included, still applies.

Measured (bench/bundle_fidelity.py, docs/serving.md; bundled ResNet-20, three convs kept float, 200 CIFAR-10
test images, AVX2 EPYC, onnxruntime 1.32.0): the file as written, in a default session, max |diff| 0.247 from
qdeploy's session (4.6 % of the largest logit); the rewritten file there: 0 (bit-equal), 1.00x the latency. Where a
node is not covered (a float ConvTranspose) `preoptimize` writes the graph as qdeploy's session optimises it (level
EXTENDED, the last portable one), for a host told to optimise nothing (Triton: optimization.graph.level 2)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort
from onnx import helper

from .sessions import DISABLED_OPTIMIZERS, cpu_session, host_session

FLOAT_AS_FUSED = {"Conv": "FusedConv", "Gemm": "FusedGemm"}   # ONNX op -> ORT contrib op of the same math
MS_DOMAIN = "com.microsoft"
Level = ort.GraphOptimizationLevel


def _optimized_nodes(path: Path, level, off: bool, tmp: Path) -> list[tuple[str, str]]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(tmp / f"opt-{int(off)}.onnx")
    (cpu_session if off else host_session)(str(path), opts)
    return [(n.name, n.op_type) for n in onnx.load(opts.optimized_model_filepath).graph.node]


def load_rewrites(path: str | Path, level=Level.ORT_ENABLE_ALL) -> list[str]:
    """Nodes the transformers qdeploy turns off would add to `path` in a host session at `level` ([] : the host
    computes what qdeploy's session computes). They are level-1 transformers, so the graphs are compared after
    ORT_ENABLE_BASIC (higher levels build on it; ORT warns against saving level-3 graphs)."""

    if level == Level.ORT_DISABLE_ALL:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        ours = _optimized_nodes(Path(path), Level.ORT_ENABLE_BASIC, True, Path(tmp))
        theirs = _optimized_nodes(Path(path), Level.ORT_ENABLE_BASIC, False, Path(tmp))
    added = sorted({name for name, _ in theirs} - {name for name, _ in ours})
    if not added and sorted(t for _, t in theirs) != sorted(t for _, t in ours):
        added = [f"({abs(len(theirs) - len(ours))} nodes differ)"]
    return added


def float_nodes_fed_by_dq(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Conv/Gemm nodes with a float weight initializer whose input comes from a DequantizeLinear: the nodes
    WeightBiasQuantization rewrites."""

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    floats = {i.name for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT}
    return [n for n in g.node if n.op_type in FLOAT_AS_FUSED and n.domain in ("", "ai.onnx") and len(n.input) > 1
            and n.input[1] in floats and getattr(producer.get(n.input[0]), "op_type", None) == "DequantizeLinear"]


def server_safe(src: str | Path, dst: str | Path) -> list[str]:
    """Write `src` to `dst` with every float node WeightBiasQuantization would rewrite as its ORT contrib twin;
    returns those nodes' names (metadata and everything else unchanged; the file still needs ONNX Runtime). A file
    with none is copied byte for byte."""

    model = onnx.load(str(src))
    nodes = float_nodes_fed_by_dq(model)
    if not nodes:
        shutil.copyfile(src, dst)
        return []
    g = model.graph
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for c in g.node:
        for i in c.input:
            consumers.setdefault(i, []).append(c)
    outputs = {o.name for o in g.output}
    for n in nodes:
        n.op_type, n.domain = FLOAT_AS_FUSED[n.op_type], MS_DOMAIN
        # a Conv's lone Relu goes into the node, as ORT's own ConvActivationFusion would have put it
        after = consumers.get(n.output[0], [])
        if n.op_type == "FusedConv" and len(after) == 1 and after[0].op_type == "Relu" and n.output[0] not in outputs:
            relu = after[0]
            n.attribute.append(helper.make_attribute("activation", "Relu"))
            n.output[0] = relu.output[0]
            g.node.remove(relu)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    onnx.save(model, str(dst))
    return [n.name for n in nodes]


def preoptimize(src: str | Path, dst: str | Path) -> None:
    """`src` as qdeploy's session optimises it up to ORT_ENABLE_EXTENDED (portable across CPUs; level 3 adds
    CPU-specific layouts), saved to `dst`: for a host that then runs it with every optimisation off."""

    opts = ort.SessionOptions()
    opts.graph_optimization_level = Level.ORT_ENABLE_EXTENDED
    opts.log_severity_level = 3
    opts.optimized_model_filepath = str(dst)
    cpu_session(str(src), opts)


__all__ = ["DISABLED_OPTIMIZERS", "FLOAT_AS_FUSED", "float_nodes_fed_by_dq", "load_rewrites", "preoptimize",
           "server_safe"]
