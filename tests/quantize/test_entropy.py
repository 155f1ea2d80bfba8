"""The numpy Entropy threshold search picks ORT's thresholds exactly, on histograms ORT's own collector builds."""
import contextlib
import io

import numpy as np
import pytest
from onnxruntime.quantization.calibrate import HistogramCollector
from scipy.stats import entropy

from qdeploy.quantize.entropy import entropy_threshold, kl_divergence
from qdeploy.quantize.ort import ENTROPY_BINS


def tensors(rng) -> dict[str, list[np.ndarray]]:
    """Activation-like batches: post-ReLU (half zeros), Gaussian, heavy-tailed, a few outliers, sparse values."""
    def batches(make):
        return [make().astype(np.float32) for _ in range(3)]
    return {
        "relu": batches(lambda: np.maximum(rng.normal(0.3, 1.0, (8, 16, 8, 8)), 0)),
        "gauss": batches(lambda: rng.normal(0, 2.0, (8, 32, 4, 4))),
        "cauchy": batches(lambda: np.clip(rng.standard_cauchy((8, 2048)), -500, 500)),
        "outlier": batches(lambda: np.concatenate([rng.normal(0, 0.1, 4000), [40.0, -3.0]])),
        "sparse": batches(lambda: rng.choice([-1.5, 0.0, 0.25, 2.0], 3000, p=[0.1, 0.6, 0.2, 0.1])),
    }


def collector(data) -> HistogramCollector:
    c = HistogramCollector("entropy", False, ENTROPY_BINS["num_bins"], ENTROPY_BINS["num_quantized_bins"], 99.99, "same")
    with contextlib.redirect_stdout(io.StringIO()):
        for i in range(3):
            c.collect({name: [b[i]] for name, b in data.items()})
    return c


@pytest.fixture(scope="module")
def histograms():
    return collector(tensors(np.random.default_rng(0)))


def test_thresholds_equal_orts(histograms):
    nq = ENTROPY_BINS["num_quantized_bins"]
    hists = histograms.histogram_dict
    assert {h[0].dtype.kind for h in hists.values()} == {"i"}  # ORT's collector counts in integers: the fast path
    picked = []
    for name, h in hists.items():
        ours = entropy_threshold(h, nq, fallback=None)
        theirs = histograms.get_entropy_threshold(h, nq)
        assert (ours[0], ours[1]) == (theirs[0], theirs[1]), name
        assert ours[0].dtype == theirs[0].dtype
        picked.append(float(ours[1] - ours[0]) / float(h[1][-1] - h[1][0]))
    # the search really chose: the relu/gauss/outlier ranges are clipped well inside the observed range
    assert sum(p < 0.9 for p in picked) >= 3, picked


def test_the_calibrators_results_equal_orts():
    from qdeploy.quantize.entropy import use_fast_entropy

    data = tensors(np.random.default_rng(1))
    plain, fast = collector(data), collector(data)

    class Calibrator:  # what use_fast_entropy sees of ORT's EntropyCalibrater: its collector
        collector = fast
    use_fast_entropy(Calibrator)
    with contextlib.redirect_stdout(io.StringIO()):
        a, b = plain.compute_collection_result(), fast.compute_collection_result()
    assert a.keys() == b.keys()
    for k in a:
        assert all(np.array_equal(x, y) for x, y in zip(a[k], b[k])), k


def test_float_histograms_go_to_orts_function():
    h = (np.array([1.0, 2.0, 3.0]), np.array([-1.0, 0.0, 1.0, 2.0]), -1.0, 2.0)
    assert entropy_threshold(h, 2, fallback=lambda hist, nq: ("orts", nq)) == ("orts", 2)


def test_kl_equals_scipy():
    rng = np.random.default_rng(2)
    for n in (129, 1000, 2048):
        p, q = rng.random(n).astype(np.float32) + 1e-4, rng.random(n).astype(np.float32) + 1e-4
        assert kl_divergence(p, q) == entropy(p, q)
