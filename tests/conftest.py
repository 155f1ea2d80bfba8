"""Shared fixtures: real data and the real checkpoint from ../shared, at small sizes; the test tiers.

Tiers: a test is `slow` when it does something expensive (the markers in pyproject: starts a server, a browser,
Ray, builds a venv, trains, runs a whole pipeline, searches, works on the 224-px EfficientNet); `make test-fast`
runs the rest. Markers come from the test itself or from the fixtures it uses (FIXTURE_MARKS), so a test that reads
the session's pipeline run is a pipeline test without saying so. Tests that read ../shared carry `shared` (from
their fixtures, or a `pytestmark`); without ../shared they skip with one line and the others still run.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qdeploy.settings import shared_dir

if os.environ.get("PYTEST_XDIST_WORKER"):
    # two workers on two cores: PyTorch's OpenMP pool (and every subprocess's) gets one thread each, or four
    # spinning threads share two cores (QAT took 4x its one-process time so)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # ... and each ONNX Runtime / OpenVINO session one thread (formats.sessions.default_threads), or every session's
    # pool busy-waits on both cores while the other worker computes
    os.environ.setdefault("QDEPLOY_THREADS", "1")

_FOUND = shared_dir()
SHARED = _FOUND or Path(__file__).resolve().parents[2] / "shared"
CKPT = SHARED / "checkpoints" / "resnet18_cifar10.pth"
CIFAR = SHARED / "datasets" / "cifar10"
KODAK = SHARED / "datasets" / "kodak24"
HAVE_SHARED = CKPT.is_file() and CIFAR.is_dir()
NO_SHARED = (f"needs ../shared (the ResNet18 checkpoint and CIFAR-10; looked in {SHARED}): "
             "set QDEPLOY_SHARED to its path")
R20_CKPT = Path(__file__).resolve().parents[1] / "src" / "qdeploy" / "bundled" / "resnet20_cifar10" / "train" / "best.pth"
SMALL_RUN_IMAGES = 200     # evaluation images of the session's pipeline run (small_run)
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# what a test does, by the fixtures it uses (transitively): the marks it gets
FIXTURE_MARKS = {
    "small_run": ("pipeline", "shared"), "r18_bundle": ("pipeline", "shared"), "lite0_imagenet": ("lite0", "shared"),
    "ckpt": ("shared",), "cifar": ("shared",), "fp32_model": ("shared",), "calib_eval": ("shared",),
    "fp32_onnx": ("shared",),
}
# the kinds of work that make a test slow (each registered in pyproject's markers)
SLOW_KINDS = ("pipeline", "server", "browser", "venv", "ray", "train", "search", "lite0")
# Under pytest-xdist (`make test` runs two workers) a test file goes to one worker whole, so its module fixtures are
# built once; tests/distributed (the files that start Ray) goes to one worker together: one cluster at a time.
TOGETHER = ("tests/distributed/",)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Before `-m` selects: marks from fixtures, `slow` from the kinds of work, skips for missing ../shared."""
    for item in items:
        for fixture, marks in FIXTURE_MARKS.items():
            if fixture in getattr(item, "fixturenames", ()):
                for m in marks:
                    item.add_marker(getattr(pytest.mark, m))
        if any(item.get_closest_marker(k) for k in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)
        if not HAVE_SHARED and item.get_closest_marker("shared"):
            item.add_marker(pytest.mark.skip(reason=NO_SHARED))
    items.sort(key=_file_order(items))


# the fixtures that read the session's pipeline run (its `pipeline` mark says so)
RUN_FIXTURES = tuple(f for f, marks in FIXTURE_MARKS.items() if "pipeline" in marks)


