"""Deployment bundles: Triton and OVMS layouts of a real run, checked independently (Triton's own ModelConfig
protobuf, recomputed hashes), and `bundle verify` catching tampering with one specific line each."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from conftest import CLASSES, run_cli

pytest.importorskip("tritonclient.grpc", reason="Triton's client is not installed (pip install 'qdeploy[serve]')")


@pytest.fixture(scope="module")
def bundle(small_run, r18_bundle):
    return small_run[0], r18_bundle


def test_bundle_holds_triton_and_ovms_layouts_that_match_the_models(bundle):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    run, out = bundle
    for name in ("r18-fp32", "r18-default"):
        cfg = text_format.Parse((out / "triton" / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert cfg.name == name and cfg.backend == "onnxruntime" and cfg.max_batch_size == 32
        assert [(t.name, list(t.dims), model_config_pb2.DataType.Name(t.data_type)) for t in cfg.input] == \
            [("input", [3, 32, 32], "TYPE_FP32")]
        assert [(t.name, list(t.dims), t.label_filename) for t in cfg.output] == [("logits", [10], "labels.txt")]
        assert cfg.dynamic_batching.max_queue_delay_microseconds > 0
        assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert (out / "triton" / name / "labels.txt").read_text().splitlines() == CLASSES
        assert (out / "ovms" / name / "1" / "model.onnx").is_file()
    # the model files are the run's own verified files, byte for byte
    assert (out / "triton/r18-default/1/model.onnx").read_bytes() == (run / "int8_default.onnx").read_bytes()
    ovms = json.loads((out / "ovms" / "config.json").read_text())
    assert {c["config"]["name"]: c["config"]["base_path"] for c in ovms["model_config_list"]} == {
        "r18-fp32": "/models/r18-fp32", "r18-default": "/models/r18-default"}
    man = json.loads((out / "manifest.json").read_text())
    # every file is hashed, and the hashes are right (recomputed here, not by the code under test)
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert set(man["files"]) == on_disk
    for rel, f in man["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == f["sha256"]
    assert man["classes"] == CLASSES and man["preprocess"]["size"] == 32
    assert man["source_run"]["manifest"]["inputs"]["checkpoint"]["sha256"]
    assert man["versions"]["onnxruntime"]
    # the golden request: real, preprocessed, class-mixed images and each model's outputs on them
    x = np.load(out / man["golden"]["inputs"])
    assert x.shape == (4, 3, 32, 32) and len(set(man["golden"]["labels"])) == 4 and x.std() > 0.5
    exp = np.load(out / man["golden"]["expected"]["r18-fp32"]["files"]["ort-cpu"])
    assert exp.shape == (4, 10)
    assert "tritonclient.http" in (out / "README.md").read_text()


def test_verify_passes_on_the_bundle(bundle):
    _, out = bundle
    r = run_cli("bundle", "verify", out)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


def _copy(bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(bundle[1], dst)
    return dst


def _rehash(root, rel):
    man = json.loads((root / "manifest.json").read_text())
    data = (root / rel).read_bytes()
    man["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (root / "manifest.json").write_text(json.dumps(man))


def test_verify_catches_a_flipped_byte_in_a_model(bundle, tmp_path):
    b = _copy(bundle, tmp_path)
    p = b / "triton/r18-default/1/model.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    r = run_cli("bundle", "verify", b)
    assert r.returncode == 2
    assert r.stderr.strip() == ("error: triton/r18-default/1/model.onnx differs from the manifest (sha256); the file "
                                "was changed or truncated")


def test_verify_catches_a_deleted_labels_file(bundle, tmp_path):
    b = _copy(bundle, tmp_path)
    (b / "triton/r18-fp32/labels.txt").unlink()
    r = run_cli("bundle", "verify", b)
    assert r.returncode == 2 and "triton/r18-fp32/labels.txt is missing from the bundle" in r.stderr


def test_verify_catches_a_config_that_disagrees_with_the_model(bundle, tmp_path):
    b = _copy(bundle, tmp_path)
    rel = "triton/r18-default/config.pbtxt"
    cfg = b / rel
    cfg.write_text(cfg.read_text().replace("dims: [ 3, 32, 32 ]", "dims: [ 3, 224, 224 ]"))
    r = run_cli("bundle", "verify", b)
    assert r.returncode == 2 and f"error: {rel} differs from the manifest" in r.stderr     # the hash first
    _rehash(b, rel)    # a config edited and re-hashed on purpose is still checked against the model
    r = run_cli("bundle", "verify", b)
    assert r.returncode == 2
    assert "input 'input' dims [3, 224, 224] differ from the model's [3, 32, 32]" in r.stderr
    cfg.write_text(cfg.read_text().replace("max_batch_size", "max_batchsize"))
    _rehash(b, rel)
    r = run_cli("bundle", "verify", b)
    assert r.returncode == 2 and "does not parse as Triton's ModelConfig" in r.stderr


def test_verify_catches_a_model_that_no_longer_reproduces_the_golden_request(bundle, tmp_path):
    b = _copy(bundle, tmp_path)
    shutil.copyfile(b / "triton/r18-fp32/1/model.onnx", b / "triton/r18-default/1/model.onnx")
    _rehash(b, "triton/r18-default/1/model.onnx")
    from qdeploy.bundle import BundleError
    from qdeploy.bundle.verify import check_golden

    man = json.loads((b / "manifest.json").read_text())
    # the FP32 file standing in for the INT8 one: outputs differ beyond the INT8 tolerance or flip a top-1
    exp = np.load(b / man["golden"]["expected"]["r18-default"]["files"]["ort-cpu"])
    fp = np.load(b / man["golden"]["expected"]["r18-fp32"]["files"]["ort-cpu"])
    if np.abs(exp - fp).max() > 0.05 * max(1, np.abs(exp).max()) or (exp.argmax(1) != fp.argmax(1)).any():
        with pytest.raises(BundleError, match="golden request"):
            check_golden(b, man)
    # a model whose outputs are shifted certainly fails
    np.save(b / man["golden"]["expected"]["r18-fp32"]["files"]["ort-cpu"], fp + 1.0)
    with pytest.raises(BundleError, match="model 'r18-fp32' no longer reproduces the golden request"):
        check_golden(b, man)


def test_bundle_input_errors_are_one_line(small_run, tmp_path):
    run, _ = small_run
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    r = run_cli("bundle", run, "--out", tmp_path / "full")
    assert r.returncode == 2 and "already exists and is not empty" in r.stderr
    r = run_cli("bundle", run, "--format", "torchserve", "--out", tmp_path / "o")
    assert r.returncode == 2 and "unknown bundle format torchserve" in r.stderr
    r = run_cli("bundle", run, "--variants", "nope", "--out", tmp_path / "o")
    assert r.returncode == 2 and "nope" in r.stderr and not (tmp_path / "o").exists()
    r = run_cli("bundle", "verify", tmp_path)
    assert r.returncode == 2 and "no manifest.json" in r.stderr


def test_a_variant_outside_the_gate_on_a_runtime_is_not_bundled_for_it(small_run, tmp_path, monkeypatch):
    """The OVMS layout serves with OpenVINO: a variant that failed the gate there is skipped (with the reason in
    the manifest) while its Triton (ONNX Runtime) copy, which passed, is placed."""
    from qdeploy.bundle import bundle_run, BundleConfig
    from qdeploy.results import RunResult

    run, _ = small_run
    monkeypatch.setattr(RunResult, "gate_failures",
                        lambda self: {("default", "openvino-cpu"): "top-1 40.00% against FP32's 94.00%"})
    man = bundle_run(run, tmp_path / "b", BundleConfig(formats=("triton", "ovms"), variants=["fp32", "default"]),
                     log=lambda m: None)
    skipped = [s for s in man["skipped"] if s["variant"] == "default"]
    assert [s["format"] for s in skipped] == ["ovms"] and "FAILED the run's gate on openvino-cpu" in skipped[0]["reason"]
    assert (tmp_path / "b" / "triton").is_dir() and not list((tmp_path / "b" / "ovms").glob("*default*"))
