"""Depthwise, pointwise and full convolutions are told apart in the sensitivity analysis."""
import io

import onnx
import torch

from qdeploy.quantize.sensitivity import by_kind, conv_kind


def test_conv_kinds_from_a_real_export():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
                              torch.nn.Conv2d(8, 16, 1), torch.nn.Flatten(), torch.nn.Linear(16 * 8 * 8, 4))
    buf = io.BytesIO()
    torch.onnx.export(net.eval(), (torch.zeros(1, 3, 8, 8),), buf, dynamo=False, opset_version=17)
    m = onnx.load_from_string(buf.getvalue())
    weights = {i.name: i for i in m.graph.initializer}
    kinds = [conv_kind(n, weights) for n in m.graph.node if n.op_type in ("Conv", "Gemm")]
    assert kinds == ["conv", "depthwise", "pointwise", "gemm"]
    rows = [{"kind": "depthwise", "added_error": 0.3}, {"kind": "depthwise", "added_error": 0.1},
            {"kind": "pointwise", "added_error": 0.05}]
    summary = by_kind(rows)
    assert summary[0]["kind"] == "depthwise" and summary[0]["nodes"] == 2 and abs(summary[0]["mean_added_error"] - 0.2) < 1e-9
