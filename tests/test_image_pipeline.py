"""Image-to-image end to end on real photos (Kodak24) and the real style network from its PyPI package:
fixed inputs, PSNR/SSIM judged independently here, the collapse guard, a PyTorch image model via
--arch file.py:Class, and seed 003's PowerDifference study."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio

from conftest import SHARED, run_cli
from qdeploy.artifacts import read_info
from qdeploy.models.packaged import packaged_onnx
from qdeploy.results import RunResult

KODAK = SHARED / "datasets" / "kodak24"
pytestmark = [pytest.mark.shared,
              pytest.mark.skipif(not KODAK.is_dir(), reason="../shared/datasets/kodak24 missing")]


def _kodak_input(name: str, size: int) -> np.ndarray:
    """The model input computed here, not by qdeploy: shorter side to `size`, centre crop, 0..1."""
    im = Image.open(KODAK / name).convert("RGB")
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
    left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
    arr = np.asarray(im.crop((left, top, left + size, top + size)), np.float32) / 255
    return arr.transpose(2, 0, 1)[None]


@pytest.fixture(scope="module")
def style_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("style") / "run"
    res = run_cli("run", "--targets", "ort-cpu", "--onnx", "multistyle26.onnx", "--task", "image-to-image", "--data", KODAK,
                  "--fixed-input", "style_weights=onehot:19", "--size", 96, "--calib-size", 4, "--eval-limit", 4,
                  "--variants", "default,conv-inputs", "--power-difference", "--bench-runs", 10,
                  "--bench-seconds", 0.1, "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res


@pytest.mark.pipeline
def test_fixed_inputs_travel_in_every_file_and_psnr_is_what_the_files_give(style_run):
    out, _ = style_run
    rep = RunResult.load(out / "report.json")
    assert rep.task == "image-to-image" and rep.classes == []
    for v in ("fp32", "int8_default", "int8_conv-inputs"):
        info = read_info(out / f"{v}.onnx")
        assert info.task == "image-to-image"
        assert info.fixed_inputs["style_weights"]["spec"] == "onehot:19"
    # recompute the conv-inputs variant's PSNR on the evaluated photos with plain ORT + scikit-image
    conv = rep.get("conv-inputs").metrics
    w = np.zeros(26, np.float32)
    w[19] = 1
    sessions = [ort.InferenceSession(str(out / f), providers=["CPUExecutionProvider"])
                for f in ("fp32.onnx", "int8_conv-inputs.onnx")]
    names = sorted(p.name for p in KODAK.glob("*.png"))
    psnrs = {}
    for n in names:
        x = _kodak_input(n, 96)
        ref, got = (s.run(None, {"image": x, "style_weights": w})[0][0] for s in sessions)
        psnrs[n] = peak_signal_noise_ratio(ref, got, data_range=1.0)
    assert conv.n == 4 and len(conv.psnr) == 4
    # the evaluated images are 4 of the 24 photos: each reported PSNR is one of the recomputed ones
    for p in conv.psnr:
        assert min(abs(p - q) for q in psnrs.values()) < 1e-3
    assert conv.worst_name in psnrs and psnrs[conv.worst_name] == pytest.approx(conv.psnr_min, abs=1e-3)
    assert 0 < conv.psnr_mean < 100 and conv.max_abs_diff > 0   # INT8 really differs from FP32
    md = (out / "report.md").read_text()
    assert "PSNR dB mean" in md and "conv-inputs" in md and (out / "plots" / "psnr_hist.png").is_file()
    for v in ("default", "conv-inputs"):   # input | FP32 | INT8 | error grid per variant, in the report
        assert (out / "plots" / f"grid_{v}.png").is_file() and f"plots/grid_{v}.png" in md


@pytest.mark.pipeline
def test_power_difference_study_outputs_equal_and_numpy_really_ran(style_run):
    out, _ = style_run
    st = RunResult.load(out / "report.json").power_difference
    rows = st.rows
    assert st.rewritten_nodes["fp32"] == 18          # every instance norm's (x - mean)^2
    for k in ("fp32 PowerDifference-native", "fp32 PowerDifference-numpy"):
        assert rows[k].max_abs_diff <= 1e-4
    assert rows["fp32 PowerDifference-numpy"].numpy_calls == 18 * st.images
    assert rows["fp32 PowerDifference-native"].numpy_calls == 0
    assert st.int8_variant == "conv-inputs"           # default wraps Sub/Pow in Q/DQ: no pairs left
    assert rows["int8 PowerDifference-numpy"].max_abs_diff <= 1e-4 + rows["int8"].max_abs_diff
    import onnx

    g = onnx.load(str(out / rows["fp32 PowerDifference-native"].file))
    assert not [n for n in g.graph.node if n.op_type == "Pow"] and [f.name for f in g.functions] == ["PowerDifference"]
    assert "Seed 003's custom operator" in (out / "report.md").read_text()


ARCH = textwrap.dedent('''
    import torch
    import torch.nn as nn

    class Enhance(nn.Module):
        """A tiny image-to-image net: conv, ReLU, conv, sigmoid."""
        def __init__(self, amplify: float = 1.0):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 3, 3, padding=1)
            self.c = nn.Conv2d(8, 3, 3, padding=1)
            self.amplify = amplify

        def forward(self, x):
            h = torch.relu(self.a(x))
            # amplify > 1: the output is the amplified difference of two nearly equal convolutions, which
            # 8-bit activations cannot resolve (the collapse case)
            return torch.sigmoid(self.b(h) + self.amplify * (self.b(h) - self.c(h)))
''')


@pytest.mark.parametrize("amplify", [1.0, 3000.0])
@pytest.mark.pipeline
def test_pytorch_image_model_exports_checks_parity_and_collapses_are_refused(tmp_path, amplify):
    (tmp_path / "enh.py").write_text(ARCH)
    torch.manual_seed(0)
    import importlib.util

    spec = importlib.util.spec_from_file_location("enh", tmp_path / "enh.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    m = mod.Enhance()
    with torch.no_grad():
        m.c.weight.copy_(m.b.weight + 1e-3 * torch.randn_like(m.b.weight))
        m.c.bias.copy_(m.b.bias)
    torch.save(m.state_dict(), tmp_path / "enh.pth")
    out = tmp_path / "run"
    res = run_cli("run", "--targets", "ort-cpu", "--checkpoint", tmp_path / "enh.pth", "--arch", f"{tmp_path / 'enh.py'}:Enhance",
                  "--arch-kwargs", json.dumps({"amplify": amplify}), "--task", "image-to-image", "--size", 64,
                  "--data", KODAK, "--calib-size", 4, "--eval-limit", 4, "--variants", "default",
                  "--bench-runs", 10, "--bench-seconds", 0.1, "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    rep = RunResult.load(out / "report.json")
    parity = json.loads((out / "manifest.json").read_text())
    assert "parity" in json.dumps(parity)
    v = rep.get("default")
    if amplify == 1.0:
        assert v.ok and v.metrics.psnr_mean > 30 and (out / "int8_default.onnx").is_file()
    else:
        assert not v.ok and "collapsed" in v.error and v.check.psnr < 20
        assert not (out / "int8_default.onnx").exists()
        assert "FAILED, not written" in (out / "report.md").read_text()


def test_image_flags_are_checked_before_work(tmp_path):
    r = run_cli("run", "--onnx", "multistyle26.onnx", "--task", "image-to-image", "--data", KODAK, "--size", 64,
                "--out", tmp_path / "o")
    assert r.returncode != 0 and "--fixed-input style_weights" in r.stderr
    r = run_cli("run", "--onnx", "multistyle26.onnx", "--task", "image-to-image", "--data", KODAK,
                "--fixed-input", "style_weights=onehot:3", "--out", tmp_path / "o")
    assert r.returncode != 0 and "--size N" in r.stderr
    r = run_cli("run", "--onnx", "multistyle26.onnx", "--task", "image-to-image", "--data", KODAK, "--size", 64,
                "--fixed-input", "style_weights=onehot:3", "--max-drop", "1", "--out", tmp_path / "o")
    assert r.returncode != 0 and "--min-psnr" in r.stderr
    r = run_cli("run", "--variants", "pt-ptq", "--onnx", "multistyle26.onnx", "--task", "image-to-image",
                "--data", KODAK, "--size", 64, "--fixed-input", "style_weights=onehot:3", "--out", tmp_path / "o")
    assert r.returncode != 0 and "PyTorch classifier recipes" in r.stderr
    assert packaged_onnx("multistyle26.onnx").is_file()
