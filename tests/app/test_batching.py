"""Dynamic batching: concurrent requests share runs, every request gets exactly its own rows back, failures reach
only their batch, a lone request does not wait; then with real ORT sessions of the bundled run."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from qdeploy.app.batching import DynamicBatcher
from qdeploy.bundled import bundled_run_dir


class SlowModel:
    """Row-wise model (each output row depends on its input row only) that records its batch sizes."""

    def __init__(self, seconds=0.02, fail_on=None):
        self.seconds, self.fail_on, self.sizes, self.active, self.most_active = seconds, fail_on, [], 0, 0
        self.lock = threading.Lock()

    def __call__(self, x):
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self.sizes.append(len(x))
        try:
            time.sleep(self.seconds)
            if self.fail_on is not None and (x[:, 0] == self.fail_on).any():
                raise RuntimeError("bad row")
            return np.stack([x[:, 0] * 2, x[:, 1] + 1], axis=1)
        finally:
            with self.lock:
                self.active -= 1


def _requests(n):
    """n requests of 1..3 rows, each row tagged with its request and position."""
    rng = np.random.default_rng(0)
    return [np.stack([np.full(k, i, np.float32), np.arange(k, dtype=np.float32)], 1)
            for i, k in enumerate(rng.integers(1, 4, n))]


def test_concurrent_requests_share_runs_and_get_their_own_rows_back():
    model = SlowModel()
    b = DynamicBatcher(model, max_rows=8, max_delay_s=0.005)
    reqs = _requests(48)
    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(b, reqs))
    for x, y in zip(reqs, outs):
        np.testing.assert_array_equal(y, np.stack([x[:, 0] * 2, x[:, 1] + 1], 1))
    rows = sum(len(x) for x in reqs)
    assert sum(model.sizes) == rows == b.stats.rows            # nothing run twice, nothing dropped
    assert len(model.sizes) == b.stats.runs < len(reqs)        # fewer runs than requests ...
    assert max(model.sizes) <= 8 and b.stats.largest == max(model.sizes) > 3   # ... and real batches, bounded
    assert model.most_active == 1                              # one batch at a time per model
    b.close()


def test_a_lone_request_does_not_wait_for_company():
    b = DynamicBatcher(SlowModel(0.0), max_rows=16, max_delay_s=5.0)
    t0 = time.perf_counter()
    for x in _requests(3):           # one after another: each finds the model idle
        b(x)
    assert time.perf_counter() - t0 < 2.0      # far below one 5 s delay
    assert b.stats.runs == 3 and b.stats.largest <= 3
    b.close()


def test_a_failed_run_fails_only_its_own_batch_and_the_batcher_goes_on():
    model = SlowModel(0.02, fail_on=5)
    b = DynamicBatcher(model, max_rows=4, max_delay_s=0.005)
    reqs = _requests(24)

    def call(x):
        try:
            return b(x)
        except RuntimeError as exc:
            return exc

    with ThreadPoolExecutor(12) as pool:
        outs = list(pool.map(call, reqs))
    failed = [i for i, o in enumerate(outs) if isinstance(o, RuntimeError)]
    assert 5 in failed and len(failed) < len(reqs)
    for i, (x, y) in enumerate(zip(reqs, outs)):
        if i not in failed:
            np.testing.assert_array_equal(y, np.stack([x[:, 0] * 2, x[:, 1] + 1], 1))
    np.testing.assert_array_equal(b(reqs[0]), np.stack([reqs[0][:, 0] * 2, reqs[0][:, 1] + 1], 1))
    b.close()


@pytest.fixture(scope="module")
def images(cifar):
    from qdeploy.artifacts import read_info
    from qdeploy.data import DataConfig, open_calib_eval

    spec = read_info(bundled_run_dir() / "fp32.onnx").require_preprocess()
    return open_calib_eval(DataConfig(root=str(cifar), calib_size=1, eval_limit=64))[1].load(spec)


def test_batched_ort_outputs_match_one_image_runs(images):
    from qdeploy.app.predictor import Predictor

    pred = Predictor.load([bundled_run_dir()], max_batch=16)
    for v in pred.variants:
        assert v.batcher is not None
        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda i: v.logits(images[i:i + 1]), range(len(images))))
        want = [v.session.run(images[i:i + 1]) for i in range(len(images))]
        diff = max(float(np.abs(g - w).max()) for g, w in zip(got, want))
        assert diff <= 1e-4, (v.name, diff)
        assert [int(g.argmax()) for g in got] == [int(w.argmax()) for w in want]
        assert v.batcher.stats.rows == len(images)
        assert v.batcher.stats.largest > 1, v.batcher.stats
