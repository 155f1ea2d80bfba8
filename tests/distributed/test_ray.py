"""Sharded evaluation on a real local Ray cluster (2 CPUs, started and shut down here): the shared ResNet18's FP32
and default INT8 over 1,280 real CIFAR-10 test images (5 evaluation batches) equal a single-process run exactly,
also when a worker is killed mid-shard; `qdeploy run --ray` reports the metrics a local evaluation of its own files
gives (on the bundled ResNet-20)."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import asdict

import numpy as np
import pytest

from conftest import CIFAR, R20_CKPT, run_cli

pytestmark = pytest.mark.ray

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'qdeploy[ray]')")

N = 1280        # 5 evaluation batches of 256: 3 shards of 2 batches, or 5 of one


@pytest.fixture(scope="module")
def models(small_run):
    run, _ = small_run
    return {"fp32": (run / "fp32.onnx", "ort-cpu"), "default": (run / "int8_default.onnx", "ort-cpu")}


@pytest.fixture(scope="module")
def evalset(models):
    from qdeploy.artifacts import read_info
    from qdeploy.data import DataConfig, open_calib_eval

    spec = read_info(models["fp32"][0]).require_preprocess()
    ev = open_calib_eval(DataConfig(root=str(CIFAR), calib_size=1, eval_limit=N))[1]
    return ev, spec


@pytest.fixture(scope="module")
def local(models, evalset):
    """The single-process reference: outputs in stream order and the scorers' results."""
    from qdeploy.evaluate import EvalConfig, evaluate_many
    from qdeploy.targets import open_session

    ev, spec = evalset
    sessions = {n: open_session(p).run for n, (p, _) in models.items()}
    outs = {n: [] for n in models}
    for b in ev.batches(spec):
        for n, run in sessions.items():
            outs[n].append(run(b.x))
    scorers = evaluate_many(sessions, ev, spec, ev.classes, EvalConfig(progress=False))
    return {n: np.concatenate(o) for n, o in outs.items()}, scorers


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _same_metrics(a, b):
    assert json.dumps(asdict(a.result()), sort_keys=True, default=str) == \
        json.dumps(asdict(b.result()), sort_keys=True, default=str)
    np.testing.assert_array_equal(a.predictions(), b.predictions())


def test_the_evaluation_images_are_many_classes_in_every_shard(evalset):
    ev, spec = evalset
    from qdeploy.distributed.evaluate import shard_ranges

    assert len(ev) == N
    for a, b in shard_ranges(N, 256, 2):
        assert len(set(ev.labels[a:b].tolist())) == 10, (a, b)   # not a sorted prefix of a few classes


def test_sharded_outputs_are_byte_identical_and_metrics_equal(cluster, models, evalset, local, tmp_path):
    from qdeploy.distributed import RayConfig
    from qdeploy.distributed.evaluate import evaluate_sharded, shard_outputs
    from qdeploy.evaluate import EvalConfig
    from qdeploy.tasks.classification import paired

    ev, spec = evalset
    want_out, want = local
    rcfg = RayConfig(shard_batches=2, heartbeat_dir=str(tmp_path))
    got_out = shard_outputs(models, ev, spec, rcfg, cluster)
    for n in models:
        assert got_out[n].dtype == want_out[n].dtype and got_out[n].tobytes() == want_out[n].tobytes(), n
    got = evaluate_sharded(models, ev, spec, ev.classes, EvalConfig(progress=False), rcfg, cluster, progress=False)
    for n in models:
        _same_metrics(got[n], want[n])
    labels = want["fp32"].seen_labels()
    assert paired(got["default"].predictions(), got["fp32"].predictions(), labels) == \
        paired(want["default"].predictions(), want["fp32"].predictions(), labels)      # the McNemar table
    pids = {f.name.split(".pid-")[1].split(".")[0] for f in tmp_path.iterdir()}
    assert len(pids) >= 2 and all(f.suffix == ".done" for f in tmp_path.iterdir())  # really spread over workers


