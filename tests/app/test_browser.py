"""A real browser (Debian's chromium driven by Playwright) uploads a real image and reads both panels."""
import shutil
from pathlib import Path

import pytest
from PIL import Image
from test_server import start_server, stop

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.browser, pytest.mark.server, pytest.mark.shared,
              pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                 reason="Debian chromium is not installed (scripts/setup.sh installs it with apt)")]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def page_url():
    proc, url = start_server()
    yield url
    stop(proc)


@pytest.fixture()
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def upload(page, path):
    page.locator("#qd-input input[type=file]").set_input_files(str(path))


def test_upload_shows_fp32_and_int8_top1(page_url, browser, cifar, tmp_path):
    from qdeploy.app.predictor import Predictor
    from qdeploy.bundled import bundled_run_dir

    img_path = sorted((cifar / "test" / "horse").iterdir())[0]
    expect = Predictor.load([bundled_run_dir()]).predict(Image.open(img_path).convert("RGB"))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(page_url, wait_until="networkidle")
    upload(page, img_path)
    for i, v in enumerate(expect["variants"]):
        label = page.locator(f"#qd-label-{i}")
        label.get_by_text(v["top1"]).first.wait_for(timeout=30000)
        assert v["top1"] in label.inner_text()
    page.locator("#qd-perf table").wait_for(timeout=30000)
    perf = page.locator("#qd-perf").inner_text()
    assert "fp32" in perf and "default" in perf and "speedup" in perf.lower()
    assert "32x32" in page.locator("#qd-note").inner_text()
    shot = tmp_path / "fp32_vs_int8.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_bad_upload_shows_message_and_page_keeps_working(page_url, browser, cifar, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    page = browser.new_page()
    page.goto(page_url, wait_until="networkidle")
    upload(page, bad)
    page.get_by_text("not an image qdeploy can read").or_(page.get_by_text("corrupt")).first.wait_for(timeout=30000)
    good = sorted((cifar / "test" / "ship").iterdir())[0]
    upload(page, good)
    page.locator("#qd-perf table").wait_for(timeout=30000)


def test_phone_width_has_no_horizontal_scroll(page_url, browser, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    page.goto(page_url, wait_until="networkidle")
    page.locator("#qd-input").wait_for()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 392, f"page is {width}px wide on a 390px phone screen"
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
