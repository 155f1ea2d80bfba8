"""One config dataclass for training; the seeds' recipes are presets returning it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ..errors import ConfigError

SCHEDULES = ("cosine", "cosine-restarts", "step")
OPTIMIZERS = ("sgd", "adamw")


@dataclass
class TrainConfig:
    arch: str = "resnet20-cifar"
    arch_kwargs: dict = field(default_factory=dict)   # e.g. a small ViT: {"img_size": 32, "patch_size": 4}
    optimizer: str = "sgd"        # sgd (momentum, nesterov) | adamw (transformers; lr ~1e-3, weight decay ~0.05)
    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    schedule: str = "cosine"
    warmup_epochs: int = 1
    restart_period: int = 10      # cosine-restarts: first period (T_0) ...
    restart_mult: int = 2         # ... and its growth (T_mult)
    grad_clip: float = 0.0        # max gradient norm; 0 = off
    # augmentation (all run batched on the training device)
    crop_padding: int = 4
    flip: bool = True
    color_jitter: float = 0.0     # brightness/contrast/saturation strength, e.g. 0.3
    rotation: float = 0.0         # degrees, e.g. 20
    translate: float = 0.0        # fraction of the image, e.g. 0.1
    scale: tuple[float, float] = (1.0, 1.0)
    erasing_p: float = 0.0        # random erasing probability (cutout-like)
    erasing_scale: tuple[float, float] = (0.02, 0.25)
    mixup_alpha: float = 0.0
    # data split and stopping
    val_size: int = 5000          # class-balanced images held out of train for model selection
    train_limit: int | None = None
    patience: int = 0             # early stopping on validation accuracy; 0 = off
    seed: int = 0
    device: str = "auto"          # auto | cpu | cuda
    bf16: bool = True             # autocast on CUDA
    channels_last: bool = True
    workers: int = 8

    def __post_init__(self):
        self.scale = tuple(self.scale)
        self.erasing_scale = tuple(self.erasing_scale)
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch size must be positive")
        if self.lr <= 0:
            raise ConfigError(f"learning rate {self.lr} must be positive")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer '{self.optimizer}' is unknown; use one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule '{self.schedule}' is unknown; use one of {', '.join(SCHEDULES)}")
        if not (0 <= self.label_smoothing < 1 and 0 <= self.erasing_p <= 1 and self.mixup_alpha >= 0):
            raise ConfigError("label smoothing in [0,1), erasing probability in [0,1], mixup alpha >= 0")
        if self.val_size < 0:
            raise ConfigError("val size must be >= 0 (0 = select on the last epoch, not recommended)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device '{self.device}' is unknown; use auto, cpu or cuda")

    def as_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes) -> "TrainConfig":
        return replace(self, **changes)

    @classmethod
    def seed002(cls, arch: str = "resnet18-cifar", epochs: int = 300, **_) -> "TrainConfig":
        """Seed 002's recipe: SGD+Nesterov lr 0.3 / bs 256, wd 1e-4, label smoothing 0.05, cosine warm
        restarts, mixup, crop/flip/colour jitter/rotation 20/affine/erasing p=0.6, gradient clipping."""
        return cls(arch=arch, epochs=epochs, batch_size=256, lr=0.3, weight_decay=1e-4, label_smoothing=0.05,
                   schedule="cosine-restarts", grad_clip=5.0, color_jitter=0.3, rotation=20, translate=0.1,
                   scale=(0.9, 1.1), erasing_p=0.6, erasing_scale=(0.02, 0.4), mixup_alpha=0.2)

    @classmethod
    def fast(cls, arch: str = "resnet20-cifar", epochs: int = 30, **_) -> "TrainConfig":
        """A short GPU recipe: crop/flip/cutout, label smoothing, one-cycle-like cosine with warm-up."""
        return cls(arch=arch, epochs=epochs, lr=0.2, batch_size=512, erasing_p=0.5, erasing_scale=(0.05, 0.2))


PRESETS = {"default": TrainConfig, "seed002": TrainConfig.seed002, "fast": TrainConfig.fast}
