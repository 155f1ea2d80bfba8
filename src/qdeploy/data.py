"""Datasets (ImageFolder, CIFAR pickle), the preprocessing spec, and calibration sampling.

The preprocessing spec is written into every ONNX file qdeploy produces, so calibration,
evaluation and serving always run the same transform.
"""
from __future__ import annotations

import json
import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
RESIZE_RULES = ("resize", "shorter-side-crop")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


@dataclass(frozen=True)
class PreprocessSpec:
    """How an RGB image becomes the model's NCHW float input. Defaults are seed 001's CIFAR-10 ones.

    resize: stretch to size x size (the seed's `image.resize((32, 32))`);
    shorter-side-crop: scale the shorter side to `size`, then centre-crop (keeps aspect ratio).
    """

    size: int = 32
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD
    resize: str = "resize"
    interpolation: str = "bicubic"

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if not (1 <= int(self.size) <= 4096):
            raise ConfigError(f"input size {self.size} is out of range; use 1..4096 (32 for CIFAR)")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError("mean and std need three values (R,G,B), e.g. 0.4914,0.4822,0.4465")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std {self.std} must be positive")
        if self.resize not in RESIZE_RULES:
            raise ConfigError(f"resize rule '{self.resize}' is unknown; use one of {', '.join(RESIZE_RULES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation '{self.interpolation}' is unknown; use {', '.join(INTERPOLATIONS)}")

    @classmethod
    def imagenet(cls, size: int = 224) -> "PreprocessSpec":
        return cls(size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="shorter-side-crop", interpolation="bilinear")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "PreprocessSpec":
        return cls(**json.loads(text))

    def resize_image(self, img):
        """RGB PIL image -> the size x size PIL image the model sees."""
        from PIL import Image

        resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[self.interpolation]
        img = img.convert("RGB")
        if img.size == (self.size, self.size):
            return img
        if self.resize == "resize":
            return img.resize((self.size, self.size), resample)
        w, h = img.size
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        img = img.resize((nw, nh), resample)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        return img.crop((left, top, left + self.size, top + self.size))

    def normalize(self, hwc_uint8: np.ndarray) -> np.ndarray:
        """(N,H,W,3) or (H,W,3) uint8 -> (N,3,H,W) float32 normalised."""
        arr = np.asarray(hwc_uint8, dtype=np.float32) / 255.0
        if arr.ndim == 3:
            arr = arr[None]
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(0, 3, 1, 2))

    def __call__(self, img) -> np.ndarray:
        """PIL image -> (1,3,size,size) float32, exactly what every qdeploy model is fed."""
        return self.normalize(np.asarray(self.resize_image(img)))


