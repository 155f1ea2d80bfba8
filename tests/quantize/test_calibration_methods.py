"""Defect 6: each calibration method yields its own activation scales. With ORT's defaults the Entropy
calibrator had one candidate threshold (the full range), so `entropy` was MinMax bit for bit."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from qdeploy.quantize import preset, quantize


def activation_scales(path) -> dict[str, float]:
    m = onnx.load(str(path))
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n.input[0]: float(init[n.input[1]]) for n in m.graph.node
            if n.op_type == "QuantizeLinear" and init[n.input[1]].size == 1}


@pytest.fixture(scope="module")
def scales(tmp_path_factory, fp32_onnx, calib_eval):
    out = tmp_path_factory.mktemp("calib")
    x = calib_eval[1]
    # activation scales come from the calibrator alone: the weight passes (GPTQ, bias correction) leave them as they
    # are and cost most of a quantization, so they are off here
    plain = dict(min_agreement=0.5, weight_rounding="nearest", bias_correction=False)
    return {m: activation_scales(quantize(fp32_onnx[0], out / f"{m}.onnx", preset(m).with_(**plain), x)[0])
            for m in ("default", "entropy", "percentile")}


@pytest.mark.parametrize("a,b", [("default", "entropy"), ("default", "percentile"), ("entropy", "percentile")])
def test_each_method_has_its_own_scales(scales, a, b):
    sa, sb = scales[a], scales[b]
    assert set(sa) == set(sb) and len(sa) >= 20
    differ = sum(not np.isclose(sa[k], sb[k], rtol=1e-6) for k in sa)
    assert differ >= 0.8 * len(sa), f"{a} vs {b}: only {differ} of {len(sa)} activation scales differ"

