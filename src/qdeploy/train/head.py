"""Fine-tune a pretrained model to new classes on a CPU: frozen backbone, cached features, a trained head.

The backbone (everything up to the pooled features) runs once per image, in ONNX Runtime over the streamed
batches of data/; its features are cached on disk under a hash of the weights file, the image list and the
preprocessing, so a second run (another learning rate, more epochs) skips the expensive part. The head is a
linear layer trained on the cached features with AdamW and label smoothing, selected on held-out images;
the full model (backbone + new head) is saved as best.pth with the same best.json record `qdeploy train`
writes, so `qdeploy run --checkpoint best.pth` needs no other flag.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..artifacts import atomic_path, sha256, write_json
from ..data import ImageSet, PreprocessSpec, open_split
from ..errors import ConfigError
from .trainer import TrainResult, _save_state, curves, write_record


@dataclass
class HeadConfig:
    arch: str = "efficientnet-lite0"
    pretrained: str = "imagenet"
    epochs: int = 30
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    val_size: int = 5000            # class-balanced images held out of train for selection
    train_limit: int | None = None  # train on at most this many images (the rest of the split is unused)
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.val_size < 0:
            raise ConfigError("head training needs epochs >= 1, batch size >= 1, lr > 0 and val size >= 0")

    def as_dict(self) -> dict:
        return asdict(self)

    def with_(self, **kw) -> "HeadConfig":
        return replace(self, **kw)


class _Features(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.features(x)


def _backbone_session(model, spec: PreprocessSpec, work: Path):
    """The frozen backbone as an ONNX Runtime session (faster than eager PyTorch on a CPU)."""
    from ..export import ExportConfig, _torch_export
    from ..targets import open_session

    path = work / "backbone.onnx"
    example = torch.zeros(1, 3, spec.size, spec.size)
    path.write_bytes(_torch_export(_Features(model).eval(), example, ExportConfig(output_name="features")))
    return open_session(path)


def _key(weights: Path, images: ImageSet, spec: PreprocessSpec) -> str:
    h = hashlib.sha256(sha256(weights).encode())
    h.update(spec.to_json().encode())
    for p in images.paths or []:
        h.update(str(p).encode())
    if images.pixels is not None:
        h.update(hashlib.sha256(images.pixels.tobytes()).digest())
    return h.hexdigest()[:20]


def features(session, images: ImageSet, spec: PreprocessSpec, cache: Path, key: str, log) -> np.ndarray:
    """(N, D) float32 backbone features, streamed; read from / written to cache/<key>.npy."""
    path = cache / f"{key}.npy"
    if path.is_file():
        log(f"features: {len(images)} images from cache {path.name}")
        return np.load(path)
    t0 = time.perf_counter()
    parts = [session.run(b.x) for b in images.batches(spec, desc=f"features {images.source}")]
    feats = np.concatenate(parts).astype(np.float32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, feats)
    sec = time.perf_counter() - t0
    log(f"features: {len(images)} images in {sec:.0f} s ({len(images) / sec:.1f} img/s)")
    return feats


def _fit(cfg: HeadConfig, xtr, ytr, xva, yva, n_cls: int, log):
    """Linear head by AdamW on features; returns (best state, history, best epoch, best val acc)."""
    import torch.nn.functional as F

    torch.manual_seed(cfg.seed)
    xtr, ytr, xva, yva = map(torch.from_numpy, (xtr, ytr, xva, yva))
    head = torch.nn.Linear(xtr.shape[1], n_cls)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = max(1, len(xtr) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps)
    history, best = [], (None, 0, -1.0)
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(len(xtr))
        tot = correct = 0.0
        for i in range(steps):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            out = head(xtr[idx])
            loss = F.cross_entropy(out, ytr[idx], label_smoothing=cfg.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot, correct = tot + loss.item() * len(idx), correct + (out.argmax(1) == ytr[idx]).sum().item()
        with torch.no_grad():
            vo = head(xva)
            v_loss, v_acc = float(F.cross_entropy(vo, yva)), float((vo.argmax(1) == yva).float().mean())
        seen = steps * cfg.batch_size
        history.append({"epoch": epoch, "train_loss": tot / seen, "train_acc": correct / seen, "val_loss": v_loss,
                        "val_acc": v_acc})
        if v_acc > best[2]:
            best = ({k: v.clone() for k, v in head.state_dict().items()}, epoch, v_acc)
    log(f"head: best validation top-1 {best[2]:.4f} at epoch {best[1]} of {cfg.epochs}")
    return best[0], history, best[1], best[2]


def train_head(cfg: HeadConfig, data_root: str | Path, out: str | Path, spec: PreprocessSpec | None = None,
               test_split: str | None = "test", log=print) -> TrainResult:
    """Frozen pretrained backbone + a new linear head for root/train's classes; best.pth + best.json."""
    import tempfile

    from ..models import build_model, load_model, pretrained
    from .trainer import _split

    t_start, out = time.perf_counter(), Path(out)
    weights, stored_spec = pretrained(cfg.arch, cfg.pretrained)
    spec = spec or stored_spec
    model = load_model(cfg.arch, weights)
    train_set, val_set = _split(data_root, cfg, None)
    cache = out / ".features"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        session = _backbone_session(model, spec, Path(tmp))
        feats = {name: features(session, s, spec, cache, _key(weights, s, spec), log)
                 for name, s in (("train", train_set), ("val", val_set))}
        test = open_split(data_root, test_split, train_set.classes) if test_split else None
        test_feats = features(session, test, spec, cache, _key(weights, test, spec), log) if test else None
    state, history, best_epoch, best_acc = _fit(cfg, feats["train"], train_set.labels, feats["val"], val_set.labels,
                                               len(train_set.classes), log)
    full = build_model(cfg.arch, num_classes=len(train_set.classes))
    full.load_state_dict({**{k: v for k, v in model.state_dict().items() if not k.startswith("_fc.")},
                          **{f"_fc.{k}": v for k, v in state.items()}}, strict=True)
    _save_state(out / "best.pth", full)
    test_acc = None
    if test_feats is not None:
        with torch.no_grad():
            pred = torch.nn.functional.linear(torch.from_numpy(test_feats), state["weight"], state["bias"]).argmax(1)
        test_acc = float((pred.numpy() == test.labels).mean())
        log(f"test top-1 of the head chosen on validation (epoch {best_epoch}): {test_acc:.4f} on {len(test)} images")
    seconds = time.perf_counter() - t_start
    write_record(out, cfg.arch, train_set.classes, spec, cfg.as_dict(), best_epoch=best_epoch, best_val_acc=best_acc,
                 test_acc=test_acc, test_split=test_split, seconds=seconds, epochs_run=len(history), device="cpu",
                 gpu=None, frozen_backbone=True, pretrained=cfg.pretrained, feature_cache=str(cache))
    curves(history, out / "curves.png")
    write_json(out / "history.json", {"config": cfg.as_dict(), "history": history})
    return TrainResult(best=out / "best.pth", best_epoch=best_epoch, best_val_acc=best_acc, test_acc=test_acc,
                       seconds=seconds, epochs_run=len(history), device="cpu")
