"""Batched augmentation on the training device (GPU or CPU): no per-image Python loop.

Inputs are float images in [0, 1], NCHW; normalisation happens after augmentation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import TrainConfig


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n,), device=x.device, generator=gen)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    return xp[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None],
              rows, cols]


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    if strength <= 0:
        return x
    n = x.shape[0]

    def factor():
        return 1 + (torch.rand(n, 1, 1, 1, device=x.device, generator=gen) * 2 - 1) * strength

    x = x * factor()  # brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor() + mean  # contrast
    gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    x = (x - gray) * factor() + gray  # saturation
    return x.clamp(0, 1)


def random_affine(x: torch.Tensor, degrees: float, translate: float, scale: tuple[float, float],
                  gen: torch.Generator) -> torch.Tensor:
    if degrees <= 0 and translate <= 0 and scale == (1.0, 1.0):
        return x
    n = x.shape[0]

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(n, device=x.device, generator=gen)

    ang = uniform(-degrees, degrees) * math.pi / 180
    s = uniform(*scale)
    tx, ty = uniform(-translate, translate) * 2, uniform(-translate, translate) * 2
    cos, sin = torch.cos(ang) / s, torch.sin(ang) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_erasing(x: torch.Tensor, p: float, area: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    if p <= 0:
        return x
    n, _, h, w = x.shape
    dev = x.device
    frac = area[0] + (area[1] - area[0]) * torch.rand(n, device=dev, generator=gen)
    log_r = math.log(0.3) + (math.log(3.3) - math.log(0.3)) * torch.rand(n, device=dev, generator=gen)
    ratio = torch.exp(log_r)
    eh = (torch.sqrt(frac * h * w * ratio)).clamp(1, h).long()
    ew = (torch.sqrt(frac * h * w / ratio)).clamp(1, w).long()
    y0 = (torch.rand(n, device=dev, generator=gen) * (h - eh + 1)).long()
    x0 = (torch.rand(n, device=dev, generator=gen) * (w - ew + 1)).long()
    ys, xs = torch.arange(h, device=dev)[None, :], torch.arange(w, device=dev)[None, :]
    in_y = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])
    in_x = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])
    apply = torch.rand(n, device=dev, generator=gen) < p
    mask = (in_y[:, :, None] & in_x[:, None, :] & apply[:, None, None])[:, None]
    return torch.where(mask, torch.full_like(x, 0.5), x)


def augment(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    x = random_crop(x, cfg.crop_padding, gen)
    if cfg.flip:
        x = random_flip(x, gen)
    x = color_jitter(x, cfg.color_jitter, gen)
    x = random_affine(x, cfg.rotation, cfg.translate, cfg.scale, gen)
    return random_erasing(x, cfg.erasing_p, cfg.erasing_scale, gen)
