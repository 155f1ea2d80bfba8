"""Output tuning on a real model and real images: the PyTorch copy of the QDQ file computes what ORT computes, only
biases and activation scales move (the graph and integer weights do not), the file ORT runs afterwards is closer
to FP32 on images the tuning never saw, and a fit that makes things worse is not kept."""

import shutil

import numpy as np
import onnx
import pytest
import torch

from conftest import file_meta, onnx_inits
from qdeploy.bundled import bundled_run_dir
from qdeploy.data import DataConfig, PreprocessSpec, open_calib, open_split
from qdeploy.data.sampling import balanced_indices
from qdeploy.errors import ConfigError
from qdeploy.quantize import QuantConfig, quantize
from qdeploy.quantize.output_tuning import TuningConfig, tune_outputs
from qdeploy.quantize.qdq_torch import QDQModule
from qdeploy.recipes import kernel_types
from qdeploy.targets import open_session, run_batched

RECIPE = QuantConfig.per_tensor().with_(**kernel_types("u8s8"))


def _rel(ref, out):
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, cifar):
    """The bundled ResNet-20, 256 calibration images (train), 400 held-out test images, and its QDQ file made by the
    naive per-tensor recipe (no bias correction, nearest rounding: error left for the tuning to take out)."""
    tmp = tmp_path_factory.mktemp("tune")
    fp32 = tmp / "fp32.onnx"
    shutil.copy(bundled_run_dir() / "fp32.onnx", fp32)
    spec = PreprocessSpec()
    calib = open_calib(DataConfig(root=str(cifar), calib_size=256)).load(spec)
    te = open_split(cifar, "test")
    idx = balanced_indices(te.labels, 400, seed=11)
    assert len(set(te.labels[idx[:40]])) == 10          # a class mix, not one class, in any prefix we look at
    held = te.subset(idx).load(spec)
    base = tmp / "plain.onnx"
    quantize(fp32, base, RECIPE, calib, guard=False)
    return tmp, fp32, calib, held, base


def test_module_computes_what_ort_computes(setup):
    tmp, fp32, calib, held, base = setup
    ort_out = run_batched(open_session(base), held)
    with torch.no_grad():
        sim = np.concatenate([QDQModule(onnx.load(str(base)))(torch.from_numpy(held[i:i + 100]))[0].numpy()
                              for i in range(0, len(held), 100)])
    ref = run_batched(open_session(fp32), held)
    assert _rel(ort_out, sim) < 0.25 * _rel(ref, ort_out), (_rel(ort_out, sim), _rel(ref, ort_out))
    assert np.mean(sim.argmax(1) == ort_out.argmax(1)) >= 0.97


def test_tuned_file_closer_to_fp32_on_unseen_images(setup):
    tmp, fp32, calib, held, base = setup
    tuned = tmp / "tuned.onnx"
    quantize(fp32, tuned, RECIPE.with_(tune_epochs=3), calib, guard=False)
    meta = file_meta(tuned, "output_tuning")
    assert meta["accepted"] and meta["fit_images"] + meta["held_out_images"] == 256, meta
    assert meta["held_out_rel_l2_after"] < meta["held_out_rel_l2_before"], meta
    assert file_meta(base, "output_tuning") is None
    ref = run_batched(open_session(fp32), held)
    before, after = run_batched(open_session(base), held), run_batched(open_session(tuned), held)
    assert _rel(ref, after) < 0.9 * _rel(ref, before), (_rel(ref, before), _rel(ref, after))
    assert np.mean(after.argmax(1) == ref.argmax(1)) >= np.mean(before.argmax(1) == ref.argmax(1)) - 0.005

    (m_b, a), (m_t, b) = onnx_inits(base), onnx_inits(tuned)
    assert [(n.op_type, list(n.input)) for n in m_b.graph.node] == [(n.op_type, list(n.input)) for n in m_t.graph.node]
    assert a.keys() == b.keys()
    changed = {k for k in a if not np.array_equal(a[k], b[k])}
    prod = {o: n for n in m_t.graph.node for o in n.output}
    layers = [n for n in m_t.graph.node if n.op_type in ("Conv", "Gemm")]
    weights = [prod[n.input[1]].input[0] for n in layers]
    biases = [prod[n.input[2]].input[0] for n in layers if len(n.input) > 2]
    assert {a[k].dtype for k in weights} == {np.dtype(np.int8)} and {a[k].dtype for k in biases} == {np.dtype(np.int32)}
    assert not changed & set(weights)                                     # integer weights untouched
    assert len(changed & set(biases)) >= len(biases) - 1, (len(changed & set(biases)), len(biases))
    act_scales = {n.input[1] for n in m_t.graph.node if n.op_type == "QuantizeLinear"}
    moved = [k for k in act_scales if k in changed]
    assert moved and all(b[k] <= a[k] * (1 + 1e-6) for k in act_scales)  # scales only shrink
    # every bias is on the grid ORT's fused kernels assume: input scale x weight scale, from the file itself
    checked = 0
    for n in m_t.graph.node:
        if n.op_type in ("Conv", "Gemm") and len(n.input) > 2:
            dx, dw, db = prod[n.input[0]], prod[n.input[1]], prod[n.input[2]]
            np.testing.assert_allclose(b[db.input[1]], b[dx.input[1]] * b[dw.input[1]], rtol=1e-6)
            checked += 1
    assert checked == len(biases)


def test_a_fit_that_hurts_is_not_kept(setup):
    tmp, fp32, calib, held, base = setup
    path = tmp / "hurt.onnx"
    shutil.copy(base, path)
    before = path.read_bytes()
    r = tune_outputs(fp32, path, calib, "input", cfg=TuningConfig(epochs=1, lr_bias=5.0, lr_scale=0.0))
    assert not r["accepted"] and r["held_out_rel_l2_after"] > r["held_out_rel_l2_before"], r
    assert path.read_bytes() == before


def test_what_cannot_be_tuned_is_said(tmp_path, setup):
    _, fp32, calib, _, base = setup
    m = onnx.load(str(base))
    m.graph.node.append(onnx.helper.make_node("Softmax", [m.graph.output[0].name], ["probs"]))
    m.graph.output[0].name = "probs"
    odd = tmp_path / "odd.onnx"
    onnx.save(m, str(odd))
    before = odd.read_bytes()
    r = tune_outputs(fp32, odd, calib, "input")
    assert "Softmax" in r["skipped"] and odd.read_bytes() == before
    assert "too few" in tune_outputs(fp32, odd, calib[:10], "input")["skipped"]
    with pytest.raises(ConfigError, match="QDQ"):
        QuantConfig(format="QOperator", tune_epochs=1)
    with pytest.raises(ConfigError, match=">= 0"):
        QuantConfig(tune_epochs=-1)
