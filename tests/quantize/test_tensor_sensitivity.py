"""End-to-end activation sensitivity (each quantized activation alone in the FP32 graph) on the ImageNet
EfficientNet-Lite0, checked against real ORT files: the site it ranks first, kept float by leaving the nodes it
names unquantized, really leaves that tensor unquantized and really raises agreement with FP32."""
import numpy as np
import onnx

from qdeploy.quantize import QuantConfig, quantize
from qdeploy.quantize.sensitivity import node_sensitivity, quantized_activations, tensor_sensitivity
from qdeploy.recipes import kernel_types
from qdeploy.targets import open_session, run_batched


def _quantized_inputs(path) -> set[str]:
    g = onnx.load(str(path)).graph
    weights = {i.name for i in g.initializer}
    return {n.input[0] for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] not in weights}


def test_stem_output_ranks_first_and_keeping_it_float_helps(tmp_path, lite0_imagenet):
    fp32, calib, ev = lite0_imagenet
    cfg = QuantConfig(**kernel_types("u8s8"))
    qdq = tmp_path / "q.onnx"
    quantize(fp32, qdq, cfg, calib, verify_batch=ev[:16], guard=False)
    rows = tensor_sensitivity(fp32, qdq, ev[:16])

    # every activation the QDQ graph quantizes belongs to exactly one site
    model = onnx.load(str(fp32))
    names = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    quantized = quantized_activations(onnx.load(str(qdq)).graph, names)
    grouped = [t for r in rows for t in r["tensors"]]
    assert sorted(grouped) == sorted(quantized) and len(rows) > 40
    errs = [r["output_rel_error"] for r in rows]
    assert errs == sorted(errs, reverse=True) and errs[-1] >= 0
    # the stem's ReLU6 output costs the output most, by far; node sensitivity (local error) does not rank the stem
    # conv first: the reason the fallback follows tensors
    top = rows[0]
    assert top["tensor"] == "/act/Clip_output_0" and top["producer"] == "/_conv_stem/Conv", rows[:3]
    assert top["output_rel_error"] > 2 * rows[1]["output_rel_error"]
    assert node_sensitivity(fp32, qdq, ev[:16])[0]["node"] != "/_conv_stem/Conv"

    # the nodes it names keep the site float in a real ORT file, and nothing else changes
    kept = tmp_path / "kept.onnx"
    quantize(fp32, kept, cfg.with_(nodes_to_exclude=top["nodes"]), calib, verify_batch=ev[:16], guard=False)
    q_all, q_kept = _quantized_inputs(qdq), _quantized_inputs(kept)
    assert not set(top["tensors"]) & q_kept and set(top["tensors"]) <= q_all
    assert q_all - q_kept == set(top["tensors"])
    ref = run_batched(open_session(fp32), ev).argmax(1)
    agree = {k: float(np.mean(run_batched(open_session(p), ev).argmax(1) == ref)) for k, p in
             (("all", qdq), ("kept", kept))}
    assert agree["kept"] >= agree["all"] + 0.03, agree
