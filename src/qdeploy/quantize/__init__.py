"""INT8 variants: one config dataclass per scheme (config.py), one handler per config type (base.py's
registry: ORT static/dynamic, PyTorch eager PTQ/QAT/PoT, auto search)."""
from ..tasks import QuantCheck
from .base import VariantContext, build_variant, register
from .config import PRESETS, VARIANTS, AutoConfig, QuantConfig, TorchQuantConfig, parse_variants, preset, variant_config
from .ort import quantize, verify

__all__ = ["PRESETS", "VARIANTS", "AutoConfig", "QuantCheck", "QuantConfig", "TorchQuantConfig", "VariantContext",
           "build_variant", "parse_variants", "preset", "quantize", "register", "variant_config", "verify"]
