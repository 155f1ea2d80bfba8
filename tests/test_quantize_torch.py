"""PyTorch-native INT8 variants: quantizable twin, PTQ, PoT (exact powers of two in ONNX), QAT, reload."""
import onnx
import pytest
import torch

from conftest import CLASSES
from qdeploy.data import PreprocessSpec
from qdeploy.errors import QuantizeError
from qdeploy.quantize.pot import is_power_of_two
from qdeploy.quantize.torch_eager import (TORCH_PRESETS, export_quantized, load_converted,
                                          onnx_scales, ptq, quantizable_from, save_converted, size_bytes)


def test_quantizable_twin_loads_checkpoint_without_renames(fp32_model, calib_eval):
    q = quantizable_from(fp32_model).eval()
    x = torch.from_numpy(calib_eval[1][:8])
    with torch.no_grad():
        assert torch.allclose(q(x), fp32_model(x), atol=1e-5)
    q.fuse_model()
    assert type(q.conv1[0]).__name__ == "ConvReLU2d" and type(q.layer2[0].shortcut[0]).__name__ == "Conv2d"
    assert isinstance(q.layer1[0].left[1], torch.nn.Identity)  # BN folded away


def test_non_resnet_needs_a_quantizable_form():
    from qdeploy.models import build_model

    with pytest.raises(QuantizeError, match="quantizable form"):
        quantizable_from(build_model("mobilenetv2-cifar"))


@pytest.fixture(scope="module")
def ptq_models(fp32_model, calib_eval):
    x = calib_eval[1]
    return {name: ptq(fp32_model, x, TORCH_PRESETS[name]()) for name in ("pt-ptq", "pot")}


@pytest.mark.parametrize("name", ["pt-ptq", "pot"])
def test_ptq_accuracy_and_size(ptq_models, fp32_model, calib_eval, name):
    _, _, ev, x = calib_eval
    q = ptq_models[name]
    with torch.no_grad():
        ref = fp32_model(torch.from_numpy(x)).argmax(1).numpy()
        got = q(torch.from_numpy(x)).argmax(1).numpy()
    assert (got == ref).mean() >= 0.97
    assert abs((got == ev.labels).mean() - (ref == ev.labels).mean()) <= 0.02
    assert size_bytes(q) < 0.27 * size_bytes(fp32_model)


def test_pot_onnx_scales_are_exact_powers_of_two(ptq_models, calib_eval, tmp_path):
    cfg = TORCH_PRESETS["pot"]()
    path, check = export_quantized(ptq_models["pot"], tmp_path / "pot.onnx", calib_eval[1], calib_eval[1][:64],
                                   CLASSES, PreprocessSpec(), cfg)
    scales = onnx_scales(path)
    assert len(scales) > 40 and all(is_power_of_two(s) for s in scales)
    observed = onnx_scales(path, bias=False)  # activations and weights: what the observers chose
    assert 40 < len(observed) < len(scales) and all(2 ** -8 <= s <= 2 ** 8 for s in observed)  # the clamp
    assert check.agreement >= 0.98
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert ops.count("DequantizeLinear") > 40 and ops.count("Conv") == 20


def test_pt_ptq_scales_are_not_all_powers_of_two(ptq_models, calib_eval, tmp_path):
    path, _ = export_quantized(ptq_models["pt-ptq"], tmp_path / "p.onnx", calib_eval[1], calib_eval[1][:64], CLASSES,
                               PreprocessSpec(), TORCH_PRESETS["pt-ptq"]())
    assert not all(is_power_of_two(s) for s in onnx_scales(path))  # so the PoT check above can fail


def test_save_and_reload_converted(ptq_models, fp32_model, calib_eval, tmp_path):
    save_converted(ptq_models["pt-ptq"], tmp_path / "q.pth")
    q2 = load_converted(fp32_model, tmp_path / "q.pth", TORCH_PRESETS["pt-ptq"]())
    x = torch.from_numpy(calib_eval[1][:16])
    with torch.no_grad():
        assert torch.equal(q2(x), ptq_models["pt-ptq"](x))


def test_qat_cpu_small(fp32_model, calib_eval, cifar):
    from qdeploy.data import balanced_indices, open_split
    from qdeploy.quantize.torch_qat import qat

    train = open_split(cifar, "train")
    train = train.subset(balanced_indices(train.labels, 256, seed=5))
    cfg = TORCH_PRESETS["pt-qat"]().with_(qat_epochs=2, qat_batch_size=64, device="cpu")
    q, history = qat(fp32_model, train.pixels_uint8(PreprocessSpec()), train.labels, PreprocessSpec(), cfg,
                     log=lambda m: None)
    assert [h["epoch"] for h in history] == [1, 2] and all(h["images"] == 256 for h in history)
    _, _, ev, x = calib_eval
    with torch.no_grad():
        acc = (q(torch.from_numpy(x)).argmax(1).numpy() == ev.labels).mean()
    assert acc >= 0.85  # fine-tuning from FP32 with distillation must not wreck the model
