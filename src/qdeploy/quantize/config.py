"""One config dataclass for ONNX Runtime quantization; presets are factories returning it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from ..errors import ConfigError

FORMATS = ("QDQ", "QOperator")
TYPES = ("uint8", "int8")
METHODS = ("minmax", "entropy", "percentile")
MODES = ("static", "dynamic")


@dataclass
class QuantConfig:
    name: str = "default"
    mode: str = "static"
    format: str = "QDQ"
    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = True
    method: str = "minmax"
    percentile: float = 99.999
    reduce_range: bool = False
    nodes_to_exclude: list[str] = field(default_factory=list)
    min_agreement: float = 0.80  # below this on the verification batch the variant is a collapse
    description: str = ""

    def __post_init__(self):
        checks = [("mode", self.mode, MODES), ("format", self.format, FORMATS),
                  ("activation_type", self.activation_type, TYPES), ("weight_type", self.weight_type, TYPES),
                  ("method", self.method, METHODS)]
        for label, value, allowed in checks:
            if value not in allowed:
                raise ConfigError(f"quantization {label} '{value}' is unknown; use one of {', '.join(allowed)}")
        if not (90.0 <= self.percentile < 100.0):
            raise ConfigError(f"percentile {self.percentile} must be in [90, 100), e.g. 99.999")
        if not (0.0 <= self.min_agreement <= 1.0):
            raise ConfigError("min_agreement must be in [0, 1]")

    def as_dict(self) -> dict:
        return asdict(self)

    def with_(self, **changes) -> "QuantConfig":
        return replace(self, **changes)

    # --- presets -------------------------------------------------------------------------
    @classmethod
    def default(cls) -> "QuantConfig":
        """The fast recipe on x86 (measured): QDQ, u8 activations, s8 per-channel weights, MinMax."""
        return cls(name="default", description="QDQ, uint8 activations, int8 per-channel weights, MinMax "
                   "(ORT's fast U8S8 kernels on x86)")

    @classmethod
    def seed_lab5(cls) -> "QuantConfig":
        """Seed 001's exact call: QOperator, per-channel, QInt8 weights, MinMax, ORT's default (int8) activations."""
        return cls(name="seed-lab5", format="QOperator", activation_type="int8", weight_type="int8",
                   per_channel=True, method="minmax",
                   description="seed 001 recipe: QOperator, int8 activations (ORT default), int8 per-channel weights, MinMax")

    @classmethod
    def dynamic(cls) -> "QuantConfig":
        """Seed 004's quantize_dynamic: int8 weights, activations quantized at run time."""
        return cls(name="dynamic", mode="dynamic", format="QOperator", activation_type="uint8", weight_type="int8",
                   per_channel=False, description="seed 004 recipe: quantize_dynamic, int8 weights")

    @classmethod
    def per_tensor(cls) -> "QuantConfig":
        """The naive recipe: one scale per weight tensor (hurts depthwise-separable networks)."""
        return cls.default().with_(name="per-tensor", per_channel=False,
                                   description="default recipe with per-tensor weights (the naive one)")

    @classmethod
    def entropy(cls) -> "QuantConfig":
        return cls.default().with_(name="entropy", method="entropy", description="default recipe, Entropy calibration")

    @classmethod
    def percentile_(cls) -> "QuantConfig":
        return cls.default().with_(name="percentile", method="percentile",
                                   description="default recipe, Percentile (99.999) calibration")


PRESETS = {
    "default": QuantConfig.default,
    "seed-lab5": QuantConfig.seed_lab5,
    "dynamic": QuantConfig.dynamic,
    "per-tensor": QuantConfig.per_tensor,
    "entropy": QuantConfig.entropy,
    "percentile": QuantConfig.percentile_,
}


def preset(name: str) -> QuantConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown quantization preset '{name}'; use one of {', '.join(PRESETS)}")
    return PRESETS[name]()
