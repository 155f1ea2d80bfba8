"""Image-to-image scoring: PSNR/SSIM/max error per image, checked against scikit-image computed here."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from qdeploy.tasks import get_task
from qdeploy.tasks.image import ImageMetrics, ImageScorer


def _images(seed=0, n=3, size=40):
    rng = np.random.default_rng(seed)
    ref = rng.random((n, 3, size, size), dtype=np.float32)
    noise = np.stack([rng.normal(0, s, (3, size, size)) for s in (0.01, 0.05, 0.2)[:n]]).astype(np.float32)
    return ref, np.clip(ref + noise, 0, 1)


def test_scorer_matches_skimage_per_image_and_finds_the_worst():
    ref, out = _images()
    s = get_task("image-to-image").scorer([], False, True, names=["a.png", "b.png", "c.png"])
    s.update(out[:2], None, ref[:2])   # two batches: per-image facts survive batching
    s.update(out[2:], None, ref[2:])
    m = s.result()
    want_psnr = [peak_signal_noise_ratio(r, o, data_range=1.0) for r, o in zip(ref, out)]
    want_ssim = [structural_similarity(np.moveaxis(r, 0, -1), np.moveaxis(o, 0, -1), channel_axis=-1, data_range=1.0)
                 for r, o in zip(ref, out)]
    assert m.psnr == pytest.approx(want_psnr, abs=1e-6)
    assert m.ssim == pytest.approx(want_ssim, abs=1e-6)
    assert m.psnr_mean == pytest.approx(np.mean(want_psnr)) and m.psnr_min == pytest.approx(min(want_psnr))
    assert m.worst == 2 and m.worst_name == "c.png"       # the noisiest image
    assert want_psnr[0] > want_psnr[1] > want_psnr[2]      # the data itself has that order
    assert m.max_abs_diff == pytest.approx(float(np.abs(out - ref).max()))
    assert ImageMetrics.from_dict(m.as_dict()) == m


def test_identical_outputs_are_capped_not_infinite_and_reference_has_no_psnr():
    ref, _ = _images(n=1)
    s = ImageScorer(with_reference=True)
    s.update(ref, None, ref)
    assert s.result().psnr_mean == 100.0
    r = ImageScorer(with_reference=False)
    r.update(ref, None, None)
    assert r.result().psnr_mean is None and r.result().n == 1


def test_logits_are_refused_with_a_hint():
    s = ImageScorer(with_reference=True)
    with pytest.raises(ValueError, match="--task classification"):
        s.update(np.zeros((2, 10), np.float32), None, np.zeros((2, 10), np.float32))


def test_check_flags_collapse_below_20_db():
    ref, out = _images()
    t = get_task("image-to-image")
    assert not t.check(ref[:1], out[:1], 0.0).collapsed          # ~40 dB
    bad = np.clip(ref + 0.3, 0, 1)
    f = t.check(ref, bad, 0.0)
    assert f.collapsed and f.psnr < 20 and f.agreement is None
