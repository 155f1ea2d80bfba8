
import numpy as np
import onnx
import pytest

from conftest import CLASSES
from qdeploy.artifacts import read_info
from qdeploy.data import PreprocessSpec
from qdeploy.errors import ExportError
from qdeploy.export import ExportConfig, export
from qdeploy.targets import open_session


def test_export_graph_contract(fp32_onnx):
    path, parity = fp32_onnx
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == ["logits"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("Conv") == 20 and ops.count("Gemm") == 1  # BN folded into conv
    assert parity.max_abs_diff < 1e-4 and parity.agreement == 1.0 and parity.batch == 64


def test_metadata_carries_preprocessing_and_classes(fp32_onnx):
    info = read_info(fp32_onnx[0])
    assert info.classes == CLASSES and info.preprocess == PreprocessSpec() and info.variant == "fp32"


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_dynamic_batch(fp32_onnx, fp32_model, calib_eval, batch):
    import torch

    x = calib_eval[1][:batch]
    out = open_session(fp32_onnx[0]).run(x)
    with torch.no_grad():
        ref = fp32_model(torch.from_numpy(x)).numpy()
    assert out.shape == (batch, 10) and np.abs(out - ref).max() < 1e-4


def test_parity_failure_is_typed_and_leaves_no_file(tmp_path, fp32_model, calib_eval):
    out = tmp_path / "fp32.onnx"
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        export(fp32_model, out, calib_eval[1][:16], CLASSES, PreprocessSpec(), ExportConfig(atol=1e-12))
    assert list(tmp_path.iterdir()) == []


def test_class_count_mismatch(tmp_path, fp32_model, calib_eval):
    with pytest.raises(ExportError, match="outputs 10 classes but the data has 3"):
        export(fp32_model, tmp_path / "x.onnx", calib_eval[1][:4], CLASSES[:3], PreprocessSpec())


def test_old_opset_refused():
    from qdeploy.errors import ConfigError

    with pytest.raises(ConfigError, match="opset"):
        ExportConfig(opset=13)


def test_an_op_no_exporter_converts_is_one_error_naming_op_and_layer(tmp_path, calib_eval):
    """torch.histc has no ONNX conversion in either exporter: the error names it and the layer that calls it
    (found by watching the model's torch calls), and nothing is written."""
    import torch
    import torch.nn as nn

    class Binned(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 10, 3)

        def forward(self, x):
            y = self.conv(x).mean((2, 3))
            return y + torch.histc(y, 4).sum()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem, self.stage = nn.Conv2d(3, 3, 1), nn.Sequential(nn.Identity(), Binned())

        def forward(self, x):
            return self.stage(self.stem(x))

    with pytest.raises(ExportError, match=r"^the operator aten::histc in layer 'stage.1' \(Binned\) has no ONNX "
                                          r"export at opset 17"):
        export(Net().eval(), tmp_path / "x.onnx", calib_eval[1][:4], CLASSES, PreprocessSpec())
    assert list(tmp_path.iterdir()) == []
