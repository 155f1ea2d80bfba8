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
    monkeypatch.setattr(_Search, "_latency", lambda self, path, runs=None: 0.5 * self.fp32_ms)
    monkeypatch.setattr(_Search, "_latencies", lambda self, cands: [setattr(c, "p50_ms", 0.5 * self.fp32_ms)
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
