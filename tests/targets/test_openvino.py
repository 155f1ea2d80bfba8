"""OpenVINO as a target: the same ONNX files, real images, compared with ONNX Runtime's outputs."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import CIFAR, run_cli
from qdeploy.results import RunResult

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="OpenVINO is not installed (pip install 'qdeploy[openvino]')")


def test_openvino_runs_fp32_like_ort_and_reports_its_precision(fp32_onnx, calib_eval):
    from qdeploy.targets import open_session

    path, _ = fp32_onnx
    _, _, _, ev_x = calib_eval
    x = ev_x[:16]
    ov = open_session(path, target="openvino-cpu")
    ref = open_session(path).run(x)
    got = ov.run(x)
    assert "f32" in ov.runtime or "float32" in ov.runtime    # pinned, and labelled
    assert np.abs(got - ref).max() < 1e-3 and (got.argmax(1) == ref.argmax(1)).all()


@pytest.mark.pipeline
@pytest.mark.shared
def test_run_with_two_targets_fills_the_targets_table(tmp_path):
    out = tmp_path / "r"
    res = run_cli("run", "--data", CIFAR, "--out", out, "--variants", "default", "--targets", "ort-cpu,openvino-cpu",
                  "--eval-limit", 100, "--calib-size", 32, "--bench-runs", 10, "--bench-batches", "1",
                  "--bench-seconds", 0.1)
    assert res.returncode == 0, res.stderr[-2000:]
    rep = RunResult.load(out / "report.json")
    for name in ("fp32", "default"):
        on = rep.get(name).on["openvino-cpu"]
        assert on.metrics.n == 100 and on.bench.p50_ms > 0 and on.load_s > 0 and on.first_ms > 0
        assert "openvino" in on.runtime
    # FP32 on OpenVINO agrees with FP32 on ORT on (nearly) every image; the INT8 file runs there too
    assert rep.get("fp32").on["openvino-cpu"].metrics.agreement >= 0.99
    assert rep.get("default").on["openvino-cpu"].metrics.agreement >= 0.9
    assert "## Targets" in (out / "report.md").read_text()


def test_unknown_or_missing_target_is_one_line(tmp_path):
    r = run_cli("run", "--targets", "tpu-9000", "--out", tmp_path / "x")
    assert r.returncode != 0 and "unknown target 'tpu-9000'" in r.stderr


@pytest.mark.pipeline
@pytest.mark.shared
def test_nncf_variant_is_ir_verified_and_in_the_report(tmp_path):
    out = tmp_path / "n"
    res = run_cli("run", "--data", CIFAR, "--out", out, "--variants", "nncf", "--eval-limit", 100, "--calib-size", 32,
                  "--bench-runs", 10, "--bench-batches", "1", "--bench-seconds", 0.1)
    assert res.returncode == 0, res.stderr[-2000:]
    rep = RunResult.load(out / "report.json")
    v = rep.get("nncf")
    assert v.ok and v.target == "openvino-cpu" and v.file == "int8_nncf.xml"
    assert (out / "int8_nncf.xml").is_file() and (out / "int8_nncf.bin").is_file()
    assert v.check.n == 32 and v.check.agreement >= 0.8           # verified before it got its name
    assert v.metrics.agreement >= 0.9 and "openvino" in v.bench.runtime
    # the .bin holds INT8 weights: about a quarter of FP32's ONNX
    assert v.bench.size_bytes < 0.4 * (out / "fp32.onnx").stat().st_size
    import openvino as ov

    m = ov.Core().read_model(str(out / "int8_nncf.xml"))
    assert any(op.get_type_name() == "FakeQuantize" for op in m.get_ops())
    assert "nncf (openvino-cpu)" in (out / "report.md").read_text()
