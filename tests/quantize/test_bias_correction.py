"""Bias correction on real models and real images: only the INT32 biases change, by exactly (Wq - W) E[x] measured
from the files themselves, and on the ImageNet EfficientNet-Lite0 (whose rounded weights shift its outputs most)
agreement with FP32 rises."""

import numpy as np
import onnx
import pytest

from conftest import file_meta, onnx_inits
from qdeploy.bundled import bundled_run_dir
from qdeploy.data import DataConfig, PreprocessSpec, open_calib
from qdeploy.quantize import QuantConfig, quantize
from qdeploy.recipes import kernel_types
from qdeploy.targets import open_session, run_batched


def _meta(path):
    return file_meta(path, "bias_correction")


@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_every_layer_corrected_and_only_biases_change(tmp_path, cifar, fmt):
    fp32 = bundled_run_dir() / "fp32.onnx"
    calib = open_calib(DataConfig(root=str(cifar), calib_size=64)).load(PreprocessSpec())
    cfg = QuantConfig(format=fmt, **kernel_types("u8s8"), bias_correction=True)
    on, off = tmp_path / "on.onnx", tmp_path / "off.onnx"
    quantize(fp32, on, cfg, calib, guard=False)
    quantize(fp32, off, cfg.with_(bias_correction=False), calib, guard=False)
    layers = sum(n.op_type in ("Conv", "Gemm") for n in onnx.load(str(fp32)).graph.node)
    meta = _meta(on)
    assert meta["layers"] == layers and meta["skipped"] == 0 and meta["calibration_images"] == 64, meta
    assert _meta(off) is None
    (m_on, a), (_, b) = onnx_inits(on), onnx_inits(off)
    assert a.keys() == b.keys()
    changed = [k for k in a if a[k].dtype == np.int32 and not np.array_equal(a[k], b[k])]
    assert len(changed) >= layers // 2, changed            # biases moved in most layers ...
    assert all(np.array_equal(a[k], b[k]) for k in a if a[k].dtype != np.int32)   # ... and nothing else did
    assert [n.op_type for n in m_on.graph.node] == [n.op_type for n in onnx.load(str(off)).graph.node]


def test_shift_is_rounding_error_times_input_mean_and_agreement_rises(tmp_path, lite0_imagenet):
    fp32, calib, ev = lite0_imagenet
    # bias correction alone (GPTQ: its own test), on 7-bit weights (the default recipe without VNNI) on every CPU:
    # 8-bit weights (VNNI) err half as much, and the lift on 120 images gets too small to tell from noise
    cfg = QuantConfig.default().with_(weight_rounding="nearest", **kernel_types("u8s8", vnni=False))
    assert cfg.bias_correction and cfg.reduce_range
    on, off = tmp_path / "on.onnx", tmp_path / "off.onnx"
    quantize(fp32, on, cfg, calib, guard=False)
    quantize(fp32, off, cfg.with_(bias_correction=False), calib, guard=False)

    # The stem conv reads the (padded) input image: recompute its correction from the files and the calibration
    # images alone, E[x] per colour channel taken straight from the pixels.
    m, a = onnx_inits(on)
    _, b = onnx_inits(off)
    _, f = onnx_inits(fp32)
    prod = {o: n for n in m.graph.node for o in n.output}
    stem = next(n for n in m.graph.node if n.op_type == "Conv")
    dw, db = prod[stem.input[1]], prod[stem.input[2]]
    wq = (a[dw.input[0]].astype(np.float64) - a[dw.input[2]].reshape(-1, 1, 1, 1)) * a[dw.input[1]].reshape(-1, 1, 1, 1)
    w = next(v for k, v in f.items() if v.shape == wq.shape and v.ndim == 4)
    expected = (wq - w).sum(axis=(2, 3)) @ calib.mean(axis=(0, 2, 3)).astype(np.float64)
    moved = (a[db.input[0]].astype(np.float64) - b[db.input[0]]) * a[db.input[1]]
    step = a[db.input[1]]
    assert np.abs(expected).max() > 5 * step.max()       # the rounding error really shifts this layer
    # padding zeros make the conv's mean input ~1 % smaller than the pixels' mean: a 5 % + one-step tolerance
    assert np.all(np.abs(moved + expected) <= 0.05 * np.abs(expected) + step)

    ref = run_batched(open_session(fp32), ev).argmax(1)
    agree = {k: float((run_batched(open_session(p), ev).argmax(1) == ref).mean()) for k, p in (("on", on), ("off", off))}
    # measured: 300 calibration images, 1,024 evaluation images: 58.3 % -> 80.3 %
    assert agree["on"] >= agree["off"] + 0.08, agree
