"""The trainer on CPU at a tiny size: history, curves, best checkpoint, resume, early stopping."""
import json

import pytest
import torch

from qdeploy.models import load_model
from qdeploy.train import TrainConfig, lr_factor, train
from qdeploy.train.augment import augment, random_crop, random_erasing


def test_lr_schedules():
    c = TrainConfig(epochs=10, warmup_epochs=1)
    assert lr_factor(c, 0.0) < 0.01 and lr_factor(c, 1.0) == pytest.approx(1.0) and lr_factor(c, 10) < 1e-6
    r = TrainConfig(epochs=30, schedule="cosine-restarts", restart_period=5, restart_mult=2, warmup_epochs=0)
    assert lr_factor(r, 4.99) < 0.01 and lr_factor(r, 5.0) == pytest.approx(1.0)  # warm restart
    s = TrainConfig(epochs=8, schedule="step", warmup_epochs=0)
    assert lr_factor(s, 5) == pytest.approx(0.1) and lr_factor(s, 7) == pytest.approx(0.01)


def test_augment_shapes_and_effects():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 32, 32)
    cfg = TrainConfig.seed002(arch="resnet20-cifar")
    y = augment(x, cfg, g)
    assert y.shape == x.shape and not torch.equal(x, y) and y.min() >= 0 and y.max() <= 1
    crop = random_crop(torch.ones(4, 3, 8, 8), 2, g)
    assert crop.shape == (4, 3, 8, 8)
    erased = random_erasing(torch.zeros(64, 3, 16, 16), 1.0, (0.1, 0.2), g)
    frac = (erased == 0.5).float().mean().item()
    assert 0.05 < frac < 0.3


@pytest.mark.train
def test_train_cpu_tiny_and_resume(tmp_path, cifar):
    cfg = TrainConfig(arch="resnet20-cifar", epochs=2, batch_size=50, lr=0.05, train_limit=300, val_size=100,
                      device="cpu", warmup_epochs=0)
    res = train(cfg, cifar, tmp_path, test_split=None, log=lambda m: None)
    assert res.epochs_run == 2 and res.device == "cpu" and (tmp_path / "best.pth").is_file()
    hist = json.loads((tmp_path / "history.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2] and all(0 <= h["val_acc"] <= 1 for h in hist)
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    meta = json.loads((tmp_path / "best.json").read_text())
    assert meta["classes"][0] == "airplane" and meta["best_epoch"] in (1, 2)
    load_model("resnet20-cifar", tmp_path / "best.pth")  # feeds `qdeploy run`
    res2 = train(cfg.with_(epochs=3), cifar, tmp_path, resume=True, test_split=None, log=lambda m: None)
    hist = json.loads((tmp_path / "history.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3] and res2.epochs_run == 3


def test_validation_is_carved_from_train(tmp_path, cifar):
    from qdeploy.train.trainer import _split

    tr, val = _split(cifar, TrainConfig(val_size=200, train_limit=400), None)
    assert len(val) == 200 and not set(map(str, tr.paths)) & set(map(str, val.paths))
    assert all("/train/" in str(p) for p in val.paths)


def test_bundled_model_record():
    from qdeploy.bundled import bundled_run_dir

    d = bundled_run_dir()
    meta = json.loads((d / "train" / "best.json").read_text())
    report = json.loads((d / "report.json").read_text())
    assert meta["arch"] == "resnet20-cifar" and meta["device"] == "cuda" and meta["test_acc"] > 0.85
    fp32 = next(v for v in report["variants"] if v["name"] == "fp32")
    assert abs(fp32["metrics"]["top1"] - meta["test_acc"]) < 0.005  # ONNX on CPU reproduces the GPU figure
    total = sum(p.stat().st_size for p in d.rglob("*") if p.is_file())
    assert total < 5e6
