"""One calibration pass shared by the recipes quantized from the same graph and images (the auto search's formats and
kernels): the activation ranges and the bias-correction means are computed once, and a file quantized from the
shared statistics is the file a fresh computation gives."""
from __future__ import annotations

import onnx
from onnx import numpy_helper

from qdeploy.quantize import bias_correction
from qdeploy.quantize import ort as qort
from qdeploy.recipes import QuantConfig


def _graph(path):
    m = onnx.load(str(path))
    return ([(n.op_type, list(n.input), list(n.output)) for n in m.graph.node],
            {i.name: numpy_helper.to_array(i).tobytes() for i in m.graph.initializer})


def test_ranges_and_means_are_computed_once_and_change_nothing(fp32_onnx, calib_eval, tmp_path, monkeypatch):
    fp32, (_, calib_x, _, _) = fp32_onnx[0], calib_eval
    calib = calib_x[:12]
    calls = {"calibrate": 0, "means": 0}
    real_create, real_graph = qort.create_calibrator, bias_correction._mean_graph

    def counting_create(*a, **k):
        calls["calibrate"] += 1
        return real_create(*a, **k)

    def counting_graph(*a, **k):
        calls["means"] += 1
        return real_graph(*a, **k)

    monkeypatch.setattr(qort, "create_calibrator", counting_create)
    monkeypatch.setattr(bias_correction, "_mean_graph", counting_graph)
    qort.clear_statistics()
    base = QuantConfig.default().with_(weight_rounding="nearest")
    qort.quantize(fp32, tmp_path / "qdq.onnx", base, calib)
    qort.quantize(fp32, tmp_path / "qop.onnx", base.with_(name="qop", format="QOperator"), calib)
    assert calls == {"calibrate": 1, "means": 1}
    qort.quantize(fp32, tmp_path / "other.onnx", base.with_(method="percentile"), calib)   # other ranges
    qort.quantize(fp32, tmp_path / "fewer.onnx", base, calib[:6])                          # other images
    assert calls == {"calibrate": 3, "means": 2}
    # back to earlier statistics (the search's next format or target): remembered, not recomputed
    qort.quantize(fp32, tmp_path / "again.onnx", base.with_(method="percentile", format="QOperator"), calib)
    qort.quantize(fp32, tmp_path / "again_min.onnx", base, calib)
    assert calls == {"calibrate": 3, "means": 2}
    assert _graph(tmp_path / "again_min.onnx") == _graph(tmp_path / "qdq.onnx")
    qort.clear_statistics()
    qort.quantize(fp32, tmp_path / "qop_fresh.onnx", base.with_(name="qop", format="QOperator"), calib)
    assert _graph(tmp_path / "qop.onnx") == _graph(tmp_path / "qop_fresh.onnx")
    assert _graph(tmp_path / "qop.onnx") != _graph(tmp_path / "qdq.onnx")


def test_recent_stats_keeps_the_last_used_entries():
    from qdeploy.quantize.qlayers import RecentStats

    c = RecentStats(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1          # a is now the most recently used
    c.put("c", 3)                   # evicts b, the least recently used
    assert (c.get("a"), c.get("b"), c.get("c")) == (1, None, 3)
    c.clear()
    assert c.get("a") is None
