"""The serving image without Docker (Docker cannot run here): deploy/Dockerfile is read and its own steps are
performed in a fresh venv standing in for the slim Python base image: COPY as written, every `pip`/`qdeploy`
RUN as written (with the venv's bin first on PATH), then CMD and HEALTHCHECK as written (only the port changed
to a free one). The venv gets `qdeploy[serve]` from PyPI and this checkout: torch must be absent from it; it
verifies and serves the bundle alone; Triton's client, a real browser and the torch-needing commands are checked
against it. The one step not performed is `useradd` (it needs root); USER is checked to be non-root instead.

The venv is cached between sessions (serve_venv): keyed by the Dockerfile and pyproject.toml, so a changed
dependency list or install step builds it fresh, and a week old at most. On a cache hit every RUN still runs as
written: pip finds the serve extra's requirements met and installs this checkout's qdeploy over the old one.
QDEPLOY_FRESH_SERVE_VENV=1 forces a fresh build."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_browser import ARGS, CHROMIUM, upload
from test_server import free_port, stop

from conftest import CIFAR, CKPT

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
pytestmark = [pytest.mark.venv, pytest.mark.server,
              pytest.mark.skipif(shutil.which("pip") is None and not (Path(sys.prefix) / "bin" / "pip").exists(),
                                 reason="pip is needed to build the serving venv")]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", "\n".join(l for l in path.read_text().splitlines() if not l.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", text, re.M)]


def _copy(src: Path, dst: Path) -> None:
    """Docker's COPY: a folder's contents go into dst; a file goes into dst/ (trailing slash) or becomes dst."""
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


VENV_DAYS = 7


def serve_venv() -> tuple[Path, bool]:
    """(the serving venv's path, whether a complete one is already there): one per (Dockerfile, pyproject.toml)."""
    key = hashlib.sha256(DOCKERFILE.read_bytes() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qdeploy-tests"
    venv, done = cache / f"serve-venv-{key}", cache / f"serve-venv-{key}.complete"
    fresh = os.environ.get("QDEPLOY_FRESH_SERVE_VENV") == "1"
    if done.is_file() and not fresh and time.time() - done.stat().st_mtime < VENV_DAYS * 86400:
        return venv, True
    done.unlink(missing_ok=True)
    shutil.rmtree(venv, ignore_errors=True)
    for old in cache.glob("serve-venv-*"):       # earlier keys: one cached venv at a time
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    return venv, False


def build(tmp: Path, build_args: dict) -> dict:
    """Perform the Dockerfile's steps; returns the image's facts (venv, workdir, env, user, cmd, health)."""
    (venv, cached), work = serve_venv(), tmp / "srv"
    img = {"venv": venv, "work": work, "env": {}, "args": dict(build_args), "run": [], "skipped": []}
    for op, arg in instructions(DOCKERFILE):
        sub = lambda s: re.sub(r"\$\{?(\w+)\}?", lambda m: img["args"].get(m.group(1), img["env"].get(m.group(1), m.group(0))), s)  # noqa: E731
        if op == "FROM":
            img["base"], img["cached"] = arg, cached
            if not cached:
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        elif op == "ENV":
            img["env"].update(dict(kv.split("=", 1) for kv in shlex.split(arg)))
        elif op == "ARG":
            k, _, v = arg.partition("=")
            img["args"].setdefault(k, v)
        elif op == "WORKDIR":
            assert "work_set" not in img, "one WORKDIR expected"
            img["work_set"] = arg
            work.mkdir(parents=True)
        elif op == "COPY":
            *srcs, dst = shlex.split(sub(arg))
            for s in srcs:
                target = work / dst / Path(s).name if dst.endswith("/") and (ROOT / s).is_file() else work / dst
                _copy(ROOT / s, target)  # ROOT / an absolute build arg is that path
        elif op == "RUN":
            cmd = sub(arg)
            if cmd.split()[0] in ("useradd", "groupadd", "adduser"):
                img["skipped"].append(cmd)   # needs root; USER is checked below
                continue
            env = {**os.environ, **img["env"], "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
            env.pop("PIP_NO_CACHE_DIR", None)     # the only change: reuse this machine's download cache
            env.pop("VIRTUAL_ENV", None)
            r = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=900)
            assert r.returncode == 0, f"RUN {cmd} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
            img["run"].append(cmd)
        elif op == "USER":
            img["user"] = arg
        elif op == "EXPOSE":
            img["port"] = arg.split("/")[0]
        elif op == "HEALTHCHECK":
            img["health"] = json.loads(arg[arg.index("CMD") + 3:].strip())
        elif op == "CMD":
            img["cmd"] = json.loads(arg)
        else:
            raise AssertionError(f"the test does not know Dockerfile instruction {op}; teach it before using it")
    venv.with_name(venv.name + ".complete").touch()    # every step passed: later sessions may reuse this venv
    return img


@pytest.fixture(scope="module")
def bundle(r18_bundle):
    return r18_bundle   # Triton and OVMS layouts: served once per variant, by both layouts' model names


@pytest.fixture(scope="module")
def image(bundle, tmp_path_factory):
    return build(tmp_path_factory.mktemp("image"), {"BUNDLE": str(bundle)})


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def test_dockerfile_is_slim_non_root_and_checks_health(image):
    assert "slim" in image["base"]
    assert image.get("user") not in (None, "root", "0") and image["skipped"], "the image must run as a created user"
    assert any("/v2/health/ready" in part for part in image["health"])
    assert image["port"] in image["cmd"] and any("pip install" in c and "[serve]" in c for c in image["run"])
    # the source was removed after the install: the work dir holds the bundle alone
    assert sorted(p.name for p in image["work"].iterdir()) == ["models"]


def test_serving_venv_has_no_torch_and_is_several_times_smaller(image):
    py = str(image["venv"] / "bin" / "python")
    r = subprocess.run([py, "-c", "import torch"], capture_output=True, text=True)
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr
    r = subprocess.run([py, "-c", "import qdeploy, onnxruntime, gradio, fastapi, tritonclient.http, prometheus_client"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-1500:]
    # the installed package is this checkout's, file for file (also when the venv came from the cache)
    where = subprocess.run([py, "-c", "import qdeploy, os; print(os.path.dirname(qdeploy.__file__))"],
                           capture_output=True, text=True, check=True).stdout.strip()
    installed, src = Path(where), ROOT / "src" / "qdeploy"
    assert image["venv"] in installed.parents
    ours = sorted(p.relative_to(src) for p in src.rglob("*.py"))
    assert ours == sorted(p.relative_to(installed) for p in installed.rglob("*.py"))
    assert all((installed / f).read_bytes() == (src / f).read_bytes() for f in ours)
    serve_mb, full_mb = _du(image["venv"]) / 2**20, _du(Path(sys.prefix)) / 2**20
    print(f"\ninstall size on disk: qdeploy[serve] {serve_mb:.0f} MB, full install (this venv) {full_mb:.0f} MB, "
          f"{full_mb / serve_mb:.1f}x")
    assert serve_mb * 2.5 < full_mb, (serve_mb, full_mb)


@pytest.mark.parametrize("command", ["run", "export", "report"])
def test_commands_that_need_torch_say_which_extra(image, command, tmp_path):
    from qdeploy.bundled import bundled_run_dir

    run = tmp_path / "run"
    shutil.copytree(bundled_run_dir(), run)
    args = {"run": ["run", "--checkpoint", str(CKPT), "--data", str(CIFAR), "--out", "out"],
            "export": ["export", "--checkpoint", str(CKPT), "--out", "x.onnx"], "report": ["report", str(run)]}
    r = subprocess.run([str(image["venv"] / "bin" / "qdeploy"), *args[command]], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-1500:]
    assert 'pip install "qdeploy[torch]"' in r.stderr, r.stderr


def _start(image):
    port = str(free_port())
    cmd = [str(image["venv"] / "bin" / c) if i == 0 else (port if c == image["port"] else c)
           for i, c in enumerate(image["cmd"])]
    env = {**os.environ, **image["env"], "PATH": f"{image['venv'] / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(cmd, cwd=image["work"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    health = [str(image["venv"] / "bin" / image["health"][0]), *[a.replace(f":{image['port']}/", f":{port}/")
                                                                  for a in image["health"][1:]]]
    for _ in range(120):
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read()[-3000:]}")
        if subprocess.run(health, capture_output=True, env=env).returncode == 0:   # the HEALTHCHECK, as written
            return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.5)
    stop(proc)
    raise AssertionError("the HEALTHCHECK did not pass within 60 s")


