"""A task qdeploy does not ship, registered here and nowhere else: denoising, an image-to-image task with its own
name, quality gate, table columns, rule and log line. It goes through the whole path (export-free ONNX source,
quantize + verify, evaluate, report, serve over real HTTP) with no edit outside tasks/: the proof that a task is
one module in tasks/ plus its tests (issue 34)."""
from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED
from qdeploy.artifacts import read_info
from qdeploy.results import RunResult
from qdeploy.tasks import TASKS
from qdeploy.tasks.base import Column, Plot, fmt
from qdeploy.tasks.image import ImageToImageTask

KODAK = SHARED / "datasets" / "kodak24"
pytestmark = [pytest.mark.shared, pytest.mark.pipeline, pytest.mark.server,
              pytest.mark.skipif(not KODAK.is_dir(), reason="../shared/datasets/kodak24 missing")]


class DenoiseTask(ImageToImageTask):
    """Denoised photos, judged against the FP32 model's output like any image model, but with its own floor
    (a denoiser that adds visible error defeats itself) and its own, shorter table."""

    name = "denoise"
    collapse_psnr = 25.0
    columns = (Column("denoised PSNR dB", lambda m, f: "reference" if m is f else fmt(m.psnr_mean, ".2f")),
               Column("worst photo dB", lambda m, f: "–" if m is f else fmt(m.psnr_min, ".2f")))
    refused_column = 0

    @staticmethod
    def _worst_photos(plt, rows):
        fig, ax = plt.subplots()
        ax.bar([r.name for r in rows], [r.metrics.psnr_min or 0 for r in rows])
        return fig

    plots = (Plot("worst_photo", _worst_photos),)   # its own figure, instead of the image task's

    def facts(self, m) -> dict:
        return {"denoised_db": m.psnr_mean}

    def rule(self, gate: float, labelled: bool) -> str:
        return f"denoises at a mean of at least {gate} dB PSNR against the FP32 denoiser's output"

    def describe(self, m) -> str:
        return "the FP32 denoiser" if m.psnr_mean is None else f"denoised at {m.psnr_mean:.2f} dB of FP32's output"


class Denoiser(torch.nn.Module):
    """x - noise estimate: a small residual conv net with fixed random weights (its outputs stay photo-like)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                        torch.nn.Conv2d(16, 3, 3, padding=1))
        with torch.no_grad():
            self.body[2].weight.mul_(0.1)

    def forward(self, x):
        return torch.clamp(x - self.body(x), 0, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def denoise_run(tmp_path, monkeypatch):
    monkeypatch.setitem(TASKS, DenoiseTask.name, DenoiseTask)
    onnx_path = tmp_path / "denoiser.onnx"
    torch.onnx.export(Denoiser().eval(), (torch.rand(1, 3, 48, 48),), str(onnx_path), input_names=["image"],
                      output_names=["denoised"], opset_version=17, dynamo=False,
                      dynamic_axes={"image": {0: "b", 2: "h", 3: "w"}, "denoised": {0: "b", 2: "h", 3: "w"}})
    from typer.testing import CliRunner

    from qdeploy.cli import app

    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["run", "--targets", "ort-cpu", "--onnx", str(onnx_path), "--task", "denoise", "--data", str(KODAK),
                                 "--size", "48", "--calib-size", "4", "--eval-limit", "4", "--variants",
                                 "default,conv-only", "--min-psnr", "30", "--bench-runs", "10", "--bench-batches", "1",
                                 "--bench-seconds", "0.05", "--out", str(out)])
    assert r.exit_code == 0, (r.exception, r.output[-3000:])
    return out, r.output


def test_a_task_registered_in_tests_runs_quantize_verify_report_and_serve(denoise_run):
    out, log = denoise_run
    res = RunResult.load(out / "report.json")
    assert res.task == "denoise" and res.classes == [] and res.min_psnr == 30
    assert read_info(out / "fp32.onnx").task == "denoise"
    made = [v for v in res.variants if v.kind == "int8" and v.ok]
    assert made, [v.error for v in res.variants]
    for v in made:   # verified against FP32 before it got its name, by the task's check, then evaluated
        assert read_info(out / v.file).task == "denoise" and v.check.psnr >= DenoiseTask.collapse_psnr
        assert v.check.psnr_floor == DenoiseTask.collapse_psnr and v.metrics.n == 4 and v.metrics.psnr_mean > 0
    assert "evaluate default: denoised at" in log
    md = (out / "report.md").read_text()
    head = next(line for line in md.splitlines() if line.startswith("| variant | size MB"))
    assert "| denoised PSNR dB | worst photo dB |" in head and "SSIM" not in head    # the task's own columns
    assert "at least 30.0 dB PSNR against the FP32 denoiser's output" in md          # and its rule
    plots = {p.name for p in (out / "plots").glob("*.png")}                          # and its own figures
    assert "worst_photo.png" in plots and "plots/worst_photo.png" in md and "psnr_hist.png" not in plots
    if res.recommended:
        rec = res.get(res.recommended.variant)
        assert rec.metrics.psnr_mean >= 30 and rec.bench.p50_ms < res.fp32.bench.p50_ms

    # serve the run over real HTTP: the page's API gives each variant's denoised photo and its PSNR vs FP32
    import httpx
    import uvicorn

    from qdeploy.app.config import ServeConfig
    from qdeploy.app.predictor import Predictor
    from qdeploy.app.server import create_app

    port = _free_port()
    cfg = ServeConfig(port=port, max_batch=1)
    server = uvicorn.Server(uvicorn.Config(create_app(Predictor.load([out]), cfg), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        photo = io.BytesIO()
        Image.open(sorted(KODAK.glob("*.png"))[0]).convert("RGB").resize((96, 64)).save(photo, "PNG")
        reply = httpx.post(f"http://127.0.0.1:{port}/api/predict", files={"file": ("p.png", photo.getvalue())},
                           timeout=60)
        assert reply.status_code == 200, reply.text[:500]
        body = reply.json()
        names = [r["name"] for r in body["variants"]]
        assert names[0] == "fp32" and {v.name for v in made} <= set(names)
        for r in body["variants"]:
            img = np.asarray(Image.open(io.BytesIO(base64.b64decode(r["image_png_base64"]))))
            assert img.ndim == 3 and img.shape[2] == 3 and img.std() > 0   # a real photo came back
        listed = httpx.get(f"http://127.0.0.1:{port}/api/models", timeout=10).json()
        assert json.dumps(listed)   # the model list serialises, with the task's facts from the report
        facts = {m["name"]: m for m in listed["variants"]}
        for v in made:
            assert facts[v.name]["denoised_db"] == pytest.approx(v.metrics.psnr_mean) and "ssim" not in facts[v.name]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