def _file(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def _file_order(items):
    """Files in the order workers get them: the slow ones first (a long file handed out last leaves the other worker
    idle), and of the files that read the session's pipeline run only one at the start, so the other worker has
    something to do while that run is built (once()) instead of waiting for it."""
    def file(item):
        return _file(item.nodeid)

    slow = {file(i) for i in items if i.get_closest_marker("slow")}
    run = [file(i) for i in items if any(f in getattr(i, "fixturenames", ()) for f in RUN_FIXTURES)]
    first = run[0] if run else None
    rank = {f: (0 if f == first else 1 if f in slow and f not in run else 2 if f in slow else 3)
            for f in {file(i) for i in items}}
    return lambda item: rank[file(item)]


def _scope(nodeid: str) -> str:
    path = _file(nodeid)
    return next((d for d in TOGETHER if path.startswith(d)), path)


def pytest_xdist_make_scheduler(config, log):
    """Whole files to a worker (xdist's loadscope, scoped by _scope); the files come in collection order, slow first."""
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return FileScheduling(config, log)


def once(tmp_path_factory, name: str, build) -> dict:
    """Build a session artifact once for the whole run, also across xdist workers: the first worker to get here
    builds it in the run's shared base temp dir under a file lock (build(dir) -> a JSON-able record), the others
    wait for it and read the record. A failed build leaves nothing marked done, so the next caller tries again."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    where, done = root / f"once-{name}", root / f"once-{name}.json"
    with open(root / f"once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.is_file():
            shutil.rmtree(where, ignore_errors=True)
            where.mkdir(parents=True)
            record = build(where)
            done.write_text(json.dumps(record))
        return json.loads(done.read_text())


def require_shared() -> Path:
    if not HAVE_SHARED:
        pytest.skip(NO_SHARED)
    return SHARED


def run_cli(*args, cwd=None, timeout=600):
    """Run the real `qdeploy` entry point in a subprocess; returns CompletedProcess."""
    exe = Path(sys.executable).with_name("qdeploy")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture(scope="session")
def ckpt() -> Path:
    require_shared()
    return CKPT


@pytest.fixture(scope="session")
def cifar() -> Path:
    require_shared()
    return CIFAR


@pytest.fixture(scope="session")
def fp32_model():
    from qdeploy.models import load_model

    return load_model("resnet18-cifar", CKPT)


def onnx_inits(path):
    """(the loaded model, its initializers as arrays by name)."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    return m, {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}


def file_meta(path, key: str):
    """One entry of a qdeploy file's metadata, JSON decoded (None when absent)."""
    import json

    from qdeploy.artifacts import read_info

    v = read_info(path).extra.get(key)
    return json.loads(v) if isinstance(v, str) else v


@pytest.fixture(scope="session")
def calib_eval():
    """64 calibration images from train, 500 evaluation images from test (class-balanced, real)."""
    from qdeploy.data import DataConfig, PreprocessSpec, open_calib_eval

    cfg = DataConfig(root=str(CIFAR), calib_size=64, eval_limit=500)
    calib, ev = open_calib_eval(cfg)
    spec = PreprocessSpec()
    return calib, calib.load(spec), ev, ev.load(spec)


@pytest.fixture(scope="session")
def fp32_onnx(tmp_path_factory, fp32_model, calib_eval):
    from qdeploy.data import PreprocessSpec
    from qdeploy.export import export

    _, calib_x, _, _ = calib_eval
    path, parity = export(fp32_model, tmp_path_factory.mktemp("export") / "fp32.onnx", calib_x, CLASSES,
                          PreprocessSpec())
    return path, parity


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """One real `qdeploy run` over 200 test images with three variants; the CLI's own output dir. Two of the variants
    (seed-lab5, dynamic) run ~20-30 ms an image here, so the evaluation set is kept small."""
    def build(where: Path) -> dict:
        res = run_cli("run", "--checkpoint", CKPT, "--data", CIFAR, "--out", where / "r18", "--variants",
                      "default,seed-lab5,dynamic", "--eval-limit", SMALL_RUN_IMAGES, "--calib-size", 100,
                      "--bench-runs", 30, "--bench-batches", "1,8", "--bench-seconds", 0.2, "--verify-images", 100)
        assert res.returncode == 0, res.stderr[-3000:]
        return {"out": str(where / "r18"), "args": res.args, "stdout": res.stdout, "stderr": res.stderr}

    rec = once(tmp_path_factory, "small_run", build)
    return Path(rec["out"]), subprocess.CompletedProcess(rec["args"], 0, rec["stdout"], rec["stderr"])


@pytest.fixture(scope="session")
def r18_bundle(small_run, tmp_path_factory) -> Path:
    """`qdeploy bundle` of small_run: FP32 and default INT8 as Triton and OVMS layouts, model names r18-*. Shared,
    so never changed in place: tests that tamper with it copy it first."""
    run, _ = small_run

    def build(where: Path) -> dict:
        r = run_cli("bundle", run, "--format", "triton,ovms", "--variants", "fp32,default", "--out", where / "b",
                    "--name", "r18")
        assert r.returncode == 0, r.stderr[-2000:]
        return {"out": str(where / "b")}

    return Path(once(tmp_path_factory, "r18_bundle", build)["out"])


def tiny_imagefolder(root: Path, per_class: int = 3, split: str = "test", classes=CLASSES) -> Path:
    """Copy a few real CIFAR JPEGs into a new ImageFolder tree (tests may not modify ../shared)."""
    import shutil

    for c in classes:
        d = root / split / c
        d.mkdir(parents=True, exist_ok=True)
        for f in sorted((CIFAR / "test" / c).iterdir())[:per_class]:
            shutil.copy(f, d / f.name)
    return root


def make_cifar_pickle(root: Path, n_per_class: int = 5) -> Path:
    """A cifar-10-batches-py directory (torchvision's layout) built from real CIFAR JPEGs."""
    import pickle

    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)

    def batch(split, start):
        data, labels = [], []
        for i, c in enumerate(CLASSES):
            for f in sorted((CIFAR / split / c).iterdir())[start:start + n_per_class]:
                arr = np.asarray(Image.open(f).convert("RGB"), np.uint8)
                data.append(arr.transpose(2, 0, 1).reshape(-1))
                labels.append(i)
        return {"data": np.stack(data), "labels": labels}

    for name, split in (("data_batch_1", "train"), ("test_batch", "test")):
        with open(root / name, "wb") as fh:
            pickle.dump(batch(split, 0), fh)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": CLASSES}, fh)
    return root


@pytest.fixture(scope="session")
def lite0_imagenet(tmp_path_factory):
    """The ImageNet EfficientNet-Lite0 exported by qdeploy; 48 CIFAR-10 train images to calibrate on; 24 Kodak
    photos + 96 CIFAR-10 test images (upscaled by the preprocessing) to compare on."""
    from qdeploy.data import open_split
    from qdeploy.data.sampling import balanced_indices
    from qdeploy.export import export
    from qdeploy.models import load_model, pretrained

    weights, spec = pretrained("efficientnet-lite0", "imagenet")
    cifar = SHARED / "datasets" / "cifar10"
    tr, te = open_split(cifar, "train"), open_split(cifar, "test")
    calib = tr.subset(balanced_indices(tr.labels, 48, seed=1)).load(spec)
    ev = np.concatenate([te.subset(balanced_indices(te.labels, 96, seed=2)).load(spec),
                         open_split(SHARED / "datasets" / "kodak24", None).load(spec)])
    names = (SHARED / "datasets" / "imagenet" / "imagenet_classes.txt").read_text().splitlines()
    def build(where: Path) -> dict:
        path, _ = export(load_model("efficientnet-lite0", weights), where / "fp32.onnx", calib[:8], names, spec)
        return {"path": str(path)}

    return Path(once(tmp_path_factory, "lite0_imagenet", build)["path"]), calib, ev
