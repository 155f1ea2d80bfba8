"""The serving images built for real, where a Docker daemon is reachable: deploy/Dockerfile (page, API, v2) and
deploy/Dockerfile.api (the lean one: qdeploy[serve-api], no gradio, pandas or torch), each around the shared
ResNet18 bundle, run, health-checked and asked for every model's logits by Triton's HTTP client; their sizes are
printed. qdeploy's CI machines have a Docker client and no daemon: there the build tests skip with the reason, and
tests/app/test_serving_image.py performs deploy/Dockerfile's steps in a venv instead. The Dockerfiles' own promises
(slim base, the extra each installs, non-root user, health check, no page in the lean one) are checked everywhere."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
import tomllib
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from test_server import free_port
from test_serving_image import instructions

ROOT = Path(__file__).resolve().parents[2]
FILES = {"Dockerfile": "serve", "Dockerfile.api": "serve-api"}


def _docker_unreachable() -> str | None:
    """Why no image can be built here (None: a daemon answers)."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                           timeout=30)
    except subprocess.TimeoutExpired:
        return "no Docker daemon reachable (docker info timed out)"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["docker info failed"])[-1]
        return f"no Docker daemon reachable ({last[:200]})"
    return None


NO_DOCKER = _docker_unreachable()


@pytest.mark.parametrize("name", list(FILES))
def test_dockerfile_promises(name):
    steps = instructions(ROOT / "deploy" / name)
    ops = dict(steps)   # the last of each instruction
    assert ops["FROM"] == "python:3.11-slim"
    installs = [a for op, a in steps if op == "RUN" and "pip install" in a]
    assert len(installs) == 1 and f'[{FILES[name]}]"' in installs[0], installs
    assert ops["USER"] not in ("root", "0") and "/v2/health/ready" in ops["HEALTHCHECK"]
    cmd = json.loads(ops["CMD"])
    assert cmd[:3] == ["qdeploy", "serve", "models"] and ("--no-page" in cmd) == (name == "Dockerfile.api")
    assert not any("--auth" == a or a.startswith("--auth=") for a in cmd), "credentials never on argv"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    if name == "Dockerfile.api":
        lean = " ".join(extras["serve-api"]).lower()
        assert not any(heavy in lean for heavy in ("gradio", "pandas", "torch")), lean


def _context(tmp: Path, bundle: Path) -> Path:
    ctx = tmp / "ctx"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for part in ("src", "deploy"):
        shutil.copytree(ROOT / part, ctx / part, ignore=ignore)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / f, ctx / f)
    shutil.copytree(bundle, ctx / "bundle")
    return ctx


def _docker(*args, timeout=120, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    assert not check or r.returncode == 0, f"docker {' '.join(args[:3])} failed:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.mark.server
@pytest.mark.skipif(NO_DOCKER is not None, reason=f"the image is not built here: {NO_DOCKER}")
@pytest.mark.parametrize("name", list(FILES))
def test_image_builds_and_serves_the_bundle(name, r18_bundle, tmp_path):
    http = pytest.importorskip("tritonclient.http")
    from qdeploy.targets import open_session

    tag = f"qdeploy-test-{name.lower().replace('.', '-')}-{uuid.uuid4().hex[:8]}"
    ctx = _context(tmp_path, r18_bundle)
    container = None
    try:
        _docker("build", "-f", str(ctx / "deploy" / name), "--build-arg", "BUNDLE=bundle", "-t", tag, str(ctx),
                timeout=1800)
        size = int(_docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
        print(f"\n{name}: image {tag} {size / 2**20:.0f} MiB")
        present = _docker("run", "--rm", "--entrypoint", "python", tag, "-c",
                          "import importlib.util as u; print([m for m in ('gradio', 'pandas', 'torch') "
                          "if u.find_spec(m)])").stdout.strip()
        assert present == ("[]" if name == "Dockerfile.api" else "['gradio', 'pandas']"), present
        port = free_port()
        container = _docker("run", "-d", "-p", f"127.0.0.1:{port}:8000", tag).stdout.strip()
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            logs = _docker("logs", container, check=False)
            raise AssertionError(f"not ready in 120 s:\n{logs.stdout[-2000:]}\n{logs.stderr[-2000:]}")
        man = json.loads((r18_bundle / "manifest.json").read_text())
        x = np.load(r18_bundle / man["golden"]["inputs"])
        c = http.InferenceServerClient(url.removeprefix("http://"))
        for m in man["models"]:
            i = http.InferInput("input", list(x.shape), "FP32")
            i.set_data_from_numpy(x)
            got = c.infer(m["name"], [i]).as_numpy("logits")
            want = open_session(r18_bundle / m["model_file"]).run(x)
            assert got.shape == want.shape and np.abs(got - want).max() <= 1e-5, m["name"]
        # the full image serves the page at /, the lean one its JSON index (no gradio to draw a page with)
        index = httpx.get(url + "/", timeout=10, follow_redirects=True)
        kind = index.headers.get("content-type", "")
        assert index.status_code == 200 and kind.startswith("application/json" if name == "Dockerfile.api"
                                                            else "text/html"), (index.status_code, kind)
    finally:
        if container:
            _docker("rm", "-f", container, check=False)
        _docker("rmi", "-f", tag, check=False)
