"""Defect 2: --calib-size is not silently replaced inside --auto; the sweep is relative to it and recorded."""
import json

import pytest

from qdeploy.bundled import bundled_run_dir
from qdeploy.data import DataConfig, PreprocessSpec, open_calib_val
from qdeploy.quantize.auto import _Search, auto_quantize
from qdeploy.recipes import AutoConfig

pytestmark = pytest.mark.search


def test_auto_sweeps_fractions_of_the_run_calib_size(tmp_path, cifar, monkeypatch):
    """The bundled ResNet-20: which model is searched does not matter here, only the calibration sizes tried.
    Its INT8 is not faster than FP32 on every CPU (on CI's AVX2 EPYC the speed screen kept nothing and no size was
    swept), so the candidates' latency is fixed at half of FP32's: the sweep, not this CPU, is under test."""
    monkeypatch.setattr(_Search, "_latencies", lambda self, cands, runs=None: [setattr(c, "p50_ms", 0.5 * self.fp32_ms)
                                                                    for c in cands])
    spec = PreprocessSpec()
    calib, val = open_calib_val(DataConfig(root=str(cifar), calib_size=60), 200)
    cfg = AutoConfig(max_drop_pt=100.0, val_size=200, formats=("QDQ",), kernels=("u8s8",),
                     methods=("minmax",), per_channel=(True,), bench_runs=10)
    rec = auto_quantize(bundled_run_dir() / "fp32.onnx", tmp_path / "a.onnx", calib.load(spec), val.load(spec),
                        val.labels, cfg, log=lambda m: None)
    assert rec["calib_pool"] == 60 and rec["calib_sizes"] == [20, 60]
    assert {c["calib_size"] for c in rec["candidates"]} == {20, 60}
    assert json.loads((tmp_path / "search.json").read_text())["calib_sizes"] == [20, 60]


@pytest.mark.parametrize("race", [True, False])
def test_raced_sweep_builds_only_the_winner_in_full(tmp_path, cifar, monkeypatch, race):
    """Raced, the calibration sweep builds every point the cheap way (nearest rounding, no bias correction) and
    only its winner with GPTQ + bias correction; unraced, every point in full. Counted at the quantizer, so a
    cheap build that claims to be full (or the reverse) shows. The pick is always a file scored on every
    validation image."""
    import qdeploy.quantize.auto as auto_mod

    monkeypatch.setattr(_Search, "_latencies", lambda self, cands, runs=None: [setattr(c, "p50_ms", 0.5 * self.fp32_ms)
                                                                    for c in cands])
    full_builds, cheap_builds = [], []
    real = auto_mod.quantize

    def counted(fp32, out, qcfg, *a, **kw):
        (full_builds if qcfg.weight_rounding == "gptq" and qcfg.bias_correction else cheap_builds).append(
            (qcfg.method, qcfg.per_channel, len(a[0])))
        return real(fp32, out, qcfg, *a, **kw)

    monkeypatch.setattr(auto_mod, "quantize", counted)
    spec = PreprocessSpec()
    calib, val = open_calib_val(DataConfig(root=str(cifar), calib_size=60), 200)
    cfg = AutoConfig(max_drop_pt=100.0, val_size=200, formats=("QDQ",), kernels=("u8s8",),
                     methods=("minmax", "percentile"), per_channel=(True, False), bench_runs=10, race_sweep=race,
                     screen_images=100)
    rec = auto_quantize(bundled_run_dir() / "fp32.onnx", tmp_path / "a.onnx", calib.load(spec), val.load(spec),
                        val.labels, cfg, log=lambda m: None)
    sweep = [c for c in rec["candidates"] if c["stage"] == "accuracy" and c["status"] == "ok"]
    # the sweep: 3 (method, granularity) points besides the kept one, and one more calibration size
    if race:
        assert len(full_builds) <= 2, full_builds          # the kept kernel, and the race winner when it differs
        assert len(cheap_builds) >= 1 + 3 + 1, cheap_builds  # screen, sweep points, second calibration size
        cheap = [c for c in sweep if c["config"]["weight_rounding"] == "nearest"]
        (win,) = [c for c in cheap if "race winner" in c["note"]]
        # raced on the screen's 100-image prefix; the winner then scored on all 200
        assert win["images"] == 200 and all(c["images"] == 100 for c in cheap if c is not win), cheap
        rebuilt = [c for c in sweep if c["config"]["weight_rounding"] == "gptq"]
        if rebuilt:   # the winner was not the kept recipe: its full twin has its method, granularity and size
            (r,) = rebuilt
            assert (r["config"]["method"], r["config"]["per_channel"], r["calib_size"]) == (
                win["config"]["method"], win["config"]["per_channel"], win["calib_size"])
    else:
        assert len(full_builds) == 1 + 3 + 1, full_builds
    chosen = next(c for c in rec["candidates"] if c["name"] == rec["chosen"])
    assert chosen["images"] == 200
