"""Which images calibrate, validate and evaluate: class-balanced orders, disjoint by construction.

Every order here is *interleaved*: any prefix of it holds the classes in proportion, because callers
slice prefixes (the 64-image verification batch, the first images of a calibration pool, a smaller
calibration candidate in auto search).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .preprocess import PreprocessSpec
from .sets import ImageSet, is_cifar_pickle, is_photo_folder, open_split


def balanced_indices(labels: np.ndarray | None, n: int, seed: int = 0, exclude=None, size: int | None = None
                     ) -> np.ndarray:
    """n indices, seeded, in round-robin class order (class a, b, c, ..., a, b, c, ...): every prefix is
    as balanced as the data allows. labels=None (a label-free set of `size` images): a seeded shuffle."""
    rng = np.random.default_rng(seed)
    excluded = np.zeros(len(labels) if labels is not None else size, bool)
    if exclude is not None:
        excluded[np.asarray(exclude, np.int64)] = True
    if labels is None:
        idx = np.flatnonzero(~excluded)
        rng.shuffle(idx)
        return idx[:n].astype(np.int64)
    pools = []
    for c in np.unique(labels):
        idx = np.flatnonzero((labels == c) & ~excluded)
        rng.shuffle(idx)
        pools.append(idx)
    chosen, depth = [], 0
    while len(chosen) < n and any(depth < len(p) for p in pools):
        for p in pools:
            if depth < len(p) and len(chosen) < n:
                chosen.append(int(p[depth]))
        depth += 1
    return np.asarray(chosen, np.int64)


def _balanced(images: ImageSet, n: int, seed: int, exclude=None) -> np.ndarray:
    return balanced_indices(images.labels, n, seed, exclude=exclude, size=len(images))


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
    holdout: int = 0   # validation images auto search takes from the calibration split (kept out of evaluation)

    def __post_init__(self):
        if self.calib_size < 1:
            raise ConfigError(f"calibration size {self.calib_size} must be at least 1 (a few hundred is typical)")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise ConfigError(f"eval limit {self.eval_limit} must be positive")

    def single_split(self) -> bool:
        """Calibration and evaluation come from one split (carved disjoint)."""
        root = Path(self.root)
        if is_cifar_pickle(root):
            return False
        return (self.calib_split or "") == (self.eval_split or "") or (root.is_dir() and is_photo_folder(root))


def open_calib(cfg: DataConfig) -> ImageSet:
    """The calibration images alone (class-balanced, interleaved)."""
    pool = open_split(cfg.root, cfg.calib_split or None, cfg.classes)
    return pool.subset(_balanced(pool, cfg.calib_size, cfg.seed))


def open_calib_eval(cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    """Calibration and evaluation sets; never overlapping, even when both come from one split."""
    calib_all = open_split(cfg.root, cfg.calib_split or None, cfg.classes)
    calib_idx = _balanced(calib_all, cfg.calib_size, cfg.seed)
    calib = calib_all.subset(calib_idx)
    if cfg.single_split():
        # one split: evaluation gets what calibration and auto's validation set (open_calib_val) leave
        held = _calib_val_indices(calib_all, cfg, cfg.holdout, cfg.seed + 2)[1] if cfg.holdout else []
        rest = np.setdiff1d(np.arange(len(calib_all)), np.concatenate([calib_idx, np.asarray(held, np.int64)]))
        if len(rest) == 0:
            raise DataError(f"no images left for evaluation after taking {len(calib_idx)} for calibration"
                            + (f" and {len(held)} for auto's validation" if len(held) else "")
                            + "; lower --calib-size" + (" or --val-size" if len(held) else ""))
        evalset = calib_all.subset(rest)
    else:
        evalset = open_split(cfg.root, cfg.eval_split or None, calib_all.classes)
    if cfg.eval_limit is not None and cfg.eval_limit < len(evalset):
        evalset = evalset.subset(_balanced(evalset, cfg.eval_limit, cfg.seed))
    return calib, evalset


def _calib_val_indices(pool: ImageSet, cfg: DataConfig, val_size: int, val_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The run's calibration indices and a class-balanced validation set disjoint from them."""
    calib_idx = _balanced(pool, cfg.calib_size, cfg.seed)
    return calib_idx, _balanced(pool, val_size, val_seed, exclude=calib_idx)


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
    if not pool.labelled:
        raise DataError(f"QAT trains on labelled images; {pool.source} is a plain photo folder. Use an ImageFolder "
                        "tree (train/<class>/...)")
    calib_idx, val_idx = _calib_val_indices(pool, cfg, val_size, cfg.seed + 3)
    left = len(pool) - len(val_idx)
    train_idx = _balanced(pool, min(train_limit or left, left), cfg.seed + 1, exclude=val_idx)
    if len(train_idx) == 0:
        raise DataError(f"no training images left for QAT after holding out {len(val_idx)} for validation; "
                        "lower --qat-val-size")
    return pool.subset(calib_idx), pool.subset(train_idx), pool.subset(val_idx)
