import numpy as np
import pytest

from conftest import CLASSES
from qdeploy.data import PreprocessSpec
from qdeploy.evaluate import mcnemar_p, metrics_from_logits, paired
from qdeploy.tasks.classification import Paired


def test_metrics_on_known_logits():
    logits = np.array([[3, 1, 0], [0, 2, 1], [1, 0, 2], [2, 1, 0]], np.float32)
    labels = np.array([0, 1, 1, 2])
    m = metrics_from_logits(logits, labels, ["a", "b", "c"])
    assert m.top1 == 0.5 and m.top5 == 1.0  # k = min(5, 3)
    assert m.confusion == [[1, 0, 0], [0, 1, 1], [1, 0, 0]]
    assert m.per_class == {"a": 1.0, "b": 0.5, "c": 0.0}
    ref = logits.copy()
    ref[3] = [0, 0, 5]
    m2 = metrics_from_logits(logits, labels, ["a", "b", "c"], reference=ref)
    assert m2.agreement == 0.75 and m2.max_abs_diff == 5.0
    assert m2.rel_l2 == pytest.approx(np.linalg.norm(logits - ref) / np.linalg.norm(ref))
    assert m2.paired == Paired(only_this=0, only_ref=1, diff_pt=-25.0, p_value=1.0)


def test_mcnemar_exact_values():
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(7, 7) == 1.0
    assert mcnemar_p(10, 0) == pytest.approx(2 * 0.5 ** 10) == mcnemar_p(0, 10)
    assert mcnemar_p(30, 20) == pytest.approx(0.2026, abs=1e-4)       # textbook exact two-sided value
    assert mcnemar_p(3000, 2600) < 1e-6 < mcnemar_p(3000, 2950)      # large counts stay finite


def test_paired_counts_only_discordant_images():
    labels = np.array([0, 1, 2, 3, 4, 5])
    a = np.array([0, 1, 2, 0, 0, 5])   # right on 0,1,2,5
    b = np.array([0, 0, 0, 3, 4, 5])   # right on 0,3,4,5
    assert paired(a, b, labels) == Paired(only_this=2, only_ref=2, diff_pt=0.0, p_value=1.0)
    assert paired(a, labels, labels).only_ref == 2 and paired(a, labels, labels).diff_pt == pytest.approx(-100 / 3)


def test_fp32_accuracy_on_real_images(fp32_onnx, calib_eval):
    _, _, ev, x = calib_eval
    m, same = _twice(fp32_onnx[0], ev)
    assert m.n == 500 and 0.88 <= m.top1 <= 0.97 and m.top5 > 0.97
    assert sum(map(sum, m.confusion)) == 500 and len(m.per_class) == 10
    assert same.agreement == 1.0 and same.rel_l2 == 0.0 and same.kl_ref == 0.0 and same.top5_overlap == 1.0
    assert same.paired.only_this == same.paired.only_ref == 0


def _twice(path, ev):
    """The same model twice through one stream: the second is compared with the first."""
    from qdeploy.evaluate import evaluate_many
    from qdeploy.targets import open_session

    runs = {"a": open_session(path).run, "b": open_session(path).run}
    scorers = evaluate_many(runs, ev, PreprocessSpec(), CLASSES)
    return [scorers["a"].result(), scorers["b"].result()]


def test_streamed_metrics_equal_whole_array_metrics(fp32_onnx, calib_eval):
    """Batch by batch through the stream gives the metrics of the whole set at once."""
    from qdeploy.targets import open_session, run_batched

    _, _, ev, x = calib_eval
    whole = metrics_from_logits(run_batched(open_session(fp32_onnx[0]), x), ev.labels, CLASSES)
    streamed = _twice(fp32_onnx[0], ev)[0]
    assert streamed.top1 == whole.top1 and streamed.confusion == whole.confusion
    assert streamed.loss == pytest.approx(whole.loss, rel=1e-9)
