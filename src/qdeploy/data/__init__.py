"""Data: the preprocessing spec, image sets streamed in bounded batches, and class-balanced sampling."""
from .preprocess import (
           CIFAR10_MEAN,
           CIFAR10_STD,
           IMAGENET_MEAN,
           IMAGENET_STD,
           PreprocessFlags,
           PreprocessSpec,
           batch_for,
)
from .sampling import DataConfig, balanced_indices, open_calib, open_calib_eval, open_calib_val, open_qat_sets
from .sets import IMAGE_EXTENSIONS, Batch, ImageSet, is_cifar_pickle, open_split

__all__ = ["batch_for", "CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "Batch", "DataConfig",
           "ImageSet", "PreprocessFlags", "PreprocessSpec", "balanced_indices", "is_cifar_pickle", "open_calib", "open_calib_eval", "open_calib_val",
           "open_qat_sets", "open_split"]