def test_a_worker_killed_mid_shard_is_retried_and_the_result_is_identical(cluster, models, evalset, local, tmp_path):
    from qdeploy.distributed import RayConfig
    from qdeploy.distributed.evaluate import evaluate_sharded
    from qdeploy.evaluate import EvalConfig

    ev, spec = evalset
    rcfg = RayConfig(shard_batches=1, heartbeat_dir=str(tmp_path), max_retries=3)
    result, killed = {}, []

    def work():
        result["scorers"] = evaluate_sharded(models, ev, spec, ev.classes, EvalConfig(progress=False), rcfg, cluster,
                                             progress=False)

    t = threading.Thread(target=work)
    t.start()
    deadline = time.time() + 120
    while not killed and time.time() < deadline:
        running = sorted(tmp_path.glob("shard-00003.*.running"))   # a shard in the middle of the set
        if running:
            pid = int(running[0].name.split(".pid-")[1].split(".")[0])
            os.kill(pid, signal.SIGKILL)
            killed.append((running[0].name, pid))
        time.sleep(0.005)
    t.join(300)
    assert killed and not t.is_alive()
    attempts = sorted(f.name for f in tmp_path.glob("shard-00003.*"))
    assert len(attempts) == 2 and attempts[0].endswith(".running") != attempts[1].endswith(".running"), attempts
    for n in models:
        _same_metrics(result["scorers"][n], local[1][n])
        assert len(result["scorers"][n].predictions()) == N              # nothing counted twice, nothing lost


def test_run_with_ray_reports_what_a_local_evaluation_of_its_files_gives(tmp_path):
    from qdeploy.artifacts import read_info
    from qdeploy.data import DataConfig, open_calib_eval
    from qdeploy.evaluate import EvalConfig, evaluate_many
    from qdeploy.results import RunResult
    from qdeploy.targets import open_session

    if ray.is_initialized():
        ray.shutdown()
    out = tmp_path / "r"
    # the bundled ResNet-20: what is checked is that Ray's build and evaluation equal local ones, for any model
    r = run_cli("run", "--targets", "ort-cpu", "--checkpoint", R20_CKPT, "--ray", "--ray-cpus", "2", "--out", out, "--variants", "default,dynamic", "--eval-limit", 300,
                "--calib-size", 100, "--bench-runs", 10, "--bench-batches", "1", "--bench-seconds", 0.05)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ray: local cluster, 2 CPUs" in r.stderr and "evaluate on ray: 3 model file(s) x 300 images" in r.stderr
    assert "quantize on ray: default, dynamic" in r.stderr and "quantize default: built on ray" in r.stderr
    rep = RunResult.load(out / "report.json")
    spec = read_info(out / "fp32.onnx").require_preprocess()
    calib, ev = open_calib_eval(DataConfig(root=str(CIFAR), calib_size=100, eval_limit=300))
    # the variants built on Ray are byte for byte what this process builds from the same FP32 file and images
    from qdeploy.quantize.ort import quantize
    from qdeploy.recipes import variant_config

    for name in ("default", "dynamic"):
        mine, _ = quantize(out / "fp32.onnx", tmp_path / f"{name}.onnx", variant_config(name, {}), calib.load(spec))
        assert mine.read_bytes() == (out / f"int8_{name}.onnx").read_bytes(), name
    sessions = {v.name: open_session(out / v.file).run for v in rep.variants if v.ok}
    mine = evaluate_many(sessions, ev, spec, ev.classes, EvalConfig(progress=False))
    for v in rep.variants:
        if v.ok:
            m = mine[v.name].result()
            assert (v.metrics.top1, v.metrics.agreement, v.metrics.rel_l2, v.metrics.paired) == \
                (m.top1, m.agreement, m.rel_l2, m.paired), v.name
