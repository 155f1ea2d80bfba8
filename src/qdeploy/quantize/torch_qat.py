"""Quantization-aware training from the FP32 checkpoint (seed 002), on CPU (subset) or CUDA."""
from __future__ import annotations

import copy
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .torch_eager import TorchQuantConfig, qconfig_for, quantizable_from


def _device(cfg: TorchQuantConfig):
    want_cuda = cfg.device in ("auto", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if want_cuda else "cpu")


def qat(model_fp32, train_pixels: np.ndarray, train_labels: np.ndarray, spec, cfg: TorchQuantConfig, log=print):
    """Fine-tune a fake-quantized copy of `model_fp32`; returns (converted INT8 model, per-epoch history)."""
    from ..train.augment import random_crop, random_erasing, random_flip

    torch.backends.quantized.engine = cfg.backend
    device = _device(cfg)
    gen = torch.Generator(device=device).manual_seed(0)
    q = quantizable_from(copy.deepcopy(model_fp32)).train().fuse_model(qat=True)
    q.qconfig = qconfig_for(cfg, qat=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.prepare_qat(q, inplace=True)
    q.to(device)
    teacher = copy.deepcopy(model_fp32).to(device).eval() if cfg.qat_distill > 0 else None
    xs = torch.from_numpy(np.ascontiguousarray(train_pixels.transpose(0, 3, 1, 2))).to(device)
    ys = torch.from_numpy(train_labels).to(device)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    opt = torch.optim.SGD(q.parameters(), lr=cfg.qat_lr, momentum=0.9, weight_decay=5e-5)
    steps = max(1, len(xs) // cfg.qat_batch_size)
    history = []
    for epoch in range(cfg.qat_epochs):
        if epoch >= cfg.freeze_observer_epoch:
            q.apply(torch.ao.quantization.disable_observer)
        if epoch >= cfg.freeze_bn_epoch:
            q.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        t0, tot, correct, seen = time.perf_counter(), 0.0, 0, 0
        perm = torch.randperm(len(xs), device=device, generator=gen)
        q.train()
        for step in range(steps):
            lr = cfg.qat_lr * 0.5 * (1 + np.cos(np.pi * (epoch + step / steps) / cfg.qat_epochs))
            for g in opt.param_groups:
                g["lr"] = lr
            idx = perm[step * cfg.qat_batch_size:(step + 1) * cfg.qat_batch_size]
            x = random_flip(random_crop(xs[idx].float() / 255, 4, gen), gen)
            x = random_erasing(x, cfg.qat_erasing_p, (0.05, 0.2), gen)
            x = (x - mean) / std
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
        history.append({"epoch": epoch + 1, "train_loss": tot / seen, "train_acc": correct / seen,
                        "sec": time.perf_counter() - t0, "images": seen, "device": str(device)})
        log(f"qat epoch {epoch + 1}/{cfg.qat_epochs}: loss {tot / seen:.4f}, acc {correct / seen:.4f} "
            f"({history[-1]['sec']:.1f}s on {device})")
    q = q.cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.convert(q, inplace=False), history
