"""The API over real HTTP against `qdeploy serve` started on a free loopback port, and the page handlers."""
import concurrent.futures as cf
import contextlib
import io
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from PIL import Image

from qdeploy.bundled import bundled_run_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(*extra, target=None):
    """`qdeploy serve TARGET` (default: the bundled model) on a free loopback port; returns (process, url)."""
    port = free_port()
    exe = Path(sys.executable).with_name("qdeploy")
    proc = subprocess.Popen([str(exe), "serve", str(target or bundled_run_dir()), "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stdout.read()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.25)
    proc.kill()
    raise RuntimeError("server did not start in 60 s")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextlib.contextmanager
def serving(*extra, target=None):
    """`qdeploy serve` for the block (see start_server); yields its URL and always stops it."""
    proc, url = start_server(*extra, target=target)
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def server():
    with serving("--max-upload-mb", "1", "--max-megapixels", "4") as url:
        yield url


@pytest.fixture(scope="module")
def cat_jpeg(cifar) -> bytes:
    return sorted((cifar / "test" / "cat").iterdir())[0].read_bytes()


@pytest.fixture(scope="module")
def predictor():
    from qdeploy.app.predictor import Predictor

    return Predictor.load([bundled_run_dir()])


@pytest.mark.server
def test_binds_loopback_only(server):
    assert server.startswith("http://127.0.0.1:")


@pytest.mark.server
def test_predict_multipart(server, cat_jpeg, predictor):
    r = httpx.post(server + "/api/predict", files={"file": ("cat.jpg", cat_jpeg, "image/jpeg")}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    names = [v["name"] for v in body["variants"]]
    assert names == [v.name for v in predictor.variants] and names[0] == "fp32" and "default" in names
    expect = predictor.predict(Image.open(io.BytesIO(cat_jpeg)).convert("RGB"))
    for got, want in zip(body["variants"], expect["variants"]):
        assert got["top1"] == want["top1"] and len(got["top"]) == 3
        assert abs(sum(t["prob"] for t in got["top"]) - sum(t["prob"] for t in want["top"])) < 1e-4
        assert got["latency_ms"] > 0
    assert "agrees" in body["variants"][1] and body["input"]["model_input"] == 32


@pytest.mark.server
def test_predict_raw_body_and_top_k(server, cat_jpeg):
    r = httpx.post(server + "/api/predict?top_k=5", content=cat_jpeg, headers={"content-type": "image/jpeg"}, timeout=30)
    assert r.status_code == 200 and len(r.json()["variants"][0]["top"]) == 5
    assert httpx.post(server + "/api/predict?top_k=0", content=cat_jpeg, timeout=30).status_code == 422


def png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("payload,status,fragment", [
    (b"", 400, "empty"),
    (b"just some text", 400, "not an image"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64, 400, "header is corrupt"),
    ("truncated", 400, "corrupt or truncated"),
    (b"\x00" * (1024 * 1024 + 10), 413, "limit"),
    ("bomb", 413, "megapixels"),
])
@pytest.mark.server
def test_bad_uploads(server, payload, status, fragment):
    if payload == "bomb":
        payload = png(Image.new("L", (3000, 3000)))  # 9 MP in a few KB; the server allows 4 MP
    elif payload == "truncated":
        full = png(Image.effect_noise((300, 300), 40))
        payload = full[: len(full) // 2]
    r = httpx.post(server + "/api/predict", files={"file": ("x.bin", payload, "application/octet-stream")}, timeout=30)
    assert r.status_code == status, r.text
    msg = r.json().get("error") or r.json().get("detail")
    assert fragment in msg and "Traceback" not in r.text


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16"])
@pytest.mark.server
def test_odd_modes_over_http(server, cat_jpeg, mode):
    img = Image.open(io.BytesIO(cat_jpeg))
    img = img.convert("L").convert("I;16") if mode == "I;16" else img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, "JPEG" if mode == "CMYK" else "PNG")
    r = httpx.post(server + "/api/predict", files={"file": ("x", buf.getvalue())}, timeout=30)
    assert r.status_code == 200, r.text


@pytest.mark.server
def test_server_survives_and_handles_concurrency(server, cat_jpeg):
    def one(_):
        return httpx.post(server + "/api/predict", files={"file": ("c.jpg", cat_jpeg)}, timeout=60).status_code

    with cf.ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(one, range(48)))
    assert codes.count(200) == 48
    assert httpx.get(server + "/healthz").json()["ok"] is True
    # the requests went through the dynamic batcher (default --max-batch 16): every one counted, rows = requests
    m = {l.split()[0]: float(l.split()[-1]) for l in httpx.get(server + "/metrics").text.splitlines()
         if l.startswith("qdeploy_batch")}
    for v in ("fp32", "default"):
        assert m[f'qdeploy_batched_requests{{variant="{v}"}}'] >= 48
        assert m[f'qdeploy_batch_rows{{variant="{v}"}}'] == m[f'qdeploy_batched_requests{{variant="{v}"}}']
        assert 1 <= m[f'qdeploy_batch_runs{{variant="{v}"}}'] <= m[f'qdeploy_batch_rows{{variant="{v}"}}']


@pytest.mark.server
def test_predict_one_variant_for_serving(server, cat_jpeg, predictor):
    r = httpx.post(server + "/api/predict?variant=default", files={"file": ("c.jpg", cat_jpeg)}, timeout=30)
    assert r.status_code == 200 and [v["name"] for v in r.json()["variants"]] == ["default"]
    want = predictor.predict(Image.open(io.BytesIO(cat_jpeg)).convert("RGB"), timed=False)["variants"][1]["top1"]
    assert r.json()["variants"][0]["top1"] == want
    r = httpx.post(server + "/api/predict?variant=nope", files={"file": ("c.jpg", cat_jpeg)}, timeout=30)
    assert r.status_code == 422 and "variant must be one of fp32, default" in r.text


@pytest.mark.server
def test_models_endpoint_has_facts(server):
    m = httpx.get(server + "/api/models").json()
    assert m["classes"][3] == "cat" and m["variants"][0]["name"] == "fp32"
    assert m["variants"][1]["compression"] > 3 and 0 < m["variants"][1]["top1"] <= 100


@pytest.mark.server
def test_auth():
    proc, url = start_server("--auth", "ann:s3cret")
    try:
        assert httpx.get(url + "/api/models").status_code == 401
        assert httpx.get(url + "/api/models", auth=("ann", "wrong")).status_code == 401
        assert httpx.get(url + "/api/models", auth=("ann", "s3cret")).status_code == 200
    finally:
        stop(proc)


def test_cli_refuses_bad_serve_options(tmp_path):
    from conftest import run_cli

    r = run_cli("serve", tmp_path / "nothing-here")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    r = run_cli("serve", "--auth", "nocolon")
    assert r.returncode == 2 and "user:password" in r.stderr
    r = run_cli("serve", "--max-batch", "0")
    assert r.returncode == 2 and "--max-batch must be >= 1" in r.stderr


# --- the page's own handlers, called directly -------------------------------------------------

def test_page_handler_bad_inputs(predictor, tmp_path):
    import gradio as gr

    from qdeploy.app.images import UploadLimits
    from qdeploy.app.ui import classify_handler

    fn = classify_handler(predictor, UploadLimits(max_bytes=1024 * 1024, max_pixels=4_000_000))
    bad = {"text.jpg": b"not an image", "empty.png": b"", "bomb.png": png(Image.new("L", (3000, 3000)))}
    for name, data in bad.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(gr.Error) as e:
            fn(str(p))
        assert e.value.message and "Traceback" not in e.value.message
    with pytest.raises(gr.Error, match="no image"):
        fn(None)


def test_page_handler_good_image(predictor, cifar):
    from qdeploy.app.images import UploadLimits
    from qdeploy.app.ui import classify_handler

    out = classify_handler(predictor, UploadLimits())(str(sorted((cifar / "test" / "ship").iterdir())[0]))
    labels, perf, seen, note = out[:len(predictor.variants)], out[-3], out[-2], out[-1]
    assert all(len(lab) == 3 for lab in labels) and seen.shape == (32, 32, 3)
    assert "| fp32 |" in perf and "32x32" in note


def test_batch_handler_zip_with_labels(predictor, cifar, tmp_path):
    from qdeploy.app.images import UploadLimits
    from qdeploy.app.ui import batch_handler

    z = tmp_path / "imgs.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for c in ("cat", "ship", "truck"):
            for f in sorted((cifar / "test" / c).iterdir())[:4]:
                zf.write(f, f"{c}/{f.name}")
        zf.writestr("notes.txt", "not an image")
    table, summary = batch_handler(predictor, UploadLimits())([str(z)])
    assert len(table) == 13 and "12 images classified, 1 skipped" in summary
    assert "Accuracy on the 12 files" in summary
    assert sum(row[-1].startswith("skipped") for row in table) == 1


def test_serving_runs_each_model_once_unless_timing_is_asked(cat_jpeg):
    """The API serves (one run per model per request); the page and ?timing=1 time (warm-up + median of 5)."""
    from qdeploy.app.predictor import Predictor

    pred = Predictor.load([bundled_run_dir()])
    calls = {v.name: 0 for v in pred.variants}
    for v in pred.variants:
        real = v.session.run

        def counted(x, fixed=None, _real=real, _name=v.name):
            calls[_name] += 1
            return _real(x) if fixed is None else _real(x, fixed=fixed)

        v.session.run = counted
    img = Image.open(io.BytesIO(cat_jpeg)).convert("RGB")
    served = pred.predict(img, timed=False)
    assert set(calls.values()) == {1} and served["timing"] == "the request's one run"
    timed = pred.predict(img)
    assert set(calls.values()) == {1 + 1 + pred.latency_runs} and timed["timing"].startswith("median of 5")
    assert [r["top1"] for r in served["variants"]] == [r["top1"] for r in timed["variants"]]


@pytest.mark.server
def test_api_times_only_when_asked(server, cat_jpeg):
    r = httpx.post(server + "/api/predict", files={"file": ("cat.jpg", cat_jpeg, "image/jpeg")}, timeout=30)
    assert r.json()["timing"] == "the request's one run"
    r = httpx.post(server + "/api/predict?timing=1", files={"file": ("cat.jpg", cat_jpeg, "image/jpeg")}, timeout=30)
    assert r.json()["timing"].startswith("median of")


def test_facts_tab_shows_the_runs_measured_table(predictor):
    """The page's "Model facts" tab is the run's own table: every measured variant's top-1, size and latency as
    report.json holds them (read here from the JSON itself, not through qdeploy's types)."""
    import json

    from qdeploy.app.ui import facts_markdown

    md = facts_markdown(predictor)
    raw = json.loads((bundled_run_dir() / "report.json").read_text())
    measured = [v for v in raw["variants"] if v.get("metrics") and v.get("bench")]
    assert len(measured) >= 2
    for v in measured:
        row = next(line for line in md.splitlines() if line.startswith(f"| {v['name']} |"))
        assert f"{100 * v['metrics']['top1']:.2f}" in row and f"{v['bench']['p50_ms']:.2f}" in row
        assert f"{v['bench']['size_bytes'] / 1e6:.2f}" in row
