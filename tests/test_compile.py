"""Offline (compiled) forms: ORT's .ort, OpenVINO's compiled blob, PyTorch AOTInductor's .pt2, each verified
against its online form on real images before it gets its name, carrying the run's metadata, and timed beside
the online forms."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CIFAR, run_cli
from qdeploy.artifacts import read_info
from qdeploy.errors import ConfigError, ModelFileError
from qdeploy.formats.keys import sha256

pytestmark = [pytest.mark.pipeline, pytest.mark.shared]

R20 = Path(__file__).resolve().parents[1] / "src" / "qdeploy" / "bundled" / "resnet20_cifar10" / "train" / "best.pth"
needs_ov = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                              reason="OpenVINO is not installed (pip install 'qdeploy[openvino]')")


@pytest.fixture(scope="module")
def r20_run(tmp_path_factory):
    """A real run of the bundled ResNet-20 checkpoint: fp32, default INT8 and the nncf IR, 100 test images."""
    out = tmp_path_factory.mktemp("compile") / "r20"
    res = run_cli("run", "--targets", "ort-cpu", "--checkpoint", R20, "--data", CIFAR, "--out", out, "--variants", "default,nncf",
                  "--eval-limit", 100, "--calib-size", 32, "--bench-runs", 10, "--bench-batches", "1",
                  "--bench-seconds", 0.1)
    assert res.returncode == 0, res.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def compiled(r20_run):
    from qdeploy.bench import BenchConfig
    from qdeploy.compile import CompileConfig, compile_run

    cfg = CompileConfig(targets=("ort-cpu", "openvino-cpu", "aoti-cpu"), verify_images=48, loads=2,
                        bench=BenchConfig(runs=20, warmup=2, batch_sizes=(1, 8), max_seconds=0.1))
    return compile_run(r20_run, cfg, log=lambda m: None)


@needs_ov
def test_every_offline_form_is_written_verified_and_timed(r20_run, compiled):
    by = {(r.variant, r.target, r.mode): r for r in compiled.rows}
    expected = {("fp32", "ort-cpu"): "fp32.ort", ("default", "ort-cpu"): "int8_default.ort",
                ("fp32", "openvino-cpu"): "fp32.blob", ("default", "openvino-cpu"): "int8_default.blob",
                ("nncf", "openvino-cpu"): "int8_nncf.blob", ("fp32", "aoti-cpu"): "fp32.pt2"}
    for (variant, target), name in expected.items():
        off, on = by[(variant, target, "offline")], by[(variant, target, "online")]
        assert off.status == "ok", off.reason
        assert off.file == f"compiled/{target}/{name}" and (r20_run / off.file).is_file()
        assert off.compile_s > 0 and off.load_s > 0 and off.first_ms > 0 and on.load_s > 0
        assert off.bench.p50_ms > 0 and on.bench.p50_ms > 0 and set(off.bench.throughput) == {1, 8}
        assert off.vs_online["n"] == 48
        if variant == "fp32":   # FP32: the same numbers as the online form, within 1e-5 of the output scale
            assert off.vs_online["max_abs_diff"] <= 1e-5 * 20
        assert off.vs_online["agreement"] == 1.0      # INT8: identical top-1 on every verification image
        # quality against the ORT FP32 reference and the labels, on the same 48 images as the online form
        assert off.metrics["top1"] == on.metrics["top1"] and off.metrics["n"] == 48
    # AOTInductor takes the PyTorch FP32 model only: the INT8 rows say why instead of pretending
    assert by[("default", "aoti-cpu", "offline")].status == "skipped"
    assert "ONNX QDQ" in by[("default", "aoti-cpu", "offline")].reason
    assert by[("nncf", "ort-cpu", "offline")].status == "skipped"
    # the eager PyTorch model is the online form of the .pt2
    assert "eager" in by[("fp32", "aoti-cpu", "online")].runtime
    assert "AOTInductor" in by[("fp32", "aoti-cpu", "offline")].runtime
    # no scratch folder is left behind; the table and its JSON are written
    assert not [p for p in (r20_run / "compiled").rglob(".compile-*")]
    md = (r20_run / "compiled" / "compile.md").read_text()
    assert "| fp32 | aoti-cpu | offline |" in md and "x ORT FP32" in md
    assert len(json.loads((r20_run / "compiled" / "compile.json").read_text())["rows"]) == len(compiled.rows)


@needs_ov
def test_offline_artifacts_carry_the_runs_metadata(r20_run, compiled):
    fp32 = read_info(r20_run / "fp32.onnx")
    for rel, src in (("compiled/ort-cpu/int8_default.ort", "int8_default.onnx"),
                     ("compiled/openvino-cpu/int8_nncf.blob", "int8_nncf.xml"),
                     ("compiled/openvino-cpu/fp32.blob", "fp32.onnx"),
                     ("compiled/aoti-cpu/fp32.pt2", None)):
        info = read_info(r20_run / rel)
        assert info.classes == fp32.classes and info.preprocess == fp32.preprocess
        facts = json.loads(info.extra["compiled"])
        assert facts["target"] in rel and facts["cpu"] and facts["versions"]["onnxruntime"]
        if src:
            assert facts["from"] == src and facts["from_sha256"] == sha256(r20_run / src)
        else:   # the .pt2 names the checkpoint it was compiled from
            assert facts["from"] == str(R20) and facts["from_sha256"] == sha256(R20)


def test_pt2_runs_in_a_process_that_never_imports_the_model_class(r20_run, compiled):
    """Seed 003's offline form: a thin loader, no model code. The loader's outputs equal the eager model's."""
    from qdeploy.data import PreprocessSpec
    from qdeploy.data.sampling import DataConfig, open_calib_eval
    from qdeploy.models import load_model

    ev = open_calib_eval(DataConfig(root=str(CIFAR), calib_size=1, eval_limit=16))[1]
    x = ev.load(PreprocessSpec())
    np.save(r20_run / "x.npy", x)
    code = ("import sys, numpy as np\n"
            "from qdeploy.targets import open_session\n"
            f"s = open_session({str(r20_run / 'compiled/aoti-cpu/fp32.pt2')!r})\n"
            f"np.save({str(r20_run / 'y.npy')!r}, s.run(np.load({str(r20_run / 'x.npy')!r})))\n"
            "bad = [m for m in sys.modules if m.startswith(('qdeploy.models', 'qdeploy.quantize'))]\n"
            "assert not bad, bad\n"
            "print(s.runtime)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "AOTInductor" in r.stdout
    import torch

    with torch.inference_mode():
        want = load_model("resnet20-cifar", R20)(torch.from_numpy(x)).numpy()
    got = np.load(r20_run / "y.npy")
    assert got.shape == (16, 10) and np.abs(got - want).max() < 1e-4
    assert (got.argmax(1) == want.argmax(1)).all()


@needs_ov
def test_a_blob_that_does_not_match_its_record_is_refused(r20_run, compiled, tmp_path):
    import shutil

    from qdeploy.targets import open_session

    blob = tmp_path / "fp32.blob"
    shutil.copy(r20_run / "compiled/openvino-cpu/fp32.blob", blob)
    with pytest.raises(ModelFileError, match="no readable record fp32.blob.json"):
        open_session(blob)
    shutil.copy(r20_run / "compiled/openvino-cpu/fp32.blob.json", tmp_path / "fp32.blob.json")
    assert open_session(blob).run(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match the sha256"):
        open_session(blob)


def test_an_offline_form_that_disagrees_is_not_written(r20_run, compiled, monkeypatch, tmp_path):
    """A compiler that produces the wrong model (here: the INT8 graph under the FP32 name) fails verification."""
    import shutil

    from qdeploy.bench import BenchConfig
    from qdeploy.compile import CompileConfig, compile_run
    from qdeploy.compile.compilers import OrtCompiler

    run = tmp_path / "r"
    shutil.copytree(r20_run, run, ignore=shutil.ignore_patterns("compiled"))
    real = OrtCompiler.build

    def wrong(self, v, ctx, dst, facts):
        from dataclasses import replace

        return real(self, replace(v, file="int8_default.onnx") if v.name == "fp32" else v, ctx, dst, facts)

    monkeypatch.setattr(OrtCompiler, "build", wrong)
    res = compile_run(run, CompileConfig(targets=("ort-cpu",), variants=("fp32",), verify_images=32, loads=1,
                                         bench=BenchConfig(runs=10, warmup=1, batch_sizes=(1,), max_seconds=0.05)),
                      log=lambda m: None)
    row = res.row("fp32", "ort-cpu", "offline")
    assert row.status == "failed" and "disagrees with the online one" in row.reason
    assert not (run / "compiled/ort-cpu/fp32.ort").exists()
    assert not list((run / "compiled/ort-cpu").iterdir())


@needs_ov
def test_bench_runs_offline_files_on_their_own_runtime(r20_run, compiled):
    res = run_cli("bench", r20_run / "fp32.onnx", r20_run / "compiled/ort-cpu/fp32.ort",
                  r20_run / "compiled/openvino-cpu/int8_default.blob", r20_run / "compiled/aoti-cpu/fp32.pt2",
                  "--runs", 10, "--warmup", 2, "--batch-sizes", "1")
    assert res.returncode == 0, res.stderr[-2000:]
    lines = {line.split("|")[1].strip(): line for line in res.stdout.splitlines() if line.startswith("| /")}
    assert "onnxruntime" in lines[str(r20_run / "compiled/ort-cpu/fp32.ort")]
    assert "openvino" in lines[str(r20_run / "compiled/openvino-cpu/int8_default.blob")]
    assert "AOTInductor" in lines[str(r20_run / "compiled/aoti-cpu/fp32.pt2")]
    res = run_cli("bench", r20_run / "compiled/ort-cpu/fp32.ort", "--target", "openvino-cpu", "--runs", 10)
    assert res.returncode == 2 and "ort-cpu's own format" in res.stderr


def test_compile_input_errors_are_one_line(r20_run, tmp_path):
    from qdeploy.compile import CompileConfig

    with pytest.raises(ConfigError, match="unknown compile target tpu"):
        CompileConfig(targets=("tpu",))
    r = run_cli("compile", tmp_path, "--target", "ort-cpu")
    assert r.returncode == 2 and "holds no report.json" in r.stderr
    r = run_cli("compile", r20_run, "--target", "ort-cpu", "--variants", "fp32,pt-qat")
    assert r.returncode == 2 and "pt-qat" in r.stderr and "not verified in this run" in r.stderr
    r = run_cli("run", "--targets", "aoti-cpu", "--out", tmp_path / "x")
    assert r.returncode == 2 and "qdeploy compile RUN_DIR --target aoti-cpu" in r.stderr


@needs_ov
def test_serve_target_runs_the_run_on_openvino_and_compiled_files_on_their_runtime(r20_run, compiled):
    from PIL import Image

    from qdeploy.app.config import ServeConfig
    from qdeploy.app.predictor import Predictor

    img = Image.open(next((CIFAR / "test" / "cat").iterdir())).convert("RGB")
    ov = Predictor.load([r20_run], target="openvino-cpu")
    assert [v.name for v in ov.variants] == ["fp32", "default", "nncf"]      # the nncf IR joins on OpenVINO
    assert all("openvino" in v.session.runtime for v in ov.variants)
    ort = Predictor.load([r20_run])
    assert [v.name for v in ort.variants] == ["fp32", "default"]             # ONNX Runtime cannot read the IR
    assert all("onnxruntime" in v.session.runtime for v in ort.variants)
    a, b = ov.predict(img), ort.predict(img)
    assert a["variants"][0]["top1"] == b["variants"][0]["top1"]
    p_ov = a["variants"][0]["top"][0]["prob"]
    assert abs(p_ov - b["variants"][0]["top"][0]["prob"]) < 1e-4             # FP32 on both runtimes
    mixed = Predictor.load([r20_run / "fp32.onnx", r20_run / "compiled/openvino-cpu/int8_nncf.blob",
                            r20_run / "compiled/aoti-cpu/fp32.pt2", r20_run / "compiled/ort-cpu/int8_default.ort"])
    runtimes = [v.session.runtime for v in mixed.variants]
    assert "onnxruntime" in runtimes[0] and "openvino" in runtimes[1] and "AOTInductor" in runtimes[2]
    out = mixed.predict(img)["variants"]
    assert out[2]["top1"] == out[0]["top1"] and out[2]["rel_diff"] < 1e-5     # the .pt2 is the FP32 model
    with pytest.raises(ConfigError, match="unknown target"):
        ServeConfig(target="tpu-9000")
