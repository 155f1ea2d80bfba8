"""Per-node sensitivity: depthwise, pointwise and full convolutions are told apart, and every Conv+ReLU6
unit is measured (ORT's QDQ quantizer removes the ReLU6 and renames the conv's output, which used to make
these units invisible)."""
import io

import numpy as np
import onnx
import pytest
import torch

from qdeploy.data import DataConfig, PreprocessSpec, open_calib_eval
from qdeploy.quantize.ort import quantize
from qdeploy.quantize.sensitivity import by_kind, conv_kind, node_sensitivity
from qdeploy.recipes import QuantConfig


def _mobile_block() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.ReLU6(),
        torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.ReLU6(),
        torch.nn.Conv2d(16, 24, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(24, 10)).eval()


def _export(net, size=8) -> bytes:
    buf = io.BytesIO()
    torch.onnx.export(net.eval(), (torch.zeros(1, 3, size, size),), buf, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return buf.getvalue()


def test_conv_kinds_from_a_real_export():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),
                              torch.nn.Conv2d(8, 16, 1), torch.nn.Flatten(), torch.nn.Linear(16 * 8 * 8, 4))
    m = onnx.load_from_string(_export(net))
    weights = {i.name: i for i in m.graph.initializer}
    kinds = [conv_kind(n, weights) for n in m.graph.node if n.op_type in ("Conv", "Gemm")]
    assert kinds == ["conv", "depthwise", "pointwise", "gemm"]
    rows = [{"kind": "depthwise", "added_error": 0.3}, {"kind": "depthwise", "added_error": 0.1},
            {"kind": "pointwise", "added_error": 0.05}]
    summary = by_kind(rows)
    assert summary[0].kind == "depthwise" and summary[0].nodes == 2 and abs(summary[0].mean_added_error - 0.2) < 1e-9


@pytest.fixture(scope="module")
def block_and_images(tmp_path_factory, cifar):
    calib, ev = open_calib_eval(DataConfig(root=str(cifar), calib_size=64, eval_limit=64))
    spec = PreprocessSpec()
    path = tmp_path_factory.mktemp("sens") / "fp32.onnx"
    path.write_bytes(_export(_mobile_block(), 32))
    return path, calib.load(spec), ev.load(spec)


def test_conv_relu6_units_are_measured_and_charged_only_their_own_error(tmp_path, block_and_images):
    fp32, calib, x = block_and_images
    qdq, _ = quantize(fp32, tmp_path / "int8.onnx", QuantConfig.default().with_(min_agreement=0.0), calib)
    rows = {r["kind"]: r for r in node_sensitivity(fp32, qdq, x)}
    # all four compute nodes, including the two that end in a ReLU6 (measured at the ReLU6's output)
    assert set(rows) == {"conv", "depthwise", "pointwise", "gemm"}
    m = onnx.load(str(fp32))
    clip_outputs = {n.output[0] for n in m.graph.node if n.op_type == "Clip"}
    assert rows["conv"]["tensor"] in clip_outputs and rows["depthwise"]["tensor"] in clip_outputs
    for r in rows.values():
        assert 0.0 < r["output_rel_error"] < 1.0 and 0.0 <= r["added_error"] <= r["output_rel_error"]
    # the chain conv -> depthwise -> pointwise: each is charged its error minus what its input carried
    dw, pw = rows["depthwise"], rows["pointwise"]
    assert np.isclose(dw["added_error"], max(0.0, dw["output_rel_error"] - rows["conv"]["output_rel_error"]))
    assert np.isclose(pw["added_error"], max(0.0, pw["output_rel_error"] - dw["output_rel_error"]))