@dataclass
class ImageSet:
    """One split: either image files with labels, or in-memory uint8 HWC images (CIFAR pickle)."""

    classes: list[str]
    labels: np.ndarray
    paths: list[Path] | None = None
    pixels: np.ndarray | None = None  # (N,H,W,3) uint8
    skipped: int = 0
    source: str = ""

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> "ImageSet":
        idx = np.asarray(indices, dtype=np.int64)
        return ImageSet(
            classes=self.classes,
            labels=self.labels[idx],
            paths=[self.paths[i] for i in idx] if self.paths is not None else None,
            pixels=self.pixels[idx] if self.pixels is not None else None,
            skipped=self.skipped,
            source=self.source,
        )

    def load(self, spec: PreprocessSpec, workers: int | None = None, progress: bool = False) -> np.ndarray:
        """Decode and preprocess every image into one (N,3,size,size) float32 array."""
        return spec.normalize(self.pixels_uint8(spec, workers, progress))

    def pixels_uint8(self, spec: PreprocessSpec, workers: int | None = None, progress: bool = False) -> np.ndarray:
        """Decode and resize every image: (N,size,size,3) uint8, before normalisation (training input)."""
        from PIL import Image

        if self.pixels is not None:
            pix = self.pixels
            if pix.shape[1:3] != (spec.size, spec.size):
                pix = np.stack([np.asarray(spec.resize_image(Image.fromarray(p))) for p in pix])
            return pix

        def read(path):
            try:
                with Image.open(path) as im:
                    return np.asarray(spec.resize_image(im))
            except Exception as exc:
                raise DataError(f"cannot decode image {path} ({type(exc).__name__}); remove or replace the file") from exc

        workers = workers or min(16, (os.cpu_count() or 2) * 2)
        with ThreadPoolExecutor(workers) as pool:
            it = pool.map(read, self.paths, chunksize=64)
            if progress:
                from tqdm import tqdm

                it = tqdm(it, total=len(self.paths), desc=f"load {self.source}", unit="img", leave=False, disable=None)
            images = list(it)
        if not images:
            return np.zeros((0, spec.size, spec.size, 3), np.uint8)
        return np.stack(images)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _image_folder(split_dir: Path, classes: list[str] | None) -> ImageSet:
    entries = sorted(split_dir.iterdir())
    class_dirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    loose = [p for p in entries if p.is_file() and _is_image(p)]
    if not class_dirs:
        raise DataError(
            f"{split_dir} has no class folders; expected ImageFolder layout {split_dir}/<class>/<image>"
        )
    if loose:
        raise DataError(
            f"{split_dir} mixes {len(loose)} loose images with class folders; move them into a class folder"
        )
    found = [p.name for p in class_dirs]
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{split_dir} has class folders {unknown} not in the class list {classes}; fix --classes")
    paths, labels, skipped = [], [], 0
    for d in class_dirs:
        for f in sorted(d.rglob("*")):
            if not f.is_file():
                continue
            if _is_image(f):
                paths.append(f)
                labels.append(classes.index(d.name))
            else:
                skipped += 1
    if not paths:
        raise DataError(f"{split_dir} holds no images (skipped {skipped} non-image files); point --data at image folders")
    return ImageSet(classes=list(classes), labels=np.asarray(labels, np.int64), paths=paths,
                    skipped=skipped, source=str(split_dir))


_PICKLE_ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                   ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                   ("numpy._core.multiarray", "scalar")}


def _unpickle(path: Path) -> dict:
    """CIFAR's format is a pickle of dicts and numpy arrays; refuse anything that would run other code."""
    import importlib

    class _Safe(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) in _PICKLE_ALLOWED:
                return getattr(importlib.import_module(module), name)
            raise DataError(f"{path} contains a pickled '{module}.{name}', not CIFAR data; refusing to load it")

    try:
        with open(path, "rb") as fh:
            return _Safe(fh, encoding="latin1").load()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read CIFAR batch {path} ({type(exc).__name__}); re-extract cifar-10-python.tar.gz") from exc


