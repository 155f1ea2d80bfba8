"""`qdeploy train`: a checkpoint that feeds `qdeploy run`, with curves, history, early stopping, resume."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import atomic_path, write_json
from ..data import PreprocessSpec, balanced_indices, open_split
from ..errors import CheckpointError, ConfigError
from ..plotting import pyplot, save_png
from .augment import augment
from .config import TrainConfig


@dataclass
class TrainResult:
    best: Path
    best_epoch: int
    best_val_acc: float
    test_acc: float | None
    seconds: float
    epochs_run: int
    device: str


def _device(cfg: TrainConfig):
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for but no CUDA GPU is visible; use --device cpu")
    return torch.device("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


def lr_factor(cfg: TrainConfig, t: float) -> float:
    """Learning-rate multiplier at fractional epoch t."""
    if t < cfg.warmup_epochs:
        return (t + 1e-3) / cfg.warmup_epochs
    if cfg.schedule == "step":
        return 0.1 ** sum(t >= f * cfg.epochs for f in (0.5, 0.75))
    if cfg.schedule == "cosine":
        p = (t - cfg.warmup_epochs) / max(1e-9, cfg.epochs - cfg.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, p)))
    period, start = cfg.restart_period, cfg.warmup_epochs  # SGDR
    while t - start >= period:
        start, period = start + period, period * cfg.restart_mult
    return 0.5 * (1 + math.cos(math.pi * (t - start) / period))


def _split(root, cfg: TrainConfig, classes):
    train_all = open_split(root, "train", classes)
    val_idx = balanced_indices(train_all.labels, cfg.val_size, cfg.seed) if cfg.val_size else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(train_all)), val_idx)
    if cfg.train_limit:
        rest = rest[balanced_indices(train_all.labels[rest], cfg.train_limit, cfg.seed)]
    return train_all.subset(rest), train_all.subset(val_idx)


def to_device(pixels: np.ndarray, device):
    import torch

    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))).to(device)  # uint8 NCHW


class Normalizer:
    def __init__(self, spec: PreprocessSpec, device):
        import torch

        self.mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)

    def __call__(self, x):
        return (x - self.mean) / self.std


def evaluate_tensor(model, images, labels, norm, device, bf16: bool, batch: int = 1000) -> tuple[float, float]:
    """(loss, accuracy) of `model` on uint8 NCHW images already on `device`."""
    import torch
    import torch.nn.functional as F

    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
        for i in range(0, len(images), batch):
            x = norm(images[i:i + batch].float() / 255)
            out = model(x.contiguous(memory_format=torch.channels_last)).float()
            y = labels[i:i + batch]
            loss += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
    return loss / max(1, len(images)), correct / max(1, len(images))


def _train_epoch(model, opt, images, labels, norm, cfg: TrainConfig, epoch: int, gen, device, steps_per_epoch):
    import torch
    import torch.nn.functional as F

    model.train()
    perm = torch.randperm(len(images), device=device, generator=gen)
    tot_loss, tot_correct, seen = 0.0, 0.0, 0
    use_bf16 = cfg.bf16 and device.type == "cuda"
    for step in range(steps_per_epoch):
        idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(cfg, epoch + step / steps_per_epoch)
        x = norm(augment(images[idx].float() / 255, cfg, gen))
        y = labels[idx]
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lam, y2 = 1.0, y
        if cfg.mixup_alpha > 0:
            lam = float(np.random.default_rng(cfg.seed * 100003 + epoch * 1009 + step).beta(cfg.mixup_alpha, cfg.mixup_alpha))
            j = torch.randperm(len(x), device=device, generator=gen)
            x, y2 = lam * x + (1 - lam) * x[j], y[j]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = model(x)
        out = out.float()
        loss = lam * F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing) + \
            (1 - lam) * F.cross_entropy(out, y2, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        tot_loss += loss.item() * len(x)
        tot_correct += (lam * (out.argmax(1) == y).float() + (1 - lam) * (out.argmax(1) == y2).float()).sum().item()
        seen += len(x)
    return tot_loss / seen, tot_correct / seen


def train(cfg: TrainConfig, data_root: str | Path, out: str | Path, spec: PreprocessSpec | None = None,
          classes: list[str] | None = None, resume: bool = False, test_split: str | None = "test",
          log=print) -> TrainResult:
    """Train `cfg.arch` on root/train (minus a class-balanced validation split); select on validation."""
    import torch

    from ..models import build_model

    spec, out, t_start = spec or PreprocessSpec(), Path(out), time.perf_counter()
    device = _device(cfg)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    train_set, val_set = _split(data_root, cfg, classes)
    log(f"train: {len(train_set)} images, validation: {len(val_set)} (held out of train), device {device}")
    xs = to_device(train_set.pixels_uint8(spec, progress=True), device)
    ys = torch.from_numpy(train_set.labels).to(device)
    xv = to_device(val_set.pixels_uint8(spec), device) if len(val_set) else None
    yv = torch.from_numpy(val_set.labels).to(device) if len(val_set) else None
    model = build_model(cfg.arch, num_classes=len(train_set.classes), arch_kwargs=cfg.arch_kwargs,
                        input_size=spec.size).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = _optimizer(cfg, model)
    norm = Normalizer(spec, device)
    history, start_epoch, best = [], 0, {"acc": -1.0, "epoch": 0}
    if resume:
        start_epoch, history, best = _resume(out, model, opt, device)
        log(f"resumed after epoch {start_epoch} (best validation {best['acc']:.4f} at epoch {best['epoch']})")
    steps = max(1, len(xs) // cfg.batch_size)
    stale = 0
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        tr_loss, tr_acc = _train_epoch(model, opt, xs, ys, norm, cfg, epoch, gen, device, steps)
        v_loss, v_acc = (evaluate_tensor(model, xv, yv, norm, device, cfg.bf16) if xv is not None
                         else (tr_loss, tr_acc))
        if device.type == "cuda":
            torch.cuda.synchronize()
        rec = {"epoch": epoch + 1, "train_loss": tr_loss, "train_acc": tr_acc, "val_loss": v_loss, "val_acc": v_acc,
               "lr": cfg.lr * lr_factor(cfg, epoch + 1 - 1e-9), "sec": time.perf_counter() - t0}
        history.append(rec)
        log(f"epoch {epoch + 1}/{cfg.epochs}: train loss {tr_loss:.3f} acc {tr_acc:.4f} | val loss {v_loss:.3f} "
            f"acc {v_acc:.4f} | {rec['sec']:.1f}s")
        if v_acc > best["acc"]:
            best, stale = {"acc": v_acc, "epoch": epoch + 1}, 0
            _save_state(out / "best.pth", model)
        else:
            stale += 1
        _save_last(out, model, opt, epoch + 1, best, history, cfg)
        if cfg.patience and stale >= cfg.patience:
            log(f"early stop: no validation improvement for {cfg.patience} epochs")
            break
    return _finish(cfg, out, spec, train_set, data_root, history, best, test_split, device, t_start, log)


def _optimizer(cfg: TrainConfig, model):
    """SGD with momentum (the CNN recipes), or AdamW with no decay on norms, biases and embeddings (transformers)."""
    import torch

    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    decay = [p for p in model.parameters() if p.dim() > 1 and p.shape[0] != 1]
    rest = [p for p in model.parameters() if not (p.dim() > 1 and p.shape[0] != 1)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)


def _save_state(path: Path, model) -> None:
    import torch

    state = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu()
             for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _save_last(out: Path, model, opt, epoch: int, best: dict, history: list, cfg: TrainConfig) -> None:
    import torch

    with atomic_path(out / "last.pth") as tmp:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "best_acc": best["acc"], "best_epoch": best["epoch"]}, tmp)
    write_json(out / "history.json", {"config": cfg.as_dict(), "history": history})


def _resume(out: Path, model, opt, device):
    import torch

    path = out / "last.pth"
    if not path.is_file():
        raise CheckpointError(f"nothing to resume: {path} not found; train without --resume first")
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    history = json.loads((out / "history.json").read_text())["history"]
    return int(state["epoch"]), history, {"acc": float(state["best_acc"]), "epoch": int(state["best_epoch"])}


def _finish(cfg, out, spec, train_set, data_root, history, best, test_split, device, t_start, log) -> TrainResult:
    import torch

    from ..models import build_model

    test_acc = None
    if test_split:
        # Reported once, on the selected checkpoint; never used to select it.
        test = open_split(data_root, test_split, train_set.classes)
        model = build_model(cfg.arch, num_classes=len(train_set.classes), arch_kwargs=cfg.arch_kwargs,
                            input_size=spec.size).to(device)
        model.load_state_dict(torch.load(out / "best.pth", map_location=device, weights_only=True))
        model = model.to(memory_format=torch.channels_last)
        _, test_acc = evaluate_tensor(model, to_device(test.pixels_uint8(spec), device),
                                      torch.from_numpy(test.labels).to(device), Normalizer(spec, device), device,
                                      bf16=False)
        log(f"test top-1 of the best checkpoint (epoch {best['epoch']}): {test_acc:.4f}")
    seconds = time.perf_counter() - t_start
    write_record(out, cfg.arch, train_set.classes, spec, cfg.as_dict(), arch_kwargs=cfg.arch_kwargs,
                 best_epoch=best["epoch"],
                 best_val_acc=best["acc"], test_acc=test_acc, test_split=test_split, seconds=seconds,
                 epochs_run=len(history), device=str(device),
                 gpu=torch.cuda.get_device_name() if device.type == "cuda" else None)
    curves(history, out / "curves.png")
    return TrainResult(best=out / "best.pth", best_epoch=best["epoch"], best_val_acc=best["acc"], test_acc=test_acc,
                       seconds=seconds, epochs_run=len(history), device=str(device))


def write_record(out: Path, arch: str, classes: list[str], spec: PreprocessSpec, config: dict, **facts) -> Path:
    """best.json beside best.pth: what `qdeploy run --checkpoint best.pth` reads (arch, classes,
    preprocessing), plus how the checkpoint was made."""
    return write_json(out / "best.json", {"arch": arch, "classes": classes, "preprocess": json.loads(spec.to_json()),
                                          "config": config, **facts})


def curves(history: list[dict], path: Path) -> Path:
    ep = [h["epoch"] for h in history]
    fig, (a, b) = pyplot().subplots(1, 2, figsize=(10, 3.6))
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    a.plot(ep, [h["val_loss"] for h in history], label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend(), a.grid(alpha=0.3)
    b.plot(ep, [100 * h["train_acc"] for h in history], label="train")
    b.plot(ep, [100 * h["val_acc"] for h in history], label="validation")
    b.set_xlabel("epoch"), b.set_ylabel("top-1 (%)"), b.legend(), b.grid(alpha=0.3)
    return save_png(fig, path)
