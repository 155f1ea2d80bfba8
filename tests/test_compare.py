"""The one output comparison: streamed sums equal the whole-array result."""
import numpy as np

from qdeploy.compare import DiffAccumulator, compare_outputs


def test_streamed_equals_whole():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1000, 10)).astype(np.float32)
    out = ref + 0.3 * rng.standard_normal(ref.shape).astype(np.float32)
    whole = compare_outputs(ref, out)
    acc = DiffAccumulator()
    for i in range(0, 1000, 97):
        acc.update(ref[i:i + 97], out[i:i + 97])
    s = acc.result()
    assert s.n == whole.n == 1000 and s.agreement == whole.agreement
    assert np.isclose(s.rel_l2, whole.rel_l2) and s.max_abs_diff == whole.max_abs_diff
    assert np.isclose(whole.rel_l2, np.linalg.norm(out - ref) / np.linalg.norm(ref), rtol=1e-5)
    assert whole.agreement == (ref.argmax(1) == out.argmax(1)).mean()
