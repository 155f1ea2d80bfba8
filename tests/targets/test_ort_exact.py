"""exact_math_session: a QDQ file's own math, checked against ONNX's independent Python reference implementation."""
import numpy as np
import onnx
import pytest

from conftest import CLASSES


@pytest.fixture(scope="module")
def qdq_with_a_float_conv(tmp_path_factory, calib_eval):
    """A small seeded CNN exported by qdeploy and quantized (QDQ, 8-bit weights) with its second conv kept float."""
    import torch

    from qdeploy.data import PreprocessSpec
    from qdeploy.export import export
    from qdeploy.quantize import QuantConfig, quantize

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    _, calib, _, ev = calib_eval
    tmp = tmp_path_factory.mktemp("exact")
    fp32, _ = export(model, tmp / "fp32.onnx", calib[:32], CLASSES, PreprocessSpec())
    convs = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"]
    assert len(convs) == 2
    cfg = QuantConfig(name="x", per_channel=True, min_agreement=0.0, nodes_to_exclude=[convs[1]])
    q, _ = quantize(fp32, tmp / "q.onnx", cfg, calib[:32], guard=False)
    return q, convs, ev[:24]


def test_exact_math_session_is_the_files_own_math(qdq_with_a_float_conv):
    """The session's outputs equal onnx.reference's (pure numpy, node by node) up to float32 summation order, on
    a file whose first conv is quantized and whose second stays float between DequantizeLinear and QuantizeLinear
    (the node ORT's load-time WeightBiasQuantization would otherwise quantize per tensor)."""
    from onnx.reference import ReferenceEvaluator

    from qdeploy.targets import run_batched
    from qdeploy.targets.ort import exact_math_session

    q, convs, ev = qdq_with_a_float_conv
    m = onnx.load(str(q))
    g = m.graph
    floats = {i.name for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT}
    by_name = {n.name: n for n in g.node}
    assert by_name[convs[1]].input[1] in floats and by_name[convs[0]].input[1] not in floats
    # onnx.reference implements QuantizeLinear/DequantizeLinear from opset 19 only; for this graph's ops (Q, DQ,
    # Conv, Relu, GlobalAveragePool, Flatten, Gemm) opsets 17-19 define the same math
    op_types = {n.op_type for n in g.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types <= {"QuantizeLinear", "DequantizeLinear", "Conv", "Relu",
                                                                  "GlobalAveragePool", "Flatten", "Gemm"}

    got = run_batched(exact_math_session(q), ev, batch_size=8)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = max(o.version, 19)
    ref = ReferenceEvaluator(m).run(None, {g.input[0].name: ev})[0]
    assert got.shape == ref.shape == (len(ev), 10)
    scale = float(np.abs(ref).max())
    diff = np.abs(got - ref)
    off = float((diff > 1e-5 * scale).mean())
    print(f"exact session vs onnx.reference: {off:.1%} of outputs differ, max |diff| {diff.max():.2e} "
          f"of max |logit| {scale:.2f}")
    # float32 sums in another order can move a value across one requantization's rounding boundary: a few such
    # outputs are allowed, no more (ORT's fused integer kernels on the same file: 41 % differ, measured on AMD)
    assert off <= 0.02 and diff.max() <= 0.1 * scale, (off, diff.max(), scale)