def _cifar_pickle(root: Path, split: str, classes: list[str] | None) -> ImageSet:
    files = sorted(root.glob("data_batch_*")) if split == "train" else [root / "test_batch"]
    files = [f for f in files if f.is_file()]
    if not files:
        raise DataError(f"{root} has no CIFAR '{split}' batches (data_batch_*, test_batch); re-extract the archive")
    data, labels = [], []
    for f in files:
        d = _unpickle(f)
        data.append(np.asarray(d["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(d.get("labels", d.get("fine_labels", [])))
    if classes is None:
        meta = root / "batches.meta"
        classes = list(_unpickle(meta)["label_names"]) if meta.is_file() else [str(i) for i in range(10)]
    return ImageSet(classes=list(classes), labels=np.asarray(labels, np.int64), pixels=np.concatenate(data),
                    source=f"{root}:{split}")


def is_cifar_pickle(root: Path) -> bool:
    return (root / "test_batch").is_file() or any(root.glob("data_batch_*"))


def open_split(root: str | Path, split: str | None, classes: list[str] | None = None) -> ImageSet:
    """One split of an ImageFolder tree (root/split/<class>/*) or a CIFAR pickle directory.

    split=None means root itself is a split (its children are class folders).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory {root} not found; pass --data path/to/cifar10")
    if is_cifar_pickle(root):
        if split not in ("train", "test"):
            raise DataError(f"CIFAR pickle data has splits 'train' and 'test', not '{split}'")
        return _cifar_pickle(root, split, classes)
    split_dir = root / split if split else root
    if not split_dir.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(f"split '{split}' not found under {root} (has: {', '.join(have) or 'nothing'}); "
                        "set --calib-split/--eval-split")
    return _image_folder(split_dir, classes)


def balanced_indices(labels: np.ndarray, n: int, seed: int = 0, exclude=None) -> np.ndarray:
    """n indices drawn round-robin over classes (as equal per class as the data allows), seeded."""
    rng = np.random.default_rng(seed)
    excluded = set(int(i) for i in exclude) if exclude is not None else set()
    pools = []
    for c in np.unique(labels):
        idx = [int(i) for i in np.flatnonzero(labels == c) if int(i) not in excluded]
        rng.shuffle(idx)
        pools.append(idx)
    chosen, depth = [], 0
    while len(chosen) < n and any(depth < len(p) for p in pools):
        for p in pools:
            if depth < len(p) and len(chosen) < n:
                chosen.append(p[depth])
        depth += 1
    return np.asarray(sorted(chosen), np.int64)


@dataclass
class DataConfig:
    """Where the images come from and how calibration/evaluation images are chosen."""

    root: str
    calib_split: str = "train"
    eval_split: str = "test"
    calib_size: int = 300
    eval_limit: int | None = None
    classes: list[str] | None = None
    seed: int = 0
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)

    def __post_init__(self):
        if self.calib_size < 1:
            raise ConfigError(f"calibration size {self.calib_size} must be at least 1 (a few hundred is typical)")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError(f"eval limit {self.eval_limit} must be positive")


def open_calib_eval(cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    """Calibration and evaluation sets; never overlapping, even when both come from one split."""
    calib_all = open_split(cfg.root, cfg.calib_split or None, cfg.classes)
    same = (cfg.calib_split or "") == (cfg.eval_split or "") and not is_cifar_pickle(Path(cfg.root))
    calib_idx = balanced_indices(calib_all.labels, cfg.calib_size, cfg.seed)
    calib = calib_all.subset(calib_idx)
    if same:
        rest = np.setdiff1d(np.arange(len(calib_all)), calib_idx)
        if len(rest) == 0:
            raise DataError(f"no images left for evaluation after taking {cfg.calib_size} for calibration; lower --calib-size")
        evalset = calib_all.subset(rest)
    else:
        evalset = open_split(cfg.root, cfg.eval_split or None, calib_all.classes)
    if cfg.eval_limit is not None and cfg.eval_limit < len(evalset):
        evalset = evalset.subset(balanced_indices(evalset.labels, cfg.eval_limit, cfg.seed))
    return calib, evalset


def _calib_val_indices(pool: ImageSet, cfg: DataConfig, val_size: int, val_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The run's calibration indices and a class-balanced validation set disjoint from them."""
    calib_idx = balanced_indices(pool.labels, cfg.calib_size, cfg.seed)
    return calib_idx, balanced_indices(pool.labels, val_size, val_seed, exclude=calib_idx)


def open_calib_val(cfg: DataConfig, val_size: int) -> tuple[ImageSet, ImageSet]:
    """Calibration images and a class-balanced validation set, both from the calibration split and
    disjoint: what auto-quantization selects on (the evaluation split stays for the final report)."""
    pool = open_split(cfg.root, cfg.calib_split or None, cfg.classes)
    calib_idx, val_idx = _calib_val_indices(pool, cfg, val_size, cfg.seed + 2)
    if len(val_idx) < min(val_size, 50):
        raise DataError(f"only {len(val_idx)} images left for validation after calibration; lower --calib-size")
    return pool.subset(calib_idx), pool.subset(val_idx)


def open_qat_sets(cfg: DataConfig, train_limit: int | None, val_size: int) -> tuple[ImageSet, ImageSet, ImageSet]:
    """Calibration, QAT training and QAT validation sets, all from the calibration split.

    Validation is held out from training (it chooses QAT's epoch); calibration is the run's own, so a
    QAT model starts from the same PTQ grids as pt-ptq. The evaluation split is never touched."""
    pool = open_split(cfg.root, cfg.calib_split or None, cfg.classes)
    calib_idx, val_idx = _calib_val_indices(pool, cfg, val_size, cfg.seed + 3)
    left = len(pool) - len(val_idx)
    train_idx = balanced_indices(pool.labels, min(train_limit or left, left), cfg.seed + 1, exclude=val_idx)
    if len(train_idx) == 0:
        raise DataError(f"no training images left for QAT after holding out {len(val_idx)} for validation; "
                        "lower --qat-val-size")
    return pool.subset(calib_idx), pool.subset(train_idx), pool.subset(val_idx)
