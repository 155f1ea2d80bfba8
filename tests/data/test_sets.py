import numpy as np
import pytest
from PIL import Image

from conftest import CLASSES, make_cifar_pickle, tiny_imagefolder
from qdeploy.data import DataConfig, PreprocessSpec, balanced_indices, open_calib_eval, open_split
from qdeploy.errors import ConfigError, DataError


def test_preprocess_matches_seed_formula(cifar):
    img = Image.open(sorted((cifar / "test" / "cat").iterdir())[0])
    x = PreprocessSpec()(img)
    # seed 001's preprocess(), written out independently
    arr = np.asarray(img.convert("RGB").resize((32, 32)), dtype=np.float32) / 255.0
    ref = ((arr - np.array([0.4914, 0.4822, 0.4465])) / np.array([0.2470, 0.2435, 0.2616])).transpose(2, 0, 1)[None]
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
    assert np.abs(x - ref).max() < 1e-5


def test_preprocess_large_and_odd_images():
    big = Image.new("RGB", (640, 480), (255, 0, 0))
    assert PreprocessSpec()(big).shape == (1, 3, 32, 32)
    spec = PreprocessSpec.imagenet(224)
    assert spec(big).shape == (1, 3, 224, 224)
    assert PreprocessSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ConfigError):
        PreprocessSpec(resize="squash")
    with pytest.raises(ConfigError):
        PreprocessSpec(std=(0.2, 0.0, 0.2))


def test_imagefolder_real_split(cifar):
    test = open_split(cifar, "test")
    assert test.classes == CLASSES and len(test) == 10000
    assert np.bincount(test.labels).tolist() == [1000] * 10


def test_balanced_sampling_is_balanced_and_seeded(cifar):
    train = open_split(cifar, "train")
    idx = balanced_indices(train.labels, 300, seed=1)
    assert len(idx) == 300 and len(set(idx.tolist())) == 300
    assert np.bincount(train.labels[idx]).tolist() == [30] * 10
    assert np.array_equal(idx, balanced_indices(train.labels, 300, seed=1))
    assert not np.array_equal(idx, balanced_indices(train.labels, 300, seed=2))


def test_calibration_never_uses_eval_images_single_split(tmp_path):
    root = tiny_imagefolder(tmp_path, per_class=5, split="all")
    calib, ev = open_calib_eval(DataConfig(root=str(root), calib_split="all", eval_split="all", calib_size=20))
    assert len(calib) == 20 and len(ev) == 30
    assert not set(map(str, calib.paths)) & set(map(str, ev.paths))


def test_non_images_skipped_with_count(tmp_path):
    root = tiny_imagefolder(tmp_path, per_class=2)
    (root / "test" / "cat" / "notes.txt").write_text("hello")
    (root / "test" / "dog" / "Thumbs.db").write_bytes(b"\0" * 10)
    s = open_split(root, "test")
    assert len(s) == 20 and s.skipped == 2


def test_empty_and_mixed_and_missing(tmp_path):
    (tmp_path / "empty" / "test" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        open_split(tmp_path / "empty", "test")
    (tmp_path / "nocls" / "test").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders"):
        open_split(tmp_path / "nocls", "test")
    root = tiny_imagefolder(tmp_path / "mixed", per_class=1)
    Image.new("RGB", (32, 32)).save(root / "test" / "loose.png")
    with pytest.raises(DataError, match="mixes 1 loose images"):
        open_split(root, "test")
    with pytest.raises(DataError, match="split 'val' not found"):
        open_split(root, "val")
    with pytest.raises(DataError, match="not found"):
        open_split(tmp_path / "absent", "test")


def test_corrupt_image_is_named(tmp_path):
    root = tiny_imagefolder(tmp_path, per_class=1)
    bad = root / "test" / "cat" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match="broken.jpg"):
        open_split(root, "test").load(PreprocessSpec())


def test_cifar_pickle_matches_imagefolder(tmp_path, cifar):
    root = make_cifar_pickle(tmp_path / "cifar-10-batches-py", n_per_class=4)
    test = open_split(root, "test")
    assert test.classes == CLASSES and len(test) == 40
    x = test.load(PreprocessSpec())
    ref = open_split(cifar, "test")
    first_cat = [p for p in ref.paths if p.parent.name == "airplane"][0]
    assert np.abs(x[0] - PreprocessSpec()(Image.open(first_cat))[0]).max() < 1e-6


def test_pickle_with_code_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("x",))

    root = tmp_path / "c"
    root.mkdir()
    (root / "test_batch").write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(DataError, match="refusing"):
        open_split(root, "test")


def test_inputs_hold_uint8_and_slice_to_model_batches(cifar):
    from qdeploy.data import PreprocessSpec, open_split

    s = open_split(cifar, "test").subset(np.arange(0, 50, 5))
    spec = PreprocessSpec(size=64)
    lazy, full = s.inputs(spec), s.load(spec)
    assert lazy.shape == full.shape == (10, 3, 64, 64) and len(lazy) == 10
    assert lazy.pixels.dtype == np.uint8 and lazy.pixels.nbytes * 4 == full.nbytes
    assert np.array_equal(lazy[3:7], full[3:7]) and np.array_equal(lazy[np.array([0, 9])], full[[0, 9]])
    with pytest.raises(TypeError):
        lazy[0]
