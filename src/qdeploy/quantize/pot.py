"""Power-of-two scales (seed 002 section 4): hardware rescales with shifts instead of multipliers.

scale' = 2 ** clamp(round(log2(scale)), -max_shift, max_shift)
symmetric: scale = max(|min|, |max|) / qmax, zero_point = 0
           (for quint8, qmax is the half range 127 and zero_point 128, PyTorch's convention)
affine:    scale = (max - min) / (qmax - qmin), zero_point = clamp(qmin - round(min / scale'), qmin, qmax)
           (the zero point is computed with the power-of-two scale, so that zero stays exact)
"""
from __future__ import annotations

import math

import torch
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver


def pot_scale(scale: float, max_shift: int = 8) -> float:
    """Nearest power of two (in log2) to `scale`, exponent clamped to [-max_shift, max_shift]."""
    if not scale > 0 or not math.isfinite(scale):
        return scale
    n = max(-max_shift, min(max_shift, round(math.log2(scale))))
    return 2.0 ** n


def pot_qparams(min_val: float, max_val: float, qmin: int, qmax: int, symmetric: bool,
                max_shift: int = 8) -> tuple[float, int]:
    """(scale, zero_point) with a power-of-two scale for the observed range [min_val, max_val]."""
    min_val, max_val = min(min_val, 0.0), max(max_val, 0.0)  # zero must be exactly representable
    if symmetric:
        amax = max(-min_val, max_val)
        half = qmax if qmin < 0 else (qmax - qmin) // 2
        scale = amax / half if amax > 0 else 1.0
        scale = pot_scale(scale, max_shift)
        zero_point = 0 if qmin < 0 else (qmin + qmax + 1) // 2
        return scale, zero_point
    span = max_val - min_val
    scale = pot_scale(span / (qmax - qmin) if span > 0 else 1.0, max_shift)
    zero_point = int(min(qmax, max(qmin, qmin - round(min_val / scale))))
    return scale, zero_point


class _PowerOfTwoMixin:
    """Turns an observer's min/max per tensor or per channel into power-of-two qparams."""

    def __init__(self, *args, max_shift: int = 8, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_shift = max_shift

    def _pot_qparams(self, mins: list[float], maxs: list[float]):
        sym = self.qscheme in (torch.per_tensor_symmetric, torch.per_channel_symmetric)
        pairs = [pot_qparams(lo, hi, int(self.quant_min), int(self.quant_max), sym, self.max_shift)
                 for lo, hi in zip(mins, maxs)]
        return (torch.tensor([p[0] for p in pairs], dtype=torch.float32),
                torch.tensor([p[1] for p in pairs], dtype=torch.int32))


class PowerOfTwoObserver(_PowerOfTwoMixin, MinMaxObserver):
    """Per-tensor MinMax observer whose scale is rounded to a power of two."""

    @torch.jit.export
    def calculate_qparams(self):
        if not (self.min_val.numel() and torch.isfinite(self.min_val)):  # nothing observed yet
            return torch.tensor([1.0]), torch.tensor([0], dtype=torch.int32)
        return self._pot_qparams([float(self.min_val)], [float(self.max_val)])


class PowerOfTwoPerChannelObserver(_PowerOfTwoMixin, PerChannelMinMaxObserver):
    """Per-channel MinMax observer (weights) whose scales are powers of two."""

    @torch.jit.export
    def calculate_qparams(self):
        return self._pot_qparams(self.min_val.tolist(), self.max_val.tolist())


def is_power_of_two(x: float) -> bool:
    m, _ = math.frexp(x)
    return x > 0 and m == 0.5
