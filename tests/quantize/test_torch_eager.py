"""PyTorch-native INT8 variants: quantizable twin, PTQ, PoT (exact powers of two in ONNX), QAT, reload."""
import onnx
import pytest
import torch

from conftest import CLASSES
from qdeploy.data import PreprocessSpec
from qdeploy.errors import QuantizeError
from qdeploy.quantize.pot import is_power_of_two
from qdeploy.quantize.torch_eager import (
    TORCH_PRESETS,
    export_quantized,
    load_converted,
    onnx_scales,
    ptq,
    quantizable_from,
    save_converted,
    size_bytes,
)


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


def test_qat_starts_at_ptq(ptq_models, fp32_model, calib_eval):
    """QAT's activation grids are PTQ's: converted before any training step, it is the PTQ model."""
    from qdeploy.quantize.torch_qat import convert, prepare_qat_model

    q0 = convert(prepare_qat_model(fp32_model, calib_eval[1], TORCH_PRESETS["pt-qat"]()))
    ptq_scales = {n: float(m.scale) for n, m in ptq_models["pt-ptq"].named_modules()
                  if isinstance(getattr(m, "scale", None), float)}
    qat_scales = {n: float(m.scale) for n, m in q0.named_modules() if n in ptq_scales}
    assert len(ptq_scales) > 20 and qat_scales.keys() == ptq_scales.keys()
    assert all(abs(qat_scales[n] - s) <= 1e-5 * s for n, s in ptq_scales.items())
    x = torch.from_numpy(calib_eval[3])
    with torch.no_grad():
        assert (q0(x).argmax(1) == ptq_models["pt-ptq"](x).argmax(1)).float().mean() >= 0.99
    # PyTorch's own recipe (moving-average observers on training batches) has no calibrated grids yet
    observe = prepare_qat_model(fp32_model, calib_eval[1], TORCH_PRESETS["pt-qat"]().with_(qat_init="observe"))
    assert not any(float(m.scale) != 1.0 for n, m in observe.named_modules()
                   if n.endswith("activation_post_process") and hasattr(m, "scale"))


@pytest.fixture(scope="module")
def qat_sets(cifar):
    from qdeploy.data import DataConfig, open_qat_sets

    return open_qat_sets(DataConfig(root=str(cifar), calib_size=64), 256, 200)


def test_qat_sets_hold_validation_out(qat_sets, cifar):
    from qdeploy.data import DataConfig, open_calib_eval, open_qat_sets

    calib, train, val = qat_sets
    assert (len(train), len(val)) == (256, 200)
    assert not set(map(str, val.paths)) & (set(map(str, train.paths)) | set(map(str, calib.paths)))
    assert [str(p) for p in calib.paths] == [str(p) for p in open_calib_eval(DataConfig(root=str(cifar),
                                                                                          calib_size=64))[0].paths]
    assert all("/train/" in str(p) for p in train.paths + val.paths)  # never the evaluation split
    _, everything, val2 = open_qat_sets(DataConfig(root=str(cifar), calib_size=64), None, 200)
    assert len(everything) + len(val2) == 50000


@pytest.mark.train
def test_qat_cpu_small_selects_on_validation(fp32_model, calib_eval, qat_sets):
    from qdeploy.quantize.torch_qat import qat

    _, train, val = qat_sets
    cfg = TORCH_PRESETS["pt-qat"]().with_(qat_epochs=1, qat_batch_size=64, device="cpu")
    spec = PreprocessSpec()
    q, history, chosen = qat(fp32_model, train.pixels_uint8(spec), train.labels, spec, cfg, calib_eval[1],
                             val=(val.load(spec), val.labels), log=lambda m: None)
    assert [h["epoch"] for h in history] == [0, 1] and all(h["images"] == 256 for h in history[1:])
    # training images are memorised by FP32, so epochs are ranked by agreement with it, then KL
    best = max(history, key=lambda h: (h["val_agreement"], -h["val_kl_fp32"]))
    assert chosen == best["epoch"]
    _, _, ev, x = calib_eval
    with torch.no_grad():
        got = q(torch.from_numpy(x)).argmax(1).numpy()
        ref = fp32_model(torch.from_numpy(x)).argmax(1).numpy()
    assert (got == ev.labels).mean() >= 0.85 and (got == ref).mean() >= 0.97


