"""Power-of-two scale math (seed 002 section 4) and the observers built on it."""
import math

import pytest
import torch

from qdeploy.quantize.pot import (
    PowerOfTwoObserver,
    PowerOfTwoPerChannelObserver,
    is_power_of_two,
    pot_qparams,
    pot_scale,
)


@pytest.mark.parametrize("scale,expect", [(1.0, 1.0), (0.25, 0.25), (0.3, 0.25), (0.37, 0.5), (3.0, 4.0),
                                          (2 ** -5 * 1.2, 2 ** -5), (1000.0, 256.0), (1e-6, 2 ** -8)])
def test_pot_scale_rounds_in_log2_and_clamps(scale, expect):
    assert pot_scale(scale, max_shift=8) == expect


def test_pot_scale_degenerate():
    assert pot_scale(0.0) == 0.0 and pot_scale(-1.0) == -1.0 and math.isnan(pot_scale(float("nan")))
    assert pot_scale(5.0, max_shift=2) == 4.0 and pot_scale(100.0, max_shift=2) == 4.0


def test_symmetric_int8():
    scale, zp = pot_qparams(-1.0, 0.5, -128, 127, symmetric=True)
    assert zp == 0 and is_power_of_two(scale)
    assert scale == pot_scale(1.0 / 127)  # seed: max(|min|, |max|) / qmax, then rounded


def test_symmetric_uint8_zero_point_is_midpoint():
    scale, zp = pot_qparams(-2.0, 2.0, 0, 255, symmetric=True)
    assert zp == 128 and is_power_of_two(scale)


@pytest.mark.parametrize("lo,hi", [(0.0, 6.0), (-0.3, 5.0), (-4.0, -1.0), (1.0, 2.0), (-1e-9, 1e-9)])
def test_affine_zero_point_in_range_and_zero_exact(lo, hi):
    scale, zp = pot_qparams(lo, hi, 0, 255, symmetric=False)
    assert is_power_of_two(scale) and 0 <= zp <= 255 and isinstance(zp, int)
    # zero is exactly representable: q(0) = zp dequantizes to 0
    assert (zp - zp) * scale == 0.0


def test_degenerate_range_gives_usable_params():
    scale, zp = pot_qparams(0.0, 0.0, 0, 255, symmetric=False)
    assert scale == 1.0 and zp == 0
    scale, zp = pot_qparams(0.0, 0.0, -128, 127, symmetric=True)
    assert scale == 1.0 and zp == 0


def test_observers_produce_powers_of_two():
    obs = PowerOfTwoObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    obs(torch.linspace(-0.7, 3.3, 100))
    s, z = obs.calculate_qparams()
    assert is_power_of_two(float(s)) and 0 <= int(z) <= 255
    pc = PowerOfTwoPerChannelObserver(dtype=torch.qint8, qscheme=torch.per_channel_symmetric, ch_axis=0)
    pc(torch.randn(8, 3, 3, 3) * torch.logspace(-2, 1, 8).view(8, 1, 1, 1))
    scales, zps = pc.calculate_qparams()
    assert len(scales) == 8 and all(is_power_of_two(float(v)) for v in scales) and (zps == 0).all()
    assert len(set(scales.tolist())) > 2  # per-channel scales differ


def test_is_power_of_two():
    assert is_power_of_two(0.125) and is_power_of_two(256.0) and not is_power_of_two(0.3) and not is_power_of_two(0.0)
