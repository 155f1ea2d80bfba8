"""Image-to-image in a real browser: upload a Kodak photo, pick a style, FP32 and INT8 outputs appear with
their PSNR/SSIM; the outputs are the ones the API gives for that style; phone width has no side scroll."""
import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image
from test_browser import CHROMIUM, browser, upload  # noqa: F401  (browser: the fixture)
from test_server import start_server, stop

from conftest import SHARED, run_cli

KODAK = SHARED / "datasets" / "kodak24"
pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.pipeline, pytest.mark.shared,
              pytest.mark.skipif(not CHROMIUM or not KODAK.is_dir(), reason="chromium or Kodak24 missing")]


@pytest.fixture(scope="module")
def style_url(tmp_path_factory):
    out = tmp_path_factory.mktemp("style-app") / "run"
    res = run_cli("run", "--targets", "ort-cpu", "--onnx", "multistyle26.onnx", "--task", "image-to-image", "--data", KODAK,
                  "--fixed-input", "style_weights=onehot:19", "--size", 96, "--calib-size", 4, "--eval-limit", 3,
                  "--variants", "conv-inputs", "--bench-runs", 10, "--bench-seconds", 0.1, "--out", out)
    assert res.returncode == 0, res.stderr[-2000:]
    proc, url = start_server(target=out)
    yield url
    stop(proc)


def _api_images(url, photo, style):
    r = httpx.post(f"{url}/api/predict?style={style}", files={"file": (photo.name, photo.read_bytes(), "image/png")},
                   timeout=60)
    assert r.status_code == 200, r.text
    j = r.json()
    return j, [np.asarray(Image.open(io.BytesIO(base64.b64decode(v["image_png_base64"])))) for v in j["variants"]]


def test_upload_pick_style_two_outputs_with_metrics(style_url, browser, tmp_path):  # noqa: F811
    photo = KODAK / "kodim23.png"
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(style_url, wait_until="networkidle")
    upload(page, photo)
    page.locator("#qd-pick-0 input").click()
    page.get_by_role("option", name="3", exact=True).click()
    page.locator("#qd-run").click()
    page.locator("#qd-perf table").wait_for(timeout=60000)
    perf = page.locator("#qd-perf").inner_text()
    assert "fp32" in perf and "conv-inputs" in perf and "PSNR" in perf
    assert "style_weights = 3" in page.locator("#qd-note").inner_text()
    shown = []
    for i in range(2):
        img = page.locator(f"#qd-out-{i} img").first
        img.wait_for(timeout=30000)
        src = img.get_attribute("src")
        data = httpx.get(src if src.startswith("http") else style_url + src, timeout=30).content
        shown.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    j, want = _api_images(style_url, photo, 3)
    _, other = _api_images(style_url, photo, 19)
    for got, exp in zip(shown, want):
        assert got.shape == exp.shape == (96, 96, 3)
        assert np.abs(got.astype(int) - exp).max() <= 1          # the page shows style 3's outputs ...
    assert np.abs(want[0].astype(int) - other[0]).mean() > 5      # ... which differ from the run's style 19
    psnr = j["variants"][1]["psnr"]
    assert f"{psnr:.2f}" in perf
    page.screenshot(path=str(tmp_path / "style.png"), full_page=True)


def test_style_page_phone_width(style_url, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page.goto(style_url, wait_until="networkidle")
    page.locator("#qd-input").wait_for()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 392, f"page is {width}px wide on a 390px phone screen"
