"""Streamed decoding: bounded batches, identical to decoding everything, plain photo folders."""
import shutil

import numpy as np

from conftest import SHARED
from qdeploy.data import DataConfig, PreprocessSpec, open_calib_eval, open_split


def test_stream_equals_whole_load_in_order(cifar):
    ev = open_split(cifar, "test").subset(np.arange(0, 10000, 37))
    spec = PreprocessSpec()
    whole = ev.load(spec)
    parts, starts = [], []
    for b in ev.batches(spec, batch_size=64, prefetch=1):
        assert len(b.x) <= 64 and np.array_equal(b.labels, ev.labels[b.start:b.start + len(b.x)])
        parts.append(b.x)
        starts.append(b.start)
    assert starts == list(range(0, len(ev), 64)) and np.array_equal(np.concatenate(parts), whole)


def test_photo_folder_is_label_free_data(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in sorted((SHARED / "datasets" / "kodak24").glob("*.png"))[:6]:
        shutil.copy(f, photos / f.name)
    (photos / "README.txt").write_text("not an image")
    s = open_split(photos, "train")
    assert s.labels is None and not s.labelled and len(s) == 6 and s.skipped == 1
    calib, ev = open_calib_eval(DataConfig(root=str(photos), calib_size=2, preprocess=PreprocessSpec.imagenet(64)))
    assert len(calib) == 2 and len(ev) == 4 and not set(calib.paths) & set(ev.paths)
    assert next(ev.batches(PreprocessSpec.imagenet(64))).x.shape == (4, 3, 64, 64)
