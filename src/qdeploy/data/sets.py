"""Image sets (ImageFolder trees, plain photo folders, CIFAR pickles) and their bounded, streamed decoding.

Nothing here holds a whole evaluation set in memory: `ImageSet.batches` decodes in a thread pool at most
`prefetch + 1` batches ahead of the consumer, so decoding overlaps inference and memory stays flat in
the number of images.
"""
from __future__ import annotations

import importlib
import itertools
import os
import pickle
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import DataError
from .preprocess import PreprocessSpec, batch_for

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}


def default_workers() -> int:
    return min(8, (os.cpu_count() or 2) * 2)


@dataclass
class Batch:
    start: int                    # index of the first image in the set's order
    x: np.ndarray                 # (n,3,size,size) float32, normalised
    labels: np.ndarray | None     # None for a label-free set


@dataclass
class ImageSet:
    """One split: image files (with labels from class folders, or none for a plain photo folder), or
    in-memory uint8 HWC images (CIFAR pickle)."""

    classes: list[str]
    labels: np.ndarray | None         # None: a plain folder of photos, scored against FP32 only
    paths: list[Path] | None = None
    pixels: np.ndarray | None = None  # (N,H,W,3) uint8
    skipped: int = 0
    source: str = ""

    def __len__(self) -> int:
        return len(self.paths) if self.paths is not None else len(self.pixels)

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def subset(self, indices) -> "ImageSet":
        idx = np.asarray(indices, dtype=np.int64)
        return ImageSet(classes=self.classes, labels=None if self.labels is None else self.labels[idx],
                        paths=[self.paths[i] for i in idx] if self.paths is not None else None,
                        pixels=self.pixels[idx] if self.pixels is not None else None,
                        skipped=self.skipped, source=self.source)

    def decode(self, i: int, spec: PreprocessSpec) -> np.ndarray:
        """Image i as the (size,size,3) uint8 array the model sees, before normalisation."""

        if self.pixels is not None:
            p = self.pixels[i]
            return p if p.shape[:2] == spec.shape else np.asarray(spec.resize_image(Image.fromarray(p)))
        path = self.paths[i]
        try:
            with Image.open(path) as im:
                return np.asarray(spec.resize_image(im))
        except Exception as exc:
            raise DataError(f"cannot decode image {path} ({type(exc).__name__}); remove or replace the file") from exc

    def pixel_batches(self, spec: PreprocessSpec, batch_size: int | None = None, workers: int | None = None,
                      prefetch: int = 2, desc: str | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(start, (n,size,size,3) uint8) in order; images decode in parallel, at most prefetch+1 batches ahead.
        batch_size None: by input bytes (data.batch_for: 256 at 32 px, 8 at 224 px)."""
        n = len(self)
        batch_size = batch_size or batch_for(spec.side)
        starts = iter(range(0, n, batch_size))
        bar = _progress(n, desc)
        with ThreadPoolExecutor(workers or default_workers()) as pool:
            pending = deque()

            def submit(start):
                pending.append((start, [pool.submit(self.decode, i, spec)
                                        for i in range(start, min(start + batch_size, n))]))

            for s in itertools.islice(starts, prefetch + 1):
                submit(s)
            try:
                while pending:
                    start, futures = pending.popleft()
                    pix = np.stack([f.result() for f in futures])
                    nxt = next(starts, None)
                    if nxt is not None:
                        submit(nxt)
                    if bar is not None:
                        bar.update(len(pix))
                    yield start, pix
            finally:
                for _, futures in pending:
                    for f in futures:
                        f.cancel()
                if bar is not None:
                    bar.close()

    def batches(self, spec: PreprocessSpec, batch_size: int | None = None, workers: int | None = None,
                prefetch: int = 2, desc: str | None = None) -> Iterator[Batch]:
        """Normalised batches in order: the bounded stream every evaluation reads."""
        for start, pix in self.pixel_batches(spec, batch_size, workers, prefetch, desc):
            labels = None if self.labels is None else self.labels[start:start + len(pix)]
            yield Batch(start=start, x=spec.normalize(pix), labels=labels)

    def pixels_uint8(self, spec: PreprocessSpec, workers: int | None = None, progress: bool = False) -> np.ndarray:
        """Every image decoded, (N,size,size,3) uint8: for sets whose size the user bounds (calibration,
        training subsets), never for an evaluation split."""
        desc = f"load {self.source}" if progress else None
        parts = [pix for _, pix in self.pixel_batches(spec, workers=workers, desc=desc)]
        return np.concatenate(parts) if parts else np.zeros((0, *spec.shape, 3), np.uint8)

    def load(self, spec: PreprocessSpec, workers: int | None = None, progress: bool = False) -> np.ndarray:
        """Every image decoded and normalised, (N,3,size,size) float32 (bounded sets only, as above)."""
        return spec.normalize(self.pixels_uint8(spec, workers, progress))

    def inputs(self, spec: PreprocessSpec, workers: int | None = None, progress: bool = False) -> "Inputs":
        """Every image decoded once, kept as uint8 and normalised slice by slice (bounded sets only)."""
        return Inputs(self.pixels_uint8(spec, workers, progress), spec)


class Inputs:
    """A bounded set of images held as uint8 pixels (a quarter of float32) and normalised when sliced, for
    what re-reads the same images many times (the auto search's validation set: 2,000 images at 224 px
    are 300 MB this way, 1.2 GB as float32). Slicing gives the (n,3,size,size) float32 model input."""

    def __init__(self, pixels: np.ndarray, spec: PreprocessSpec):
        self.pixels, self.spec = pixels, spec

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        n, h, w, c = self.pixels.shape
        return n, c, h, w

    def __getitem__(self, idx) -> np.ndarray:
        if isinstance(idx, (int, np.integer)):
            raise TypeError("Inputs are read by slices or index arrays (they give model batches)")
        return self.spec.normalize(self.pixels[idx])


def _progress(total: int, desc: str | None):
    if not desc:
        return None

    return tqdm(total=total, desc=desc, unit="img", leave=False, disable=None)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _photo_folder(split_dir: Path, loose: list[Path], classes: list[str] | None) -> ImageSet:
    """A plain folder of photos: valid calibration and verification data, scored against FP32 only."""
    skipped = sum(1 for p in split_dir.iterdir() if p.is_file() and not _is_image(p))
    return ImageSet(classes=list(classes or []), labels=None, paths=loose, skipped=skipped, source=str(split_dir))


def _image_folder(split_dir: Path, classes: list[str] | None) -> ImageSet:
    entries = sorted(split_dir.iterdir())
    class_dirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    loose = [p for p in entries if p.is_file() and _is_image(p)]
    if not class_dirs and loose:
        return _photo_folder(split_dir, loose, classes)
    if not class_dirs:
        raise DataError(f"{split_dir} has no class folders and no images; expected {split_dir}/<class>/<image> "
                        f"or a folder of photos")
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


def is_photo_folder(root: Path) -> bool:
    """A folder that holds images and no sub-folders: one label-free split."""
    entries = list(root.iterdir())
    return any(p.is_file() and _is_image(p) for p in entries) and not any(p.is_dir() for p in entries)


def open_split(root: str | Path, split: str | None, classes: list[str] | None = None) -> ImageSet:
    """One split of an ImageFolder tree (root/split/<class>/*), a CIFAR pickle directory, or a plain photo
    folder (root itself, whatever the split name: it has only one).

    split=None means root itself is a split (its children are class folders or photos).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory {root} not found; pass --data path/to/images")
    if is_cifar_pickle(root):
        if split not in ("train", "test"):
            raise DataError(f"CIFAR pickle data has splits 'train' and 'test', not '{split}'")
        return _cifar_pickle(root, split, classes)
    split_dir = root / split if split and not is_photo_folder(root) else root
    if not split_dir.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DataError(f"split '{split}' not found under {root} (has: {', '.join(have) or 'nothing'}); "
                        "set --calib-split/--eval-split")
    return _image_folder(split_dir, classes)