@pytest.fixture(scope="module")
def served(image):
    proc, url = _start(image)
    yield url
    stop(proc)


def test_health_fails_before_the_server_starts(image):
    port = str(free_port())
    health = [str(image["venv"] / "bin" / image["health"][0]),
              *[a.replace(f":{image['port']}/", f":{port}/") for a in image["health"][1:]]]
    assert subprocess.run(health, capture_output=True).returncode != 0


def test_tritonclient_gets_the_bundle_outputs_by_its_model_names(served, bundle):
    http = pytest.importorskip("tritonclient.http")
    from qdeploy.targets import open_session

    man = json.loads((bundle / "manifest.json").read_text())
    x = np.load(bundle / man["golden"]["inputs"])
    c = http.InferenceServerClient(served.removeprefix("http://"))
    assert c.is_server_ready()
    for m in man["models"]:
        assert c.is_model_ready(m["name"])
        i = http.InferInput("input", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        got = c.infer(m["name"], [i]).as_numpy("logits")
        want = open_session(bundle / m["model_file"]).run(x)   # in-process ORT, this (full) install
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5
    assert httpx.get(served + "/metrics").text.count("qdeploy_inference_seconds_count") >= 1


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (scripts/setup.sh)")
def test_browser_upload_on_the_torch_free_server(served, bundle, cifar):
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from qdeploy.app.predictor import Predictor

    img_path = sorted((cifar / "test" / "ship").iterdir())[0]
    expect = Predictor.load([bundle]).predict(Image.open(img_path).convert("RGB"), timed=False)
    assert [v["name"] for v in expect["variants"]] == ["fp32", "default"]
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = b.new_page(viewport={"width": 1280, "height": 900})
            page.goto(served, wait_until="networkidle")
            upload(page, img_path)
            for i, v in enumerate(expect["variants"]):
                page.locator(f"#qd-label-{i}").get_by_text(v["top1"]).first.wait_for(timeout=30000)
        finally:
            b.close()


def test_a_tampered_bundle_is_not_served(image, bundle, tmp_path):
    bad = tmp_path / "models"
    shutil.copytree(bundle, bad)
    onnx = next(bad.rglob("model.onnx"))
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    r = subprocess.run([str(image["venv"] / "bin" / "qdeploy"), "serve", str(bad), "--port", str(free_port())],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "differs from the manifest" in r.stderr, r.stderr[-1500:]
