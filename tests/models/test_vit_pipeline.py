"""A small vision transformer, trained here for two short epochs (so that its activations are a trained network's,
not noise) with the timm layout, goes through `qdeploy run` from its record: export with parity, the transformer
INT8 recipe and NNCF's transformer model type, verified on both runtimes, every (variant, runtime) row judged by
the same gate."""
import json

import onnx
import pytest

from conftest import CIFAR, run_cli

pytestmark = [pytest.mark.pipeline, pytest.mark.train, pytest.mark.shared]

VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2}


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory):
    where = tmp_path_factory.mktemp("vit")
    r = run_cli("train", "--arch", "vit_tiny_patch16_224", "--arch-kwargs", json.dumps(VIT), "--optimizer", "adamw",
                "--lr", 2e-3, "--weight-decay", 0.05, "--epochs", 2, "--train-limit", 1500, "--val-size", 300,
                "--batch-size", 100, "--data", CIFAR, "--out", where / "train", "--test-split", "")
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads((where / "train" / "best.json").read_text())
    assert record["arch"] == "vit_tiny_patch16_224" and record["arch_kwargs"] == VIT
    r = run_cli("run", "--checkpoint", where / "train" / "best.pth", "--data", CIFAR, "--out", where / "run",
                "--variants", "default,transformer,nncf", "--targets", "ort-cpu,openvino-cpu", "--eval-limit", 300,
                "--calib-size", 64, "--bench-runs", 10, "--bench-batches", "1", "--bench-seconds", 0.1)
    assert r.returncode == 0, r.stderr[-3000:]
    return where / "run", r


def test_the_vit_exports_with_parity_and_its_graph_has_attention(vit_run):
    from qdeploy.quantize.nncf_variant import has_attention

    run, r = vit_run
    assert "arch from record" in r.stderr
    g = onnx.load(str(run / "fp32.onnx")).graph
    ops = [n.op_type for n in g.node]
    assert ops.count("Softmax") == VIT["depth"] and "LayerNormalization" in ops and has_attention(run / "fp32.onnx")
    assert "NNCF model type transformer" in r.stderr


def test_the_transformer_recipe_quantizes_the_matrix_products_only(vit_run):
    """Its file: every MatMul/Gemm reads dequantized inputs; LayerNorm, Softmax, GELU (Erf) and the patch Conv read
    float ones."""
    run, _ = vit_run
    if not (run / "int8_transformer.onnx").is_file():
        pytest.fail("the transformer recipe was refused on the trained ViT: " + (run / "report.md").read_text()[:2000])
    g = onnx.load(str(run / "int8_transformer.onnx")).graph
    producer = {o: n.op_type for n in g.node for o in n.output}
    for n in g.node:
        fed = {producer.get(i) for i in n.input if i}
        if n.op_type in ("MatMul", "Gemm"):
            assert "DequantizeLinear" in fed, n.name
        if n.op_type in ("LayerNormalization", "Softmax", "Erf", "Conv"):
            assert "DequantizeLinear" not in {producer.get(i) for i in n.input[:1]}, n.name


def test_every_variant_and_runtime_row_is_judged_by_the_gate(vit_run):
    from qdeploy.results import RunResult

    run, r = vit_run
    res = RunResult.load(run / "report.json")
    failed = res.gate_failures()
    rows = {(v.name, v.target) for v in res.variants if v.measured} | {
        (v.name, t) for v in res.variants if v.measured for t, o in v.on.items() if o.metrics is not None}
    assert {("transformer", "openvino-cpu"), ("nncf", "openvino-cpu"), ("default", "ort-cpu")} <= rows
    report = (run / "report.md").read_text()
    for (v, t) in failed:
        assert f"**{v} on {t}: FAILED the gate**" in report and f"warning: {v} on {t} FAILED the gate" in r.stderr
    dep = res.recommended
    assert dep is None or (dep.variant, dep.target) not in failed


def test_auto_screens_the_transformer_scope_on_a_graph_with_attention(vit_run, tmp_path):
    from qdeploy.data import DataConfig, PreprocessSpec, open_calib_val
    from qdeploy.quantize.auto import auto_quantize
    from qdeploy.recipes import AutoConfig

    run, _ = vit_run
    calib, val = open_calib_val(DataConfig(root=str(CIFAR), calib_size=64), 200)
    spec = PreprocessSpec()
    cfg = AutoConfig(max_drop_pt=100.0, val_size=200, formats=("QDQ",), kernels=("u8s8",), methods=("minmax",),
                     per_channel=(True,), calib_fractions=(1.0,), bench_runs=10)
    logs = []
    rec = auto_quantize(run / "fp32.onnx", tmp_path / "a.onnx", calib.load(spec), val.load(spec), val.labels, cfg,
                        log=logs.append)
    speed = [c for c in rec["candidates"] if c["stage"] == "speed"]
    assert sorted(tuple(c["config"]["op_types"]) for c in speed) == [(), ("MatMul", "Gemm")]
    assert any("the graph has attention" in m for m in logs)
