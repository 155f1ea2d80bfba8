"""bf16 as a candidate deployment: OpenVINO computing the FP32 file's float layers in bfloat16, offered only where
the CPU does bf16 natively, judged by the same gate as the INT8 files and recommended when it is the fastest that
passes. The choice is tested by restricting the candidate set (with and without the bf16 row), not by assuming
the machine; the real run needs a CPU with AVX-512 BF16 or AMX and skips elsewhere, saying so."""
from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import CIFAR, R20_CKPT, run_cli

from qdeploy.bench import BenchResult
from qdeploy.errors import ConfigError
from qdeploy.pipeline import recommend
from qdeploy.results import TargetResult, VariantResult
from qdeploy.targets import check_targets
from qdeploy.targets.openvino import OpenVinoBf16
from qdeploy.tasks import get_task
from qdeploy.tasks.classification import Metrics

BF16 = OpenVinoBf16.name
HAVE_OV = importlib.util.find_spec("openvino") is not None


def _bench(p50: float) -> BenchResult:
    return BenchResult(name="x", size_bytes=1, p50_ms=p50, p90_ms=p50, p99_ms=p50, mean_ms=p50, runs=10)


def _variants(bf16_top1: float | None):
    """FP32 at 5 ms (top-1 90 %), INT8 `default` at 2 ms (89.5 %), and, when bf16_top1 is given, the FP32 file on the
    bf16 target at 1.5 ms with that top-1."""
    fp32 = VariantResult(name="fp32", kind="fp32", file="fp32.onnx", metrics=Metrics(n=100, top1=0.90),
                         bench=_bench(5.0))
    if bf16_top1 is not None:
        fp32.on[BF16] = TargetResult(target=BF16, metrics=Metrics(n=100, top1=bf16_top1, agreement=0.99),
                                     bench=_bench(1.5))
    int8 = VariantResult(name="default", kind="int8", file="int8_default.onnx",
                         metrics=Metrics(n=100, top1=0.895, agreement=0.98), bench=_bench(2.0))
    return [fp32, int8]


def test_the_fp32_file_on_bf16_is_a_candidate_judged_by_the_same_gate():
    task = get_task("classification")
    assert str(recommend(_variants(0.899), 1.0, task)) == f"fp32@{BF16}"   # fastest, and within 1 pt
    assert str(recommend(_variants(0.86), 1.0, task)) == "default"         # 4 pt off: refused like an INT8 file would be
    assert str(recommend(_variants(None), 1.0, task)) == "default"         # a CPU without bf16: no such row, INT8 wins
    # FP32 on an f32 target is never a candidate: it is the reference
    v = _variants(None)
    v[0].on["openvino-cpu"] = TargetResult(target="openvino-cpu", metrics=Metrics(n=100, top1=0.9, agreement=1.0),
                                           bench=_bench(1.0))
    assert str(recommend(v, 1.0, task)) == "default"


def test_bf16_is_offered_only_where_the_cpu_has_it(monkeypatch):
    t = OpenVinoBf16()
    assert not t.available(frozenset({"avx2", "avx512f", "avx512_vnni"}))   # VNNI is not bf16
    assert t.available(frozenset({"avx512_bf16"})) == HAVE_OV and t.available(frozenset({"amx_bf16"})) == HAVE_OV
    monkeypatch.setattr("qdeploy.targets.openvino.cpu_flags", lambda: frozenset({"avx2"}))
    with pytest.raises(ConfigError, match=f"target '{BF16}' is not available here; .*avx512_bf16 or amx_bf16"):
        check_targets(("ort-cpu", BF16))


@pytest.mark.pipeline
@pytest.mark.shared
@pytest.mark.skipif(not OpenVinoBf16().available(),
                    reason="needs OpenVINO and a CPU with native bf16 (avx512_bf16 or amx_bf16 in lscpu's flags)")
def test_a_run_on_bf16_times_and_scores_the_fp32_file_in_bf16(tmp_path):
    out = tmp_path / "r"
    r = run_cli("run", "--checkpoint", R20_CKPT, "--data", CIFAR, "--out", out, "--variants", "default",
                "--targets", f"ort-cpu,{BF16}", "--eval-limit", 200, "--calib-size", 32, "--bench-runs", 20,
                "--bench-batches", "1", "--bench-seconds", 0.05)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())   # read as JSON: the check does not go through qdeploy
    fp32 = next(v for v in rep["variants"] if v["name"] == "fp32")
    on = fp32["on"][BF16]
    assert "bfloat16" in on["runtime"] or "bf16" in on["runtime"]    # compiled in bf16, and labelled so
    m = on["metrics"]
    assert m["n"] == 200 and m["agreement"] >= 0.95 and m["rel_l2"] > 1e-4   # really other math, nearly the same
    # the recommendation is the fastest of the INT8 rows and the bf16 row within 1 pt, beating ORT FP32
    fp32_top1, fp32_ms = fp32["metrics"]["top1"], fp32["bench"]["p50_ms"]
    rows = [(v["name"], v["metrics"], v["bench"]) for v in rep["variants"] if v["kind"] == "int8" and v["bench"]]
    rows += [(f"{v['name']}@{t}", o["metrics"], o["bench"]) for v in rep["variants"] for t, o in v["on"].items()
             if (v["kind"] == "int8" or t == BF16) and o["bench"]]
    ok = [(n, b["p50_ms"]) for n, mm, b in rows if 100 * (fp32_top1 - mm["top1"]) <= 1.0 and b["p50_ms"] < fp32_ms]
    if not ok:
        assert rep["recommended"] is None
    else:
        fastest = min(ms for _, ms in ok)
        assert rep["recommended"]["label"] in {n for n, ms in ok if ms <= fastest * 1.05}
    md = (out / "report.md").read_text()
    assert f"| fp32 | {BF16} |" in md
    if rep["recommended"] and rep["recommended"]["label"] == f"fp32@{BF16}":
        assert "bf16 float deployment (no INT8 file)" in md
