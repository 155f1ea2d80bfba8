import numpy as np
import pytest

from conftest import CLASSES
from qdeploy.evaluate import evaluate, metrics_from_logits


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


def test_fp32_accuracy_on_real_images(fp32_onnx, calib_eval):
    _, _, ev, x = calib_eval
    m, logits = evaluate(fp32_onnx[0], x, ev.labels, CLASSES)
    assert m.n == 500 and 0.88 <= m.top1 <= 0.97 and m.top5 > 0.97
    assert sum(map(sum, m.confusion)) == 500 and len(m.per_class) == 10
    same, _ = evaluate(fp32_onnx[0], x, ev.labels, CLASSES, reference=logits)
    assert same.agreement == 1.0 and same.rel_l2 == 0.0
