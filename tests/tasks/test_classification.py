"""Classification scoring without labels: against the reference only."""
import numpy as np

from qdeploy.tasks import get_task


def test_label_free_scorer_compares_with_reference_only():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50, 10)).astype(np.float32)
    out = ref.copy()
    out[:5] = out[:5][:, ::-1]  # five images whose ranking is reversed
    s = get_task("classification").scorer([str(i) for i in range(10)], labelled=False, with_reference=True)
    s.update(out[:20], None, ref[:20])
    s.update(out[20:], None, ref[20:])
    m = s.result()
    assert m.n == 50 and m.top1 is None and m.top5 is None and m.per_class == {} and m.paired is None
    assert m.agreement == (ref.argmax(1) == out.argmax(1)).mean() and m.agreement <= 0.9
    assert 0 < m.kl_ref and m.top5_overlap < 1.0 and m.rel_l2 > 0
