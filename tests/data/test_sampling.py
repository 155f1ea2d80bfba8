"""Defect 1: every prefix of a balanced order holds every class in proportion (the old code sorted the
indices, so on class-grouped ImageFolder data a prefix was one or a few classes)."""
import numpy as np

from qdeploy.data import DataConfig, balanced_indices, open_calib_eval, open_calib_val, open_split


def _prefix_counts(labels, idx, n):
    return np.bincount(labels[idx[:n]], minlength=10)


def test_every_prefix_is_balanced(cifar):
    train = open_split(cifar, "train")
    idx = balanced_indices(train.labels, 300, seed=0)
    for n in (10, 20, 64, 100, 128, 300):  # verification batch, calibration candidates, sensitivity batch
        counts = _prefix_counts(train.labels, idx, n)
        assert counts.max() - counts.min() <= 1, (n, counts.tolist())


def test_slices_the_pipeline_takes_hold_every_class(cifar):
    calib, ev = open_calib_eval(DataConfig(root=str(cifar), calib_size=300, eval_limit=500))
    assert np.bincount(calib.labels[:64], minlength=10).min() >= 6   # export parity / verification batch
    assert np.bincount(ev.labels[:256], minlength=10).min() >= 25    # the bench sample
    pool, val = open_calib_val(DataConfig(root=str(cifar), calib_size=300), 500)
    assert np.bincount(val.labels[:128], minlength=10).min() >= 12   # auto's sensitivity batch
    assert np.bincount(pool.labels[:100], minlength=10).tolist() == [10] * 10  # auto's 1/3 candidate


def test_label_free_order_is_a_seeded_shuffle():
    idx = balanced_indices(None, 5, seed=3, size=20, exclude=[0, 1])
    assert len(set(idx.tolist())) == 5 and not {0, 1} & set(idx.tolist())
    assert np.array_equal(idx, balanced_indices(None, 5, seed=3, size=20, exclude=[0, 1]))
