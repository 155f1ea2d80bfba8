"""The preprocessing spec: how an RGB image becomes the model's input. It is written into every ONNX file
qdeploy produces, so calibration, evaluation and serving always run the same transform."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image

from ..errors import ConfigError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RULES = ("resize", "shorter-side-crop")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


# Inference batches are sized by bytes, not images: 256 CIFAR images are 3 MB of input, 256 images at 224 px
# are 154 MB, and the activations of the first layers scale with them (a ResNet-20 at 224 px and batch 256
# held 7.2 GB). Both sizes keep 256 at 32 px, so today's CIFAR predictions are unchanged.
BATCH_INPUT_BYTES = 8 << 20
MAX_BATCH = 256


def batch_for(size: int, cap: int = MAX_BATCH) -> int:
    """Images per inference batch for square inputs of `size` pixels: a power of two, 1..cap."""
    n = max(1, BATCH_INPUT_BYTES // (3 * size * size * 4))
    return max(1, min(cap, 1 << (n.bit_length() - 1)))


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
    width: int | None = None   # None: square (size x size); else the input is size high and width wide

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if not (1 <= int(self.size) <= 4096):
            raise ConfigError(f"input size {self.size} is out of range; use 1..4096 (32 for CIFAR)")
        if self.width is not None and not (1 <= int(self.width) <= 4096):
            raise ConfigError(f"input width {self.width} is out of range; use 1..4096")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError("mean and std need three values (R,G,B), e.g. 0.4914,0.4822,0.4465")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std {self.std} must be positive")
        if self.resize not in RESIZE_RULES:
            raise ConfigError(f"resize rule '{self.resize}' is unknown; use one of {', '.join(RESIZE_RULES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation '{self.interpolation}' is unknown; use {', '.join(INTERPOLATIONS)}")

    @classmethod
    def unit(cls, size: int = 512) -> "PreprocessSpec":
        """Pixels scaled to 0..1 and nothing else (image-to-image models such as the style network)."""
        return cls(size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), resize="shorter-side-crop",
                   interpolation="bilinear")

    @classmethod
    def imagenet(cls, size: int = 224) -> "PreprocessSpec":
        return cls(size=size, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="shorter-side-crop", interpolation="bilinear")

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return int(self.size), int(self.width or self.size)

    @property
    def side(self) -> int:
        """The side of a square with as many pixels (what byte-based batch sizing reads)."""
        h, w = self.shape
        return max(1, int(round((h * w) ** 0.5)))

    def label(self) -> str:
        h, w = self.shape
        return f"{w}x{h}"

    def to_json(self) -> str:
        d = asdict(self)
        if d["width"] is None:
            del d["width"]  # square specs read the same as before this field existed
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> "PreprocessSpec":
        return cls(**json.loads(text))

    def resize_image(self, img):
        """RGB PIL image -> the size x size PIL image the model sees."""

        resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[self.interpolation]
        img = img.convert("RGB")
        th, tw = self.shape
        if img.size == (tw, th):
            return img
        if self.resize == "resize":
            return img.resize((tw, th), resample)
        w, h = img.size
        scale = max(tw / w, th / h)  # cover the target (the shorter side of a square one), then centre-crop
        nw, nh = max(tw, round(w * scale)), max(th, round(h * scale))
        img = img.resize((nw, nh), resample)
        left, top = (nw - tw) // 2, (nh - th) // 2
        return img.crop((left, top, left + tw, top + th))

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




NORMS = ("cifar10", "imagenet", "unit")


@dataclass(frozen=True)
class PreprocessFlags:
    """The preprocessing flags a user actually gave (None = not given). They change a stored spec field by
    field (`--size 224` on an ImageNet file changes nothing else); without a stored spec they start from
    the --norm preset (seed 001's CIFAR-10 values by default)."""

    size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize: str | None = None
    norm: str | None = None
    width: int | None = None   # --size WxH: a non-square input

    def __post_init__(self):
        if self.norm is not None and self.norm not in NORMS:
            raise ConfigError(f"--norm '{self.norm}' is unknown; use cifar10, imagenet or unit (0..1 pixels), or "
                              "--mean/--std")

    def given(self) -> bool:
        return any(v is not None for v in (self.size, self.mean, self.std, self.resize, self.norm))

    def apply(self, base: "PreprocessSpec | None" = None) -> "PreprocessSpec":
        spec = base or PreprocessSpec()
        if self.norm == "imagenet":
            ref = PreprocessSpec.imagenet(spec.size)
            spec = replace(spec, mean=ref.mean, std=ref.std, resize=ref.resize, interpolation=ref.interpolation)
        elif self.norm == "unit":
            ref = PreprocessSpec.unit(spec.size)
            spec = replace(spec, mean=ref.mean, std=ref.std, resize=ref.resize, interpolation=ref.interpolation)
        elif self.norm == "cifar10":
            ref = PreprocessSpec()
            spec = replace(spec, mean=ref.mean, std=ref.std, resize=ref.resize, interpolation=ref.interpolation)
        if base is None and self.norm == "imagenet" and self.size is None:
            spec = replace(spec, size=224)
        given = {"size": self.size, "mean": self.mean, "std": self.std, "resize": self.resize, "width": self.width}
        return replace(spec, **{k: v for k, v in given.items() if v is not None})
