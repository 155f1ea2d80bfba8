"""Fine-tuning on a frozen pretrained trunk: cached trunk outputs, a trained tail, a record `qdeploy run` reads."""
import json

import numpy as np
import pytest
import torch

from conftest import CLASSES, tiny_imagefolder
from qdeploy.data import open_split
from qdeploy.errors import ConfigError
from qdeploy.models import load_model, pretrained
from qdeploy.source import SourceConfig, resolve_source
from qdeploy.train.head import HeadConfig, train_head

pytestmark = [pytest.mark.train, pytest.mark.lite0, pytest.mark.shared]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tiny_imagefolder(tmp_path_factory.mktemp("data"), per_class=6, split="train")
    return tiny_imagefolder(root, per_class=3, split="test")


def test_last_block_tune_is_cached_loadable_and_matches_the_full_model(tmp_path, root):
    logs = []
    cfg = HeadConfig(epochs=2, batch_size=16, val_size=20)
    assert cfg.tune == "last-block" and cfg.lr == 1e-3
    res = train_head(cfg, root, tmp_path / "out", log=logs.append)
    assert res.best.is_file() and 0 <= res.test_acc <= 1 and res.epochs_run == 2
    rec = json.loads((tmp_path / "out" / "best.json").read_text())
    assert rec["arch"] == "efficientnet-lite0" and rec["classes"] == CLASSES and rec["preprocess"]["size"] == 224
    assert rec["frozen_backbone"] and rec["trained_from"] == "_blocks.15"
    cached = sorted((tmp_path / "out" / ".features").glob("*.npy"))
    assert len(cached) == 3 and np.load(cached[0], mmap_mode="r").shape[1:] == (192, 7, 7)
    model = load_model("efficientnet-lite0", res.best).eval()
    assert model._fc.out_features == 10
    src = resolve_source(SourceConfig(checkpoint=str(res.best)))
    assert src.arch == "efficientnet-lite0" and src.preprocess.size == 224 and src.classes == CLASSES
    # the trunk is the pretrained one, untouched; the last block trained
    weights, spec = pretrained("efficientnet-lite0", "imagenet")
    ref = torch.load(weights, weights_only=True)
    sd = model.state_dict()
    assert torch.equal(sd["_blocks.14._project_conv.weight"], ref["_blocks.14._project_conv.weight"])
    assert not torch.equal(sd["_blocks.15._project_conv.weight"], ref["_blocks.15._project_conv.weight"])
    # the accuracy measured on cached maps is the saved model's, run end to end on the images themselves
    test = open_split(root, "test", CLASSES)
    with torch.no_grad():
        pred = model(torch.from_numpy(test.load(spec))).argmax(1).numpy()
    assert abs(float((pred == test.labels).mean()) - res.test_acc) < 1e-9
    logs.clear()
    train_head(cfg.with_(epochs=1), root, tmp_path / "out", log=logs.append)
    assert sum("from cache" in m for m in logs) == 3  # a second run re-uses every feature file


def test_linear_probe_caches_pooled_features_apart(tmp_path, root):
    res = train_head(HeadConfig(tune="fc", epochs=2, batch_size=16, val_size=20), root, tmp_path / "out", log=lambda m: None)
    cached = list((tmp_path / "out" / ".features").glob("*.npy"))
    assert res.epochs_run == 2 and np.load(cached[0], mmap_mode="r").shape[1:] == (1280,)
    with pytest.raises(ConfigError, match="tune"):
        HeadConfig(tune="everything")


@pytest.mark.pipeline
def test_fine_tuned_lite0_runs_through_the_pipeline_from_its_record(tmp_path, root):
    """`qdeploy run --checkpoint best.pth` needs no other flag: arch, classes, 224-px preprocessing come from
    best.json; seed 004's dynamic INT8 and per-tensor weights are either measured or refused with the
    agreement they reached (never silently shipped)."""
    from conftest import run_cli
    from qdeploy.results import RunResult

    res = train_head(HeadConfig(epochs=1, batch_size=16, val_size=20), root, tmp_path / "ft", log=lambda m: None)
    out = tmp_path / "run"
    r = run_cli("run", "--targets", "ort-cpu", "--checkpoint", res.best, "--data", root, "--calib-split", "train", "--eval-split", "test",
                "--calib-size", 20, "--variants", "default,dynamic,per-tensor", "--out", out, "--bench-runs", 10,
                "--bench-batches", "1", "--bench-seconds", 0.05)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "arch from record best.json" in r.stderr and "preprocess from record best.json" in r.stderr
    run = RunResult.load(out / "report.json")
    assert run.classes == CLASSES and run.fp32.metrics.top1 is not None and run.data.eval_images == 30
    md = (out / "report.md").read_text()
    for name in ("default", "dynamic", "per-tensor"):
        v = run.get(name)
        if v.ok:
            assert v.measured and (out / f"int8_{name}.onnx").is_file() and f"| {name} | " in md
        else:
            assert not (out / f"int8_{name}.onnx").exists() and v.check.agreement < 0.8
            assert f"| {name} | FAILED, not written |" in md
