"""Bundles serve the numbers qdeploy verified, under each server's own session settings.

qdeploy runs every ONNX Runtime session with WeightBiasQuantization off; Triton's onnxruntime backend can set only a
graph level, with every default transformer on. These tests take a real INT8 file that keeps convs float (as auto's
fallback writes), show that such a host computes other numbers on it, and that the file a bundle ships for Triton
computes exactly qdeploy's under Triton's settings, which `bundle verify` checks."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import run_cli

pytest.importorskip("tritonclient.grpc", reason="Triton's client is not installed (pip install 'qdeploy[serve]')")

R20_FP32 = Path(__file__).resolve().parents[1] / "src/qdeploy/bundled/resnet20_cifar10/fp32.onnx"
ALL, NONE = ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL


def _keep_float(fp32: Path, out: Path, calib: np.ndarray, which=slice(3, 6)) -> tuple[Path, list[str]]:
    """`fp32` quantized (QDQ, this CPU's kernel) with some convs kept float: the file auto's fallback writes."""
    from qdeploy.quantize import QuantConfig, quantize
    from qdeploy.recipes import kernel_types

    convs = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"][which]
    cfg = QuantConfig(name="x", per_channel=True, min_agreement=0.0, nodes_to_exclude=convs, **kernel_types("u8s8"))
    q, _ = quantize(fp32, out, cfg, calib[:32], guard=False)
    return q, convs


@pytest.fixture(scope="module")
def kept_float(tmp_path_factory, calib_eval):
    _, calib, _, ev = calib_eval
    q, convs = _keep_float(R20_FP32, tmp_path_factory.mktemp("fidelity") / "kept.onnx", calib)
    return q, convs, ev[:200]


def _run(session_or_path, x):
    from qdeploy.targets import run_batched

    return run_batched(session_or_path, x, batch_size=8)


def test_a_plain_onnx_runtime_host_changes_the_numbers_and_the_triton_file_does_not(kept_float, tmp_path):
    from qdeploy.bundle.layouts import triton_model_file
    from qdeploy.formats.server_safe import load_rewrites
    from qdeploy.targets import open_session
    from qdeploy.targets.ort import host_ort_session

    q, convs, ev = kept_float
    dst = tmp_path / "1" / "model.onnx"
    settings = triton_model_file(q, dst)
    assert settings.graph_level == "all" and not settings.preoptimized and settings.rewritten
    # independently of the code under test: the float convs fed by a DequantizeLinear are the rewritten ones, each
    # now ORT's FusedConv with the same inputs and attributes (plus activation Relu where its lone consumer was a
    # Relu, which is then gone); nothing else changed
    src, out = onnx.load(str(q)).graph, onnx.load(str(dst)).graph
    producer = {o: n.op_type for n in src.node for o in n.output}
    users = {}
    for n in src.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    floats = {i.name for i in src.initializer if i.data_type == onnx.TensorProto.FLOAT}
    fed = [n for n in src.node if n.op_type == "Conv" and n.input[1] in floats
           and producer.get(n.input[0]) == "DequantizeLinear"]
    assert fed and {n.name for n in fed} <= set(convs) and sorted(settings.rewritten) == sorted(n.name for n in fed)
    relus = {n.name: users[n.output[0]][0] for n in fed
             if [u.op_type for u in users[n.output[0]]] == ["Relu"]}
    by_name = {n.name: n for n in out.node}
    for a in src.node:
        if a.name in {r.name for r in relus.values()}:
            assert a.name not in by_name
            continue
        b = by_name[a.name]
        assert list(b.input) == list(a.input)
        if a.name in relus:
            assert list(b.output) == list(relus[a.name].output)
            assert b.attribute[:-1] == a.attribute[:] and onnx.helper.get_attribute_value(b.attribute[-1]) == b"Relu"
        else:
            assert list(b.output) == list(a.output) and b.attribute == a.attribute
        assert (b.op_type, b.domain) == (("FusedConv", "com.microsoft") if a in fed else (a.op_type, a.domain))
    assert len(out.node) == len(src.node) - len(relus) and out.initializer == src.initializer

    ours = _run(open_session(q), ev)                       # what the run verified
    host_raw = _run(host_ort_session(q, ALL), ev)           # the run's file in Triton's / a plain session
    host_safe = _run(host_ort_session(dst, ALL), ev)        # the bundle's Triton file there
    scale = float(np.abs(ours).max())
    raw, safe = float(np.abs(host_raw - ours).max()), float(np.abs(host_safe - ours).max())
    print(f"max |diff| from qdeploy's session, host at ORT_ENABLE_ALL: run's file {raw:.4g} "
          f"({raw / scale:.2%} of the largest logit), bundle's file {safe:.3g}")
    assert raw >= 0.01 * scale          # the pin matters: without it the host serves other numbers
    assert safe <= 1e-5 * scale         # with it, qdeploy's numbers
    assert load_rewrites(q, ALL) and load_rewrites(dst, ALL) == [] and load_rewrites(q, NONE) == []


def test_a_node_the_rewrite_does_not_cover_ships_preoptimised_with_triton_told_not_to_optimise(
        kept_float, tmp_path, monkeypatch):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from qdeploy.bundle import BundleConfig, layouts
    from qdeploy.targets import open_session
    from qdeploy.targets.ort import host_ort_session

    q, _, ev = kept_float
    # stands for a float ConvTranspose, which has no contrib twin: the rewrite leaves the file as it is
    monkeypatch.setattr(layouts, "server_safe", lambda s, d: shutil.copyfile(s, d) and [])
    placed = layouts.Triton().place(tmp_path, "m", "x", q, None, BundleConfig())
    assert placed.settings.preoptimized and placed.settings.graph_level == "disable_all"
    cfg = text_format.Parse((tmp_path / "triton/m/config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert cfg.optimization.graph.level == 2       # Triton's onnxruntime backend: 2 = ORT_DISABLE_ALL
    ours = _run(open_session(q), ev)
    host = _run(host_ort_session(tmp_path / placed.model_file, NONE), ev)
    # ORT's EXTENDED graph without the level-3 layouts: the same integer kernels, rounding differs slightly
    assert np.abs(host - ours).max() <= 0.05 * np.abs(ours).max()
    assert (host.argmax(1) == ours.argmax(1)).mean() >= 0.99


def _rehash(root: Path, rel: str) -> None:
    man = json.loads((root / "manifest.json").read_text())
    data = (root / rel).read_bytes()
    man["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (root / "manifest.json").write_text(json.dumps(man))


def test_bundle_of_a_variant_with_float_convs_verifies_under_server_settings(small_run, calib_eval, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(small_run[0], run)
    _, calib, _, _ = calib_eval
    # the run's INT8 file replaced by one that keeps three convs float (quantized from the run's own FP32 file)
    _keep_float(run / "fp32.onnx", tmp_path / "kept.onnx", calib)
    shutil.copyfile(tmp_path / "kept.onnx", run / "int8_default.onnx")
    out = tmp_path / "b"
    r = run_cli("bundle", run, "--format", "triton,ovms", "--variants", "default", "--out", out, "--name", "m")
    assert r.returncode == 0, r.stderr[-2000:]
    man = json.loads((out / "manifest.json").read_text())
    tri = next(m for m in man["models"] if m["layout"] == "triton")
    assert tri["settings"]["graph_level"] == "all" and tri["settings"]["rewritten"]
    assert "optimization" not in (out / "triton/m-default/config.pbtxt").read_text()   # Triton's default level
    assert (out / "ovms/m-default/1/model.onnx").read_bytes() == (run / "int8_default.onnx").read_bytes()
    ovms = json.loads((out / "ovms/config.json").read_text())["model_config_list"][0]["config"]
    assert ovms["plugin_config"] == {"INFERENCE_PRECISION_HINT": "f32"}
    assert set(man["golden"]["expected"]["m-default"]["files"]) == {"ort-cpu", "openvino-cpu"}
    r = run_cli("bundle", "verify", out)
    assert r.returncode == 0 and "triton/m-default" in r.stdout and "ovms/m-default" in r.stdout, r.stderr

    # the run's own file shipped to Triton: hashes made right, but ORT's load-time rewrite would change it
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    shutil.copyfile(run / "int8_default.onnx", bad / "triton/m-default/1/model.onnx")
    _rehash(bad, "triton/m-default/1/model.onnx")
    r = run_cli("bundle", "verify", bad)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "WeightBiasQuantization would rewrite triton/m-default/1/model.onnx" in r.stderr, r.stderr

    # an OVMS config without the pinned precision
    bad2 = tmp_path / "bad2"
    shutil.copytree(out, bad2)
    cfg = json.loads((bad2 / "ovms/config.json").read_text())
    del cfg["model_config_list"][0]["config"]["plugin_config"]
    (bad2 / "ovms/config.json").write_text(json.dumps(cfg))
    _rehash(bad2, "ovms/config.json")
    r = run_cli("bundle", "verify", bad2)
    assert r.returncode == 2 and "has no plugin_config INFERENCE_PRECISION_HINT" in r.stderr, r.stderr
