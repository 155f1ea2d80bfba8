import collections

import onnx
import pytest

from qdeploy.artifacts import read_info
from qdeploy.errors import ConfigError, QuantizeError
from qdeploy.quantize import QuantConfig, preset, quantize
from qdeploy.recipes import kernel_types


def ops(path):
    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def zero_point_types(path):
    m = onnx.load(str(path))
    return {i.name: i.data_type for i in m.graph.initializer if i.name.endswith("zero_point")}


@pytest.fixture(scope="module")
def variants(tmp_path_factory, fp32_onnx, calib_eval):
    out = tmp_path_factory.mktemp("q")
    calib_x = calib_eval[1]
    return {name: quantize(fp32_onnx[0], out / f"{name}.onnx", preset(name), calib_x)
            for name in ("default", "seed-lab5", "dynamic")}


def test_default_is_qdq_u8s8_per_channel(variants):
    path, check = variants["default"]
    c = ops(path)
    assert c["Conv"] == 20 and c["Gemm"] == 1  # QDQ keeps float ops wrapped in Q/DQ pairs
    assert c["QuantizeLinear"] >= 20 and c["DequantizeLinear"] >= 41
    m = onnx.load(str(path))
    inits = {i.name: i for i in m.graph.initializer}
    # per-channel: the first conv's weight scale has one entry per output channel
    w_scales = [inits[n.input[1]] for n in m.graph.node if n.op_type == "DequantizeLinear"
                and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT8
                and len(inits[n.input[0]].dims) == 4]
    assert len(w_scales) == 20 and all(s.dims[0] > 1 for s in w_scales)
    zp = zero_point_types(path)
    assert onnx.TensorProto.UINT8 in zp.values() and onnx.TensorProto.INT8 in zp.values()
    assert check.agreement >= 0.97 and check.rel_l2 < 0.1 and not check.collapsed
    assert path.stat().st_size < 0.26 * 44.69e6


def test_seed_lab5_is_qoperator_s8s8(variants):
    path, check = variants["seed-lab5"]
    c = ops(path)
    assert c["QLinearConv"] == 20 and c.get("Conv", 0) == 0
    zp = zero_point_types(path)
    assert set(zp.values()) == {onnx.TensorProto.INT8}  # int8 activations and weights
    assert check.agreement >= 0.95


def test_dynamic_uses_integer_ops(variants):
    path, check = variants["dynamic"]
    c = ops(path)
    assert c["ConvInteger"] == 20 and c["DynamicQuantizeLinear"] >= 17  # shortcut convs share their input's quantization
    assert check.agreement >= 0.95


def test_metadata_survives_quantization(variants):
    info = read_info(variants["default"][0])
    assert info.variant == "default" and len(info.classes) == 10 and info.preprocess.size == 32
    assert '"format": "QDQ"' in info.extra["quant_config"]


def test_collapse_is_refused_and_not_written(tmp_path, fp32_onnx, calib_eval):
    # Calibrating on images scaled x1000 (the "calibrate on random data" mistake, exaggerated) sets
    # activation ranges so wide that real images quantize to a few levels: a real collapse.
    bad_calib = calib_eval[1] * 1000.0
    out = tmp_path / "bad.onnx"
    with pytest.raises(QuantizeError, match="collapsed") as caught:
        quantize(fp32_onnx[0], out, preset("default"), bad_calib, verify_batch=calib_eval[1])
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    # the refusal says how far it got and where the error comes from, node by node
    c, d = caught.value.check, caught.value.facts.diagnosis
    assert c.agreement < 0.8 and c.n == len(calib_eval[1]) and d.images == min(c.n, 32)
    kinds = {k.kind: k for k in d.by_kind}
    assert {"conv", "add", "gemm"} <= set(kinds)  # ResNet18: 3x3 convs (+ReLU) are measured too
    worst = d.worst[0]
    assert worst.added_error == max(k.max_added_error for k in kinds.values()) and worst.output_rel_error > 0.3


@pytest.mark.parametrize("kwargs", [{"format": "QDQX"}, {"activation_type": "int4"}, {"method": "kl"},
                                    {"percentile": 50.0}])
def test_config_validation(kwargs):
    with pytest.raises(ConfigError):
        QuantConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown quantization preset"):
        preset("fastest")


def test_nodes_kept_float_stay_float_at_run_time(lite0_imagenet, tmp_path):
    """ONNX Runtime's WeightBiasQuantization (on from ORT_ENABLE_BASIC) quantizes, at load, the float weights of a
    Conv that sits between DequantizeLinear and QuantizeLinear to per-tensor int8: exactly a node auto's fallback
    keeps in FP32. Every session qdeploy opens turns it off. Three depthwise convs of Lite0 kept float: in
    qdeploy's session the file is as close to FP32 as the file with nothing kept float; in a plain ORT session the
    same file collapses."""
    import numpy as np
    import onnxruntime as ort

    from qdeploy.compare import compare_outputs
    from qdeploy.formats.sessions import DISABLED_OPTIMIZERS
    from qdeploy.targets import open_session, run_batched

    fp32, calib, ev = lite0_imagenet
    ev = ev[::3]
    depthwise = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv" and "depthwise" in n.name][:3]
    assert len(depthwise) == 3 and DISABLED_OPTIMIZERS == ("WeightBiasQuantization",)
    # the integer kernel qdeploy uses on this CPU: 8-bit weights saturate AVX2's int16 pair sums without VNNI
    cfg = QuantConfig(name="x", per_channel=True, min_agreement=0.0, **kernel_types("u8s8"))
    kept, _ = quantize(fp32, tmp_path / "kept.onnx", cfg.with_(nodes_to_exclude=depthwise), calib[:16], guard=False)
    full, _ = quantize(fp32, tmp_path / "full.onnx", cfg, calib[:16], guard=False)
    g = onnx.load(str(kept)).graph
    floats = {i.name for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert all(n.input[1] in floats for n in g.node if n.name in depthwise)   # float weights in the file
    ref = run_batched(open_session(fp32), ev)
    ours, whole = (compare_outputs(ref, run_batched(open_session(p), ev)) for p in (kept, full))
    plain = ort.InferenceSession(str(kept), providers=["CPUExecutionProvider"])
    name = plain.get_inputs()[0].name
    theirs = compare_outputs(ref, np.concatenate([plain.run(None, {name: ev[i:i + 8]})[0] for i in range(0, len(ev), 8)]))
    print(f"kept float, ours {ours.rel_l2:.3f}; nothing kept {whole.rel_l2:.3f}; plain ORT {theirs.rel_l2:.3f}")
    assert ours.rel_l2 <= 1.1 * whole.rel_l2, (ours.rel_l2, whole.rel_l2)
    assert theirs.rel_l2 >= 2 * ours.rel_l2, (theirs.rel_l2, ours.rel_l2)
