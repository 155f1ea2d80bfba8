"""Quantization-aware training from the FP32 checkpoint (seed 002), on CPU (subset) or CUDA.

QAT starts where PTQ ends: the activation fake-quantizers take PTQ's calibrated ranges (the same
observers on the same calibration images) and keep them, so before the first step the fake-quantized
model is the PTQ model. Training then moves the weights (distilled from the FP32 model) to reduce the
error those fixed grids cause. After each epoch the INT8 model is converted and scored on held-out
training images; the best epoch wins, and epoch 0 (the PTQ starting point) takes part, so QAT never
hands back a model that validates worse than the one it started from.
"""
from __future__ import annotations

import copy
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from ..models.logits import torch_logits
from ..recipes import MEMORIZED_AT, TorchQuantConfig
from .torch_eager import _calibrate, qconfig_for, quantizable_from


def _device(cfg: TorchQuantConfig):
    want_cuda = cfg.device in ("auto", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if want_cuda else "cpu")


def _activation_fake_quants(model):
    from torch.ao.quantization import FakeQuantizeBase

    return [m for n, m in model.named_modules()
            if isinstance(m, FakeQuantizeBase) and not n.endswith("weight_fake_quant")]


def prepare_qat_model(model_fp32, calib_x: np.ndarray, cfg: TorchQuantConfig):
    """Fused, fake-quantized copy of `model_fp32` whose activation grids are PTQ's (cfg.qat_init='ptq')
    or left to moving-average observers during training (cfg.qat_init='observe')."""
    from torch.ao.quantization import disable_fake_quant, enable_fake_quant

    torch.backends.quantized.engine = cfg.backend
    q = quantizable_from(copy.deepcopy(model_fp32), qat=True).train().fuse_model(qat=True)
    q.qconfig = qconfig_for(cfg, qat=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.prepare_qat(q, inplace=True)
        if cfg.qat_init == "ptq":
            q.eval().apply(disable_fake_quant)  # eval: BN uses (and keeps) the checkpoint's statistics
            _calibrate(q, calib_x)          # FP32 activations, PTQ's observers, PTQ's images
            q.apply(enable_fake_quant)
            for fq in _activation_fake_quants(q):
                fq.disable_observer()
    return q


def convert(q):
    """The INT8 model of a fake-quantized one (a copy; training can go on with `q`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.convert(copy.deepcopy(q).cpu().eval().requires_grad_(False), inplace=False)


def _score(qmodel, x: np.ndarray, y: np.ndarray, ref: torch.Tensor) -> dict:
    logits = torch_logits(qmodel, x)
    pred = logits.argmax(1)
    kl = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(ref, 1), log_target=True, reduction="batchmean")
    return {"val_top1": float((pred.numpy() == y).mean()),
            "val_loss": float(F.cross_entropy(logits, torch.from_numpy(y).long())),
            "val_agreement": float((pred == ref.argmax(1)).float().mean()),
            "val_kl_fp32": float(kl)}


def _train_epoch(q, teacher, xs, ys, norm, opt, gen, cfg: TorchQuantConfig, epoch: int, steps: int):
    """One epoch of distilled fine-tuning on GPU-side augmented batches; (loss sum, correct, seen)."""
    from ..train.augment import random_crop, random_erasing, random_flip

    tot, correct, seen = 0.0, 0, 0
    perm = torch.randperm(len(xs), device=xs.device, generator=gen)
    q.train()
    for step in range(steps):
        lr = cfg.qat_lr * 0.5 * (1 + np.cos(np.pi * (epoch + step / steps) / cfg.qat_epochs))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = perm[step * cfg.qat_batch_size:(step + 1) * cfg.qat_batch_size]
        x = random_flip(random_crop(xs[idx].float() / 255, 4, gen), gen)
        x = random_erasing(x, cfg.qat_erasing_p, (0.05, 0.2), gen)
        x = norm(x)
        out = q(x)
        loss = F.cross_entropy(out, ys[idx], label_smoothing=cfg.qat_label_smoothing)
        if teacher is not None:
            with torch.no_grad():
                soft = F.softmax(teacher(x) / cfg.qat_temperature, dim=1)
            kd = F.kl_div(F.log_softmax(out / cfg.qat_temperature, dim=1), soft, reduction="batchmean")
            loss = (1 - cfg.qat_distill) * loss + cfg.qat_distill * cfg.qat_temperature ** 2 * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot += loss.item() * len(idx)
        correct += (out.argmax(1) == ys[idx]).sum().item()
        seen += len(idx)
    return tot, correct, seen


class _EpochPicker:
    """Scores each epoch's INT8 model on held-out images and keeps the best: by top-1 then loss, or, on
    images FP32 has memorised (top-1 there says nothing), by agreement with FP32 then KL divergence."""

    def __init__(self, model_fp32, val):
        self.val, self.ref, self.memorized, self.best, self.key = val, None, False, None, None
        if val is not None:
            self.ref = torch_logits(model_fp32, val[0])
            self.memorized = float((self.ref.argmax(1).numpy() == val[1]).mean()) >= MEMORIZED_AT

    def consider(self, epoch: int, row: dict, model) -> None:
        if self.val is None:
            return
        qm = convert(model)
        row.update(_score(qm, self.val[0], self.val[1], self.ref))
        key = (row["val_agreement"], -row["val_kl_fp32"]) if self.memorized else (row["val_top1"], -row["val_loss"])
        if self.key is None or key > self.key:
            self.best, self.key = (epoch, qm), key


def qat(model_fp32, train_pixels: np.ndarray, train_labels: np.ndarray, spec, cfg: TorchQuantConfig,
        calib_x: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None = None, log=print):
    """Fine-tune a fake-quantized copy of `model_fp32` on (train_pixels, train_labels).

    val: normalised (x, y) held out from training; with it every epoch's INT8 model is scored and the
    best one is returned (epoch 0, the PTQ start, included): by top-1 then loss, or, on images FP32 has
    memorised, by agreement with FP32 then KL divergence from it.
    Returns (converted INT8 model, per-epoch history, chosen epoch)."""
    from torch.ao.quantization import disable_observer

    from ..train.trainer import Normalizer, to_device

    device = _device(cfg)
    gen = torch.Generator(device=device).manual_seed(0)
    q = prepare_qat_model(model_fp32, calib_x, cfg)
    q.to(device)
    picker = _EpochPicker(model_fp32, val)
    teacher = copy.deepcopy(model_fp32).to(device).eval() if cfg.qat_distill > 0 else None
    xs, ys = to_device(train_pixels, device), torch.from_numpy(train_labels).to(device)
    norm = Normalizer(spec, device)
    opt = torch.optim.SGD(q.parameters(), lr=cfg.qat_lr, momentum=0.9, weight_decay=5e-5)
    steps = max(1, len(xs) // cfg.qat_batch_size)
    history = []
    if val is not None and cfg.qat_init == "ptq":
        start = {"epoch": 0, "note": "PTQ starting point"}
        picker.consider(0, start, q)
        history.append(start)
        log(f"qat epoch 0 (PTQ start): val top-1 {start['val_top1']:.4f}, agreement {start['val_agreement']:.4f}")
    for epoch in range(cfg.qat_epochs):
        if epoch >= cfg.freeze_observer_epoch:
            q.apply(disable_observer)
        if epoch >= cfg.freeze_bn_epoch:
            q.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        t0 = time.perf_counter()
        tot, correct, seen = _train_epoch(q, teacher, xs, ys, norm, opt, gen, cfg, epoch, steps)
        row = {"epoch": epoch + 1, "train_loss": tot / seen, "train_acc": correct / seen,
               "sec": time.perf_counter() - t0, "images": seen, "device": str(device)}
        picker.consider(epoch + 1, row, q)
        history.append(row)
        extra = f", val top-1 {row['val_top1']:.4f}, agreement {row['val_agreement']:.4f}" if val is not None else ""
        log(f"qat epoch {epoch + 1}/{cfg.qat_epochs}: loss {tot / seen:.4f}, acc {correct / seen:.4f}{extra} "
            f"({row['sec']:.1f}s on {device})")
    chosen, qmodel = picker.best if picker.best is not None else (cfg.qat_epochs, convert(q))
    # The INT8 model is laid out again once training memory is gone. Converted (or deep-copied) while
    # it was alive, every quantized conv of the ResNet18 ran 26-67 % slower in PyTorch (whole model 2.9
    # vs 2.1 ms at batch 1, same structure and packed-weight metadata as PTQ's); a copy made afterwards
    # runs at PTQ's speed. Memory placement is the likely cause; it was not pinned down further.
    del q, opt, teacher, xs, ys, picker
    return copy.deepcopy(qmodel).eval(), history, chosen