@pytest.mark.train
def test_qat_without_validation_returns_last_epoch(fp32_model, calib_eval, qat_sets):
    from qdeploy.quantize.torch_qat import qat

    _, train, _ = qat_sets
    cfg = TORCH_PRESETS["pt-qat"]().with_(qat_epochs=1, device="cpu", qat_init="observe")
    spec = PreprocessSpec()
    _, history, chosen = qat(fp32_model, train.pixels_uint8(spec)[:128], train.labels[:128], spec, cfg,
                             calib_eval[1], log=lambda m: None)
    assert chosen == 1 and [h["epoch"] for h in history] == [1] and "val_top1" not in history[0]


def test_a_collapsed_pytorch_int8_model_is_refused_not_written(fp32_model, fp32_onnx, calib_eval, tmp_path,
                                                                 monkeypatch):
    """Export parity compares the file with the PyTorch INT8 model it came from, so it cannot see a collapse: an
    INT8 model of the wrong weights (here: a freshly initialised ResNet18 standing in for PTQ gone wrong) exports
    faithfully. The FP32 guard of every ORT variant must refuse it too, with no file under the final name."""
    import qdeploy.quantize.torch_eager as te
    from qdeploy.models import build_model
    from qdeploy.quantize.base import VariantContext
    from qdeploy.quantize.torch_variant import build_torch

    torch.manual_seed(0)
    stranger = build_model("resnet18-cifar", num_classes=10).eval()
    real_ptq = te.ptq
    monkeypatch.setattr(te, "ptq", lambda model, x, cfg: real_ptq(stranger, x, cfg))
    ctx = VariantContext(fp32=fp32_onnx[0], out=tmp_path, calib_x=calib_eval[1], classes=CLASSES,
                         spec=PreprocessSpec(), model=fp32_model)
    with pytest.raises(QuantizeError, match=r"collapsed: top-1 agreement with FP32 is .* not written") as exc:
        build_torch(TORCH_PRESETS["pt-ptq"](), ctx, tmp_path / "int8_pt-ptq.onnx", log=lambda m: None)
    assert exc.value.check.agreement < 0.5 and exc.value.check.n == 64
    assert not (tmp_path / "int8_pt-ptq.onnx").exists()
    # the same call with the real model passes both checks and writes the file
    monkeypatch.setattr(te, "ptq", real_ptq)
    check, _ = build_torch(TORCH_PRESETS["pt-ptq"](), ctx, tmp_path / "int8_pt-ptq.onnx", log=lambda m: None)
    assert (tmp_path / "int8_pt-ptq.onnx").exists() and check.agreement >= 0.98


def test_a_qat_record_qdeploy_did_not_write_is_one_clear_error(tmp_path):
    """--qat-from reads the QAT history beside the weights as typed epochs: a row with a field QAT never writes is
    refused with the file named, before any weights are loaded."""
    import json

    from qdeploy.quantize.base import VariantContext
    from qdeploy.quantize.torch_variant import _qat_model
    from qdeploy.recipes import TORCH_PRESETS
    from qdeploy.results import VariantFacts

    weights = tmp_path / "pt_qat_int8.pt"
    weights.write_bytes(b"not read")
    weights.with_suffix(".json").write_text(json.dumps({"history": [{"epoch": 1, "val_top1": 0.9, "lr": 0.01}]}))
    cfg = TORCH_PRESETS["pt-qat"]().with_(qat_from=str(weights))
    ctx = VariantContext(fp32=tmp_path / "fp32.onnx", out=tmp_path, calib_x=None, classes=[], spec=None,
                         model=torch.nn.Identity())
    with pytest.raises(QuantizeError, match=r"pt_qat_int8.json: not a QAT history qdeploy wrote .*has no field lr"):
        _qat_model(cfg, ctx, VariantFacts(), log=lambda m: None)
